"""The report's HTML building blocks: escaping, numbers, tables, embedded images, lists, and its style.

Everything from a record is escaped; images are embedded as data URIs, so the page loads nothing.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 76rem;
       padding: 0 1.5rem; color: #1a1a1a; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2rem;
margin-top: 2.2rem; } h3 { margin-bottom: 0.3rem; }
nav a { margin-right: 1rem; } .meta { color: #555; font-size: 0.9rem; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.6rem 0 1rem; }
th, td { border: 1px solid #d0d0d0; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.wide { overflow-x: auto; } figure { margin: 1.2rem 0 2rem; } figure img { max-width: 100%; border: 1px solid #eee; }
figure.sheet img { max-width: 36rem; }
figcaption { font-size: 0.9rem; color: #333; max-width: 60rem; }
.verdict-reproduced, .status-ok { background: #e3f1e6; } .verdict-not-reproduced, .status-oom,
.status-failed { background: #f8e0e0; } .verdict-inconclusive { background: #fbf1d3; }
.verdict-not-run, .status-missing, .status-skipped { background: #eeeeee; }
code { font-size: 0.8rem; background: #f6f6f6; padding: 0 0.2rem; } ul { margin-top: 0.3rem; }
td code, #provenance td:first-child { white-space: nowrap; }
"""


def esc(value) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    return html.escape(str(value))


def fmt(value, digits: int = 3) -> str:
    """A number for a table: significant digits, thousands separators; empty for a missing value."""
    if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NA:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if float(value).is_integer() and abs(value) >= 1:
            return f"{int(value):,}"
        return f"{float(value):,.{digits}g}"
    return str(value)


def table(frame: pd.DataFrame, columns: dict, *, row_class=None) -> str:
    """An HTML table of ``frame``'s ``columns`` (name -> header), escaped, numbers right-aligned."""
    head = "".join(f"<th>{esc(title)}</th>" for title in columns.values())
    body = []
    for _, row in frame.iterrows():
        cells = []
        for column in columns:
            value = row.get(column)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            cells.append(f'<td class="num">{esc(fmt(value))}</td>' if number else f"<td>{esc(fmt(value))}</td>")
        css = f' class="{row_class(row)}"' if row_class else ""
        body.append(f"<tr{css}>{''.join(cells)}</tr>")
    return f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def image(path: Path | str, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{esc(alt)}" />'


def items(mapping: dict, *, numbers: bool = True) -> str:
    """A list of ``key: value``; ``numbers=False`` keeps values as written (a seed, not 2,023)."""
    show = fmt if numbers else (lambda value: "" if value is None else str(value))
    return "<ul>" + "".join(f"<li>{esc(k)}: {esc(show(v))}</li>" for k, v in mapping.items()) + "</ul>"


def column_or_nulls(rows: pd.DataFrame, name: str) -> pd.Series:
    """A column of runs.csv, or nulls where no record has it yet (a table of records written before it)."""
    return rows[name] if name in rows else pd.Series([None] * len(rows), index=rows.index)


def interval(low, high, spec: str = ".2f", missing: str | None = "no interval") -> str | None:
    """``[low, high]``, each end formatted with ``spec``; ``missing`` where an end is absent (too few windows, a
    record from before intervals): the one way the report writes an interval."""
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return missing
    return f"[{float(low):{spec}}, {float(high):{spec}}]"
