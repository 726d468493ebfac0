"""The standalone study report: one self-contained HTML file a reader can open offline and trust.

Sections, in order: what was run (data, grid, hardware, training), headline results, published
claim vs this run (:mod:`mammoscale.claims`), the figures, every cell, data QC, and provenance
(versions, devices, commits, SLURM job ids and the command that reruns each cell). Figures are
embedded as base64 PNG; the page loads nothing from anywhere. Every number in it comes from the
tables and QC files it is given; none is typed in here.

:mod:`~mammoscale.report.snapshot` draws the same report from whatever cells have finished so
far, for a study whose SLURM jobs are still running.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import logging
from pathlib import Path

import pandas as pd

from mammoscale import files
from mammoscale.report import captions, claims
from mammoscale.report.tables import STATUS_LABEL, STATUSES

log = logging.getLogger(__name__)

SECTIONS = {"run": "What was run", "headline": "Headline results", "claims": "Published claim vs this run",
            "figures": "Figures", "cells": "Every cell", "data-qc": "Data QC", "provenance": "Provenance"}
CELL_COLUMNS = {"hardware": "hardware", "variant": "variant", "image_size": "image", "patch_size": "patch",
                "seq_len": "tokens", "status": "status", "attention_backend": "kernel", "throughput_img_s": "images/s",
                "step_time_s": "step (s)", "peak_mem_gb": "peak mem (GB)", "achieved_tflops": "TFLOP/s",
                "mfu_pct": "MFU (%)", "input_wait_pct": "input wait (%)", "val_auc": "val AUC", "val_pf1": "val pF1",
                "message": "message"}
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
.status-failed { background: #f8e0e0; } .verdict-not-run, .status-missing, .status-skipped { background: #eeeeee; }
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


def _items(mapping: dict, *, numbers: bool = True) -> str:
    """A list of ``key: value``; ``numbers=False`` keeps values as written (a seed, not 2,023)."""
    show = fmt if numbers else (lambda value: "" if value is None else str(value))
    return "<ul>" + "".join(f"<li>{esc(k)}: {esc(show(v))}</li>" for k, v in mapping.items()) + "</ul>"


def section_run(run_config: dict, runs: pd.DataFrame) -> str:
    data, grid, train = run_config["data"], run_config["grid"], run_config["train"]
    variants = pd.DataFrame([{"variant": name, **spec} for name, spec in grid["variants"].items()])
    profiles = pd.DataFrame([{"profile": name, **{k: profile.get(k) for k in
                              ("description", "launcher", "nodes", "gpus_per_node", "gpu_model", "micro_batch",
                               "precision", "device_memory_gb", "peak_tflops")}}
                             for name, profile in run_config["hardware"].items()])
    return (f"<p>Data: <b>{esc(data['source'])}</b> at <code>{esc(data['root'])}</code>. "
            f"Config files: {esc(', '.join(run_config.get('configfiles') or ['config/config.yaml']))}.</p>"
            f"<p>Grid: image sizes {esc(', '.join(map(str, grid['image_sizes'])))}; patch sizes "
            f"{esc(', '.join(map(str, grid['patch_sizes'])))}; {len(runs)} cells "
            f"(hardware x variant x image x patch where the patch divides the image).</p>"
            f"<h3>Variants</h3>{table(variants, {'variant': 'variant', 'model': 'model family', 'attention': 'attention'})}"
            f"<h3>Hardware profiles</h3>"
            + table(profiles, {"profile": "profile", "description": "description", "launcher": "launcher",
                               "nodes": "nodes", "gpus_per_node": "GPUs/node", "gpu_model": "GPU model",
                               "micro_batch": "micro-batch", "precision": "precision",
                               "device_memory_gb": "device memory (GB)",
                               "peak_tflops": "peak TFLOP/s"})
            + "<h3>Training (every cell; a profile's precision overrides train.precision)</h3>"
            + _items(train, numbers=False))


def headline(runs: pd.DataFrame, pairs: pd.DataFrame, verdicts: pd.DataFrame) -> list[str]:
    """The results in sentences, each computed from the tables."""
    counts = runs["status"].value_counts()
    lines = [f"{len(runs)} cells configured: " + ", ".join(f"{counts[s]} {STATUS_LABEL.get(s, s)}"
                                                           for s in STATUSES if s in counts) + "."]
    ratios = pairs.dropna(subset=["throughput_ratio"])
    if not ratios.empty:
        best = ratios.loc[ratios["throughput_ratio"].idxmax()]
        worst = ratios.loc[ratios["throughput_ratio"].idxmin()]
        lines.append(f"Flash speed-up over the baselines: {worst['throughput_ratio']:.2f}x "
                     f"(img{worst['image_size']}_p{worst['patch_size']} vs {worst['baseline_variant']}, "
                     f"{worst['hardware']}) to {best['throughput_ratio']:.2f}x (img{best['image_size']}_p"
                     f"{best['patch_size']} vs {best['baseline_variant']}, {best['hardware']}), over {len(ratios)} "
                     "pairs that both ran.")
        memory = ratios.dropna(subset=["memory_ratio"])
        if not memory.empty:
            top = memory.loc[memory["memory_ratio"].idxmax()]
            lines.append(f"Largest memory saving: the baseline {top['baseline_variant']} used "
                         f"{top['memory_ratio']:.2f}x the peak memory of flash at img{top['image_size']}_p"
                         f"{top['patch_size']} ({int(top['seq_len']):,} tokens).")
    for variant, group in runs.groupby("variant", sort=False):
        fitted = group[group["status"] == "ok"]
        oom = group[group["status"] == "oom"]
        if not fitted.empty:
            lines.append(f"{variant}: longest sequence that ran {int(fitted['seq_len'].max()):,} tokens"
                         + (f"; out of memory from {int(oom['seq_len'].min()):,} tokens" if not oom.empty else "")
                         + ".")
    scored = runs.dropna(subset=["val_auc"]) if "val_auc" in runs else runs.iloc[0:0]
    if not scored.empty:
        top = scored.loc[scored["val_auc"].astype(float).idxmax()]
        lines.append(f"Best validation AUC {float(top['val_auc']):.3f} ({top['hardware']}/{top['variant']}, "
                     f"img{top['image_size']}_p{top['patch_size']}).")
    tally = verdicts["verdict"].value_counts()
    lines.append("Published claims: " + ", ".join(f"{tally.get(v, 0)} {v}" for v in
                                                  (claims.REPRODUCED, claims.NOT_REPRODUCED, claims.NOT_RUN)) + ".")
    return lines


def cell_rows(runs: pd.DataFrame) -> pd.DataFrame:
    rows = runs.copy()
    rows["peak_mem_gb"] = rows["peak_mem_bytes"].astype(float) / 1e9
    rows["mfu_pct"] = rows["mfu"].astype(float) * 100
    rows["input_wait_pct"] = rows["input_wait_fraction"].astype(float) * 100
    rows["status"] = rows["status"].map(lambda s: STATUS_LABEL.get(s, s))
    return rows


def section_data_qc(counts: dict, preprocess: dict, contact_sheets: dict) -> str:
    excluded = counts.get("excluded_by_reason", {})
    errors = preprocess.get("errors_by_kind", {})
    unused = counts.get("other_views_not_used", {})
    summary = {"images listed": counts.get("rows"), "patients": counts.get("patients"),
               "breasts (CC + MLO pairs)": counts.get("breasts"), "positive breasts": counts.get("positive_breasts"),
               "breasts cached": preprocess.get("breasts_cached"),
               "breasts lost to a decode error": preprocess.get("breasts_excluded_decode_error"),
               "images decoded": preprocess.get("decoded"), "images failed": preprocess.get("failed_images"),
               "flip disagreements (CSV laterality vs tissue side)": preprocess.get("flip_disagreements"),
               "ROI fallbacks (full frame kept)": preprocess.get("roi_fallbacks"),
               "images with clipped pixels": preprocess.get("clipped_images"),
               "constant images": preprocess.get("constant_images")}
    sheets = "".join('<figure class="sheet">' + image(path, f"contact sheet, image size {size}")
                     + f"<figcaption>Contact sheet, img{size}: random tiles with their labels, CC left, MLO right."
                     "</figcaption></figure>" for size, path in sorted(contact_sheets.items()))
    splits = counts.get("breasts_by_split", {})
    return (_items(summary)
            + "<h3>Breasts by split</h3>" + _items({k: f"{v} ({counts.get('positive_by_split', {}).get(k, 0)} positive)"
                                                   for k, v in splits.items()})
            + "<h3>Exclusions by reason</h3>" + (_items(excluded) if excluded else "<p>None.</p>")
            + "<h3>Decode errors by kind</h3>" + (_items(errors) if errors else "<p>None.</p>")
            + "<h3>Views not used</h3>" + (_items(unused) if unused else "<p>None.</p>")
            + sheets)


def rerun_commands(row: pd.Series, invocation: str) -> str:
    target = f"{row['run_dir']}/{files.METRICS}"
    profile = "--profile slurm" if pd.notna(row.get("env.slurm_job_id")) else "--cores all"
    return (f"<code>{esc(invocation.format(profile=profile))} --force {esc(target)}</code><br />"
            f"<code>python -m mammoscale.train --cell {esc(row['run_dir'])}/{files.CELL_SETTINGS} "
            f"--out {esc(row['run_dir'])}</code>")


def _gpus(row: pd.Series) -> str:
    slurm, cuda = esc(row.get("env.slurm_job_gpus")), esc(row.get("env.cuda_visible_devices"))
    return f"{slurm or '-'} / {cuda or '-'}" if slurm or cuda else ""


def _short(commit) -> str | None:
    """A commit as 12 hex digits (and ``+dirty``); the full one stays in the cell's title."""
    if not isinstance(commit, str):
        return None
    head, plus, rest = commit.partition("+")
    return head[:12] + plus + rest


def preprocessing_versions(preprocess: dict) -> dict:
    """What the preprocessing ran with: its packages, and each decoder with the images it decoded."""
    versions = preprocess.get("versions", {})
    shown = {f"{name}": value for name, value in versions.items() if name not in ("platform", "slurm_job_id")}
    decoders = preprocess.get("decoders", {})
    if decoders:
        shown["decoders"] = ", ".join(f"{name} ({count:,} images)" for name, count in sorted(decoders.items()))
    return shown


def section_provenance(runs: pd.DataFrame, invocation: str, preprocess: dict) -> str:
    ran = runs[runs["status"] != "missing"]
    versions = {}
    for column, title in (("env.python", "Python"), ("env.torch", "torch"), ("env.cuda", "CUDA"),
                          ("env.cudnn", "cuDNN"), ("env.x_transformers", "x-transformers"),
                          ("env.transformers", "transformers"), ("env.flash_attn", "flash-attn"),
                          ("env.horovod", "Horovod"), ("env.mammoscale", "mammoscale"), ("env.git_commit", "git commit"),
                          ("env.devices", "devices"), ("env.host", "hosts")):
        if column in ran:
            values = sorted({str(v) for v in ran[column].dropna()})
            versions[title] = ", ".join(values) if values else "-"
    rows = runs.copy()
    rows["rerun"] = [rerun_commands(row, invocation) for _, row in rows.iterrows()]
    head = "".join(f"<th>{t}</th>" for t in ("cell", "status", "SLURM job", "GPUs (SLURM / CUDA)", "host",
                                              "commit", "rerun this cell"))
    body = "".join(
        f"<tr><td>{esc(r['hardware'])}/{esc(r['variant'])}/img{r['image_size']}_p{r['patch_size']}</td>"
        f"<td>{esc(r['status'])}</td><td>{esc(r.get('env.slurm_job_id'))}</td>"
        f"<td>{_gpus(r)}</td><td>{esc(r.get('env.host'))}</td>"
        f'<td title="{esc(r.get("env.git_commit"))}">{esc(_short(r.get("env.git_commit")))}</td><td>{r["rerun"]}</td></tr>'
        for _, r in rows.iterrows())
    pre = preprocessing_versions(preprocess)
    return (("<p>Versions and devices of the cells that ran:</p>" + _items(versions)) if versions else
            "<p>No cell has run yet.</p>") + \
        (("<p>Versions the preprocessing (stage 1 and 2) ran with:</p>" + _items(pre, numbers=False)) if pre else
         "<p>No preprocessing summary yet.</p>") + \
        f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def render(*, runs: pd.DataFrame, pairs: pd.DataFrame, verdicts: pd.DataFrame, figure_files: dict,
           contact_sheets: dict, counts: dict, preprocess: dict, run_config: dict, reference: dict,
           baseline: str | None, invocation: str, title: str = "mammoscale study report") -> str:
    """The whole page as a string."""
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    nav = "".join(f'<a href="#{key}">{esc(name)}</a>' for key, name in SECTIONS.items())
    reference_text = (f"reference cell: {reference['hardware']}, {reference['variant']}, img{reference['image_size']}"
                      f"_p{reference['patch_size']}; claims baseline: {baseline or 'none in the grid'}")
    parts = {
        "run": section_run(run_config, runs),
        "headline": "<ul>" + "".join(f"<li>{esc(line)}</li>" for line in headline(runs, pairs, verdicts)) + "</ul>",
        "claims": ("<p>Claims of the Flash Attention study (Dell HPC &amp; AI Innovation Lab, 2023) on 8x A100 80GB, "
                   "judged on the reference hardware's cells of the study's image sizes (384-2048). "
                   f"{esc(reference_text)}.</p>"
                   + table(verdicts, {"claim": "claim", "published": "published", "measured": "this run",
                                      "verdict": "verdict", "detail": "detail"},
                           row_class=lambda r: "verdict-" + r["verdict"].replace(" ", "-"))),
        "figures": "".join(f'<figure id="figure-{esc(name)}">{image(path, name)}<figcaption>'
                           f"{esc(captions.CAPTIONS.get(name, name))}</figcaption></figure>"
                           for name, path in figure_files.items()),
        "cells": table(cell_rows(runs), CELL_COLUMNS,
                       row_class=lambda r: "status-" + {v: k for k, v in STATUS_LABEL.items()}.get(
                           r["status"], r["status"])),
        "data-qc": section_data_qc(counts, preprocess, contact_sheets),
        "provenance": section_provenance(runs, invocation, preprocess),
    }
    body = "".join(f'<section id="{key}"><h2>{esc(SECTIONS[key])}</h2>{parts[key]}</section>' for key in SECTIONS)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8" /><title>{esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1" /><style>{STYLE}</style></head>'
            f'<body><header><h1>{esc(title)}</h1><p class="meta">Generated {esc(when)}. {esc(reference_text)}.</p>'
            f"<nav>{nav}</nav></header>{body}</body></html>\n")


def build(out_html: Path | str, *, runs_csv, speedups_csv, figure_files: dict, contact_sheets: dict,
          manifest_counts, preprocess_summary, run_config: dict, reference: dict, baseline: str | None,
          tolerance: float, invocation: str) -> pd.DataFrame:
    """Write the report from the workflow's files; return the claims table it judged."""
    return build_page(out_html, runs=files.read_runs(runs_csv), pairs=files.SPEEDUP_TABLE.read(speedups_csv),
                      figure_files=figure_files, contact_sheets=contact_sheets, counts=files.read_json(manifest_counts),
                      preprocess=files.read_json(preprocess_summary), run_config=run_config,
                      reference=reference, baseline=baseline, tolerance=tolerance, invocation=invocation)


def build_page(out_html: Path | str, *, runs: pd.DataFrame, pairs: pd.DataFrame, figure_files: dict,
               contact_sheets: dict, counts: dict, preprocess: dict, run_config: dict, reference: dict,
               baseline: str | None, tolerance: float, invocation: str,
               title: str = "mammoscale study report") -> pd.DataFrame:
    verdicts = claims.evaluate(runs, pairs, hardware=reference["hardware"], flash=reference["variant"],
                               baseline=baseline, tolerance=tolerance)
    page = render(runs=runs, pairs=pairs, verdicts=verdicts, figure_files=figure_files, contact_sheets=contact_sheets,
                  counts=counts, preprocess=preprocess, run_config=run_config, reference=reference,
                  baseline=baseline, invocation=invocation, title=title)
    files.write_text(page, out_html)
    log.info("report: %s (%d KB); claims: %s", out_html, len(page) // 1024,
             ", ".join(f"{n} {v}" for v, n in verdicts["verdict"].value_counts().items()))
    return verdicts
