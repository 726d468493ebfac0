"""Memory and compute efficiency against sequence length: one panel per hardware, a line per variant and patch.

A CNN's cells have no sequence length: they are drawn against image size, in a second panel per hardware.

Out-of-memory cells are crosses on the device's memory line; cells without a number are counted in
the panel's corner.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullFormatter

from mammoscale.files import no_patch
from mammoscale.plan.memory import GiB
from mammoscale.records import MEASURED, OK, OOM, PREDICTED
from mammoscale.report import plots, tables
from mammoscale.report.tables import STATUS_LABEL

OOM_EDGE = "#b2182b"
OOM_MARKS = {MEASURED: ("X", "out of memory"), PREDICTED: ("x", "out of memory (predicted, not run)")}
"""How an OOM is drawn on the memory line: a filled cross when measured, a thin one when only predicted."""


def _basis(runs: pd.DataFrame) -> pd.Series:
    """Each cell's OOM basis: ``predicted``, else ``measured`` (records before the basis was recorded)."""
    return runs["oom_basis"].where(runs["oom_basis"] == PREDICTED, MEASURED)


def memory_figure(runs: pd.DataFrame, variants, profiles: dict) -> plt.Figure:
    return _by_seq_len(
        runs,
        variants,
        profiles,
        value=lambda ok: ok["peak_mem_bytes"].astype(float) / GiB,
        ylabel="peak memory (GiB, log)",
        title="Peak memory vs sequence length: measured and predicted",
        limit=True,
    )


def efficiency_figure(runs: pd.DataFrame, variants, profiles: dict) -> plt.Figure:
    """MFU where every finished cell has one (its profile gives a peak), else achieved TFLOP/s."""
    ok = runs[runs["status"] == OK]
    if not ok.empty and ok["mfu"].notna().all():
        return _by_seq_len(
            runs,
            variants,
            profiles,
            value=lambda rows: rows["mfu"].astype(float) * 100,
            ylabel="MFU (% of peak bf16, log)",
            title="Model FLOPs utilisation vs sequence length",
            limit=False,
        )
    return _by_seq_len(
        runs,
        variants,
        profiles,
        value=lambda rows: rows["achieved_tflops"].astype(float),
        ylabel="achieved TFLOP/s (log)",
        title="Achieved TFLOP/s vs sequence length",
        limit=False,
    )


AXES = {True: ("seq_len", "sequence length (tokens, log)"), False: ("image_size", "image size (px, log)")}
"""A panel's x: a vision transformer's cells against their sequence length, a CNN's (no patch size, no tokens)
against their image size, in a panel of their own."""


def _by_seq_len(
    runs: pd.DataFrame, variants, profiles: dict, *, value, ylabel: str, title: str, limit: bool
) -> plt.Figure:
    """One panel per hardware: ``value(rows)`` against sequence length, a line per variant and patch size; where the
    grid has CNN cells, a second panel per hardware against image size, a line per CNN variant."""
    hardware = list(dict.fromkeys(runs["hardware"]))
    has_patches = tables.patched(runs)
    kinds = [kind for kind in (True, False) if (has_patches == kind).any()] or [True]
    panels = [(hw, kind) for hw in hardware for kind in kinds]
    columns = len(kinds) if len(kinds) > 1 else min(3, max(1, len(hardware)))
    rows_n = math.ceil(len(panels) / columns) if panels else 1
    fig, axes = plt.subplots(
        rows_n, columns, figsize=(1.8 + 3.6 * columns, 3.4 * rows_n), layout="constrained", squeeze=False
    )
    palette = plots.colours(variants)
    patches = sorted(runs.loc[has_patches, "patch_size"].unique())
    marker = {p: plots.MARKERS[i % len(plots.MARKERS)] for i, p in enumerate(patches)}
    marker[None] = plots.MARKERS[len(patches) % len(plots.MARKERS)]  # a CNN's cells
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, (hw, kind) in zip(axes.flat, panels):
        limit_line = plots.device_limit(profiles.get(hw)) if limit else (None, "")
        here = runs[(runs["hardware"] == hw) & (has_patches == kind)]
        _panel(ax, here, value, palette, marker, x=AXES[kind][0], limit_line=limit_line, limit=limit)
        ax.set_xlabel(AXES[kind][1])
        ax.set_ylabel(ylabel)
        ax.set_title(
            hw if len(kinds) == 1 else f"{hw}, {'vision transformers' if kind else 'CNN (no patch size)'}", fontsize=9
        )
    handles = [Line2D([], [], color=palette[v], label=v) for v in variants if v in set(runs["variant"])]
    handles += [Line2D([], [], color="#444444", marker=marker[p], linestyle="", label=f"patch {p}") for p in patches]
    if False in kinds:
        handles.append(Line2D([], [], color="#444444", marker=marker[None], linestyle="", label="no patch (CNN)"))
    if limit:
        handles += [
            Line2D([], [], color="#444444", marker="o", label="measured"),
            Line2D([], [], color="#444444", marker="o", markerfacecolor="none", linestyle=":", label="predicted"),
        ]
    for basis, (mark, label) in OOM_MARKS.items():
        if limit and ((runs["status"] == OOM) & (_basis(runs) == basis)).any():
            handles.append(
                Line2D(
                    [],
                    [],
                    color="#888888",
                    marker=mark,
                    markeredgecolor=OOM_EDGE,
                    linestyle="",
                    markersize=8,
                    label=label,
                )
            )
    fig.legend(handles=handles, loc="outside right upper", fontsize=8)
    fig.suptitle(title, fontsize=9)
    return fig


def _lines(rows: pd.DataFrame, marker: dict):
    """``rows`` by line (a variant at a patch size, or a CNN variant), each with its marker: ``((variant, mark),
    rows)`` pairs (two patch sizes sharing a marker stay two lines)."""
    patch = [None if no_patch(p) else int(p) for p in rows["patch_size"]]
    lines = rows.assign(line=[str(p) for p in patch], mark=[marker[p] for p in patch])
    return (
        ((variant, group["mark"].iloc[0]), group)
        for (variant, _), group in lines.groupby(["variant", "line"], sort=False)
    )


def _panel(
    ax, here: pd.DataFrame, value, palette: dict, marker: dict, *, x: str, limit_line: tuple, limit: bool
) -> None:
    """One hardware's lines against ``x``, its OOM crosses on the memory line, and a count of the cells without a
    number."""
    top, label = limit_line
    ok = here[(here["status"] == OK)]
    ys = value(ok)
    for (variant, mark), group in _lines(ok.assign(y=ys).dropna(subset=["y"]), marker):
        group = group.sort_values(x)
        ax.plot(group[x].astype(float), group["y"], marker=mark, color=palette[variant], markersize=5)
    if limit and "predicted_peak_bytes" in here:
        _predicted(ax, here, palette, marker, x)
    failed = here[here["status"] == OOM]
    if limit and not failed.empty:
        ceiling = top or (float(ys.max()) * 1.5 if ys.notna().any() else 1.0)
        for (variant, basis), group in failed.assign(basis=_basis(failed)).groupby(["variant", "basis"]):
            filled = basis == MEASURED  # a thin cross has no edge to colour
            ax.scatter(
                group[x].astype(float),
                [ceiling] * len(group),
                marker=OOM_MARKS[basis][0],
                s=60,
                color=palette[variant],
                edgecolors=OOM_EDGE if filled else None,
                linewidths=1.2 if filled else 1.8,
                zorder=3,
            )
    if top:
        ax.axhline(top, linestyle="--", color="#444444", linewidth=1)
        ax.annotate(
            f"{label}: {top:g} GiB",
            (0.02, top),
            xycoords=("axes fraction", "data"),
            fontsize=7,
            va="bottom",
            color="#444444",
        )
    others = here[~here["status"].isin([OK, OOM])]
    if not others.empty:
        counts = others["status"].map(STATUS_LABEL).value_counts()
        ax.text(
            0.98,
            0.02,
            "; ".join(f"{n} {s}" for s, n in counts.items()),
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize=7,
            color="#555555",
        )
    ax.set_xscale("log", base=2)
    if x == "image_size" and not here.empty:  # a few sizes, not powers of 2: each one ticked
        ax.set_xticks(sorted(here["image_size"].astype(float).unique()))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda tick, _: f"{tick:,.0f}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    if ys.notna().any() or top:
        plots.log_y(ax)
    else:
        plots.note(ax, "no cell on this hardware has a number yet")


def _predicted(ax, here: pd.DataFrame, palette: dict, marker: dict, x: str) -> None:
    """The memory model's peak for each cell that has a record (at the micro-batch it trained with, or planned):
    hollow markers on dotted lines, beside the measured ones."""
    guessed = here[here["status"].isin([OK, OOM]) & here["predicted_peak_bytes"].notna()]
    for (variant, mark), group in _lines(guessed, marker):
        group = group.sort_values(x)
        ax.plot(
            group[x].astype(float),
            group["predicted_peak_bytes"].astype(float) / GiB,
            marker=mark,
            markerfacecolor="none",
            linestyle=":",
            color=palette[variant],
            markersize=5,
        )
