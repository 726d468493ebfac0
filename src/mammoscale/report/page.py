"""The standalone study report: one self-contained HTML file a reader can open offline and trust.

Sections, in order: what was run (data, grid, hardware, training), headline results, published
claim vs this run (:mod:`~mammoscale.report.claims`), the figures, every cell, data QC, and
provenance (versions of the training and of the preprocessing, devices, commits, SLURM job ids
and the command that reruns each cell). Figures are embedded as base64 PNG; the page loads
nothing from anywhere. Every number in it comes from the tables and QC files it is given; none
is typed in here.

:mod:`~mammoscale.report.snapshot` draws the same report from whatever cells have finished so
far, for a study whose SLURM jobs are still running.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mammoscale import files, records, tasks
from mammoscale.report import breakdown, captions, claims, data_qc, findings
from mammoscale.report.html import STYLE, esc, image, table
from mammoscale.report.scaling import section as scaling_section
from mammoscale.report.sections import (
    CELL_COLUMNS,
    cell_rows,
    headline,
    section_plan,
    section_provenance,
    section_run,
)
from mammoscale.report.tables import PREDICTED_OOM, STATUS_LABEL

log = logging.getLogger(__name__)

CLAIM_COLUMNS = {
    "claim": "claim",
    "published": "published",
    "measured": "this run",
    "verdict": "verdict",
    "detail": "detail",
}
STATUS_OF_LABEL = {**{label: status for status, label in STATUS_LABEL.items()}, PREDICTED_OOM: records.OOM}
SECTIONS = {
    "run": "What was run",
    "headline": "Headline results",
    "claims": "Published claim vs this run",
    "figures": "Figures",
    "scaling": "Scaling across ranks and nodes",
    "plan": "The plan: memory and cost",
    "cells": "Every cell",
    "data-qc": "Data QC",
    "provenance": "Provenance",
}


SECTION_FIGURES = ("scaling",)
"""Figures shown in a section of their own, not among the figures."""


@dataclass(frozen=True)
class Context:
    """What the report says of the study beyond its tables: the config that ran, how the claims are
    judged (the reference cell, the baseline, the tolerance), and the command that reruns a cell."""

    run_config: dict
    reference: dict
    baseline: str | None
    tolerance: float
    invocation: str
    train_examples: int | None = None
    """The data source's training examples an epoch, as the plan counts them (the scaling table's time to train)."""
    task: str = tasks.BREAST_CANCER.name
    """What the study predicts (:mod:`mammoscale.tasks`): its published claims and its data QC follow."""


def render(
    *,
    runs: pd.DataFrame,
    pairs: pd.DataFrame,
    verdicts: pd.DataFrame,
    comparisons: pd.DataFrame,
    figure_files: dict,
    contact_sheets: dict,
    counts: dict,
    preprocess: dict,
    context: Context,
    plan: pd.DataFrame | None = None,
    profile: dict | None = None,
    scaling: pd.DataFrame | None = None,
    per_finding: pd.DataFrame | None = None,
    title: str = "mammoscale study report",
) -> str:
    """The whole page as a string (``scaling``: scaling.csv, shown with the scaling figure in a section of its
    own)."""
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    nav = "".join(f'<a href="#{key}">{esc(name)}</a>' for key, name in SECTIONS.items())
    reference = context.reference
    reference_text = (
        f"reference cell: {reference['hardware']}, {reference['variant']}, "
        f"{files.cell_label(reference['image_size'], reference['patch_size'])}; "
        f"claims baseline: {context.baseline or 'none in the grid'}"
    )
    parts = {
        "run": section_run(context.run_config, runs),
        "headline": "<ul>"
        + "".join(f"<li>{esc(line)}</li>" for line in headline(runs, pairs, verdicts, comparisons))
        + "</ul>",
        "claims": claims_section(context.task, verdicts, reference_text, per_finding),
        "figures": left_out_html(context.run_config["grid"]["variants"])
        + "".join(figure_html(name, path) for name, path in figure_files.items() if name not in SECTION_FIGURES)
        + (breakdown.section(**profile) if profile else ""),
        "scaling": scaling_section(
            scaling, figure_html("scaling", figure_files["scaling"]) if "scaling" in figure_files else ""
        ),
        "plan": section_plan(plan, runs),
        "cells": table(
            cell_rows(runs), CELL_COLUMNS, row_class=lambda r: "status-" + STATUS_OF_LABEL.get(r["status"], r["status"])
        ),
        "data-qc": data_qc.section(counts, preprocess, contact_sheets, context.task),
        "provenance": section_provenance(runs, context.invocation, preprocess),
    }
    body = "".join(f'<section id="{key}"><h2>{esc(SECTIONS[key])}</h2>{parts[key]}</section>' for key in SECTIONS)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8" /><title>{esc(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1" /><style>{STYLE}</style></head>'
        f'<body><header><h1>{esc(title)}</h1><p class="meta">Generated {esc(when)}. {esc(reference_text)}.</p>'
        f"<nav>{nav}</nav></header>{body}</body></html>\n"
    )


def claims_section(task: str, verdicts: pd.DataFrame, reference_text: str, per_finding: pd.DataFrame | None) -> str:
    """The published claims this run is held against: the Flash Attention study's (mammography), or CheXNet's
    per-finding AUROCs (a task of several labels; its scaling claim is the scaling section's)."""
    if tasks.task(task).multilabel:
        return findings.findings_section(per_finding if per_finding is not None else pd.DataFrame()) or (
            "<p>No cell was scored yet: the per-finding AUROCs appear once a full-mode cell has run.</p>"
        )
    return (
        "<p>Claims of the Flash Attention study (Dell HPC &amp; AI Innovation Lab, 2023) on 8x A100 80GB, "
        "judged on the reference hardware's cells of the study's image sizes (384-2048). "
        f"{esc(reference_text)}.</p>"
        + table(verdicts, CLAIM_COLUMNS, row_class=lambda r: "verdict-" + r["verdict"].replace(" ", "-"))
    )


def left_out_html(variants: dict) -> str:
    """Which figures the study does not draw, and why (:func:`mammoscale.report.captions.left_out`); empty if none."""
    out = captions.left_out(variants)
    return (
        "<p>Not drawn: " + "; ".join(f"<code>{esc(name)}</code>, as {esc(why)}" for name, why in out.items()) + ".</p>"
        if out
        else ""
    )


def figure_html(name: str, path) -> str:
    """A figure embedded with its caption (:data:`mammoscale.report.captions.CAPTIONS`)."""
    return (
        f'<figure id="figure-{esc(name)}">{image(path, name)}<figcaption>'
        f"{esc(captions.CAPTIONS.get(name, name))}</figcaption></figure>"
    )


def build(
    out_html: Path | str,
    *,
    runs_csv,
    speedups_csv,
    quality_csv,
    figure_files: dict,
    contact_sheets: dict,
    manifest_counts,
    preprocess_summary,
    context: Context,
    plan_csv=None,
    profile: dict | None = None,
    scaling_csv=None,
    findings_csv=None,
) -> pd.DataFrame:
    """Write the report from the workflow's files; return the claims table it judged. ``profile``: the reference
    cell's profile (:func:`mammoscale.report.breakdown.section`'s arguments), shown under the figures."""
    return build_page(
        out_html,
        profile=profile,
        plan=files.PLAN_TABLE.read(plan_csv) if plan_csv else None,
        scaling=files.SCALING_TABLE.read(scaling_csv) if scaling_csv else None,
        per_finding=files.FINDINGS_TABLE.read(findings_csv) if findings_csv else None,
        runs=files.read_runs(runs_csv),
        pairs=files.SPEEDUP_TABLE.read(speedups_csv),
        comparisons=files.QUALITY_TABLE.read(quality_csv),
        figure_files=figure_files,
        contact_sheets=contact_sheets,
        counts=files.read_json(manifest_counts),
        preprocess=files.read_json(preprocess_summary),
        context=context,
    )


def build_page(
    out_html: Path | str,
    *,
    runs: pd.DataFrame,
    pairs: pd.DataFrame,
    comparisons: pd.DataFrame,
    figure_files: dict,
    contact_sheets: dict,
    counts: dict,
    preprocess: dict,
    context: Context,
    plan: pd.DataFrame | None = None,
    profile: dict | None = None,
    scaling: pd.DataFrame | None = None,
    per_finding: pd.DataFrame | None = None,
    title: str = "mammoscale study report",
) -> pd.DataFrame:
    """Judge the claims, render the page, write it; the claims table (empty for a task of several labels: CheXNet's
    per-finding AUROCs are a reference beside this run's, not claims it is judged on)."""
    if tasks.task(context.task).multilabel:
        verdicts = pd.DataFrame(columns=claims.COLUMNS)
    else:
        verdicts = claims.evaluate(
            runs,
            pairs,
            hardware=context.reference["hardware"],
            flash=context.reference["variant"],
            baseline=context.baseline,
            tolerance=context.tolerance,
            plan=plan,
        )
    page = render(
        runs=runs,
        pairs=pairs,
        verdicts=verdicts,
        comparisons=comparisons,
        figure_files=figure_files,
        contact_sheets=contact_sheets,
        counts=counts,
        preprocess=preprocess,
        context=context,
        plan=plan,
        profile=profile,
        scaling=scaling,
        per_finding=per_finding,
        title=title,
    )
    files.write_text(page, out_html)
    log.info(
        "report: %s (%d KB); claims: %s",
        out_html,
        len(page) // 1024,
        ", ".join(f"{n} {v}" for v, n in verdicts["verdict"].value_counts().items()) or "none for this task",
    )
    return verdicts
