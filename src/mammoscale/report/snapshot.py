"""The tables, figures and report of whatever has finished, while the study's jobs still run.

``snakemake --profile slurm --nolock --force snapshot`` draws them into ``results/snapshot/``
beside a running study, leaving the workflow's own outputs alone: cells not finished are
``missing``, failed ones show their record, preprocessing jobs without a benchmark yet are left
out of the pipeline table.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mammoscale import files
from mammoscale.report import captions, figures, findings, plots, quality, scaling, tables
from mammoscale.report.page import Context, build_page


def _existing_json(path) -> dict:
    return files.read_json(path) if Path(path).is_file() else {}


def snapshot(
    out_dir: Path | str,
    *,
    cells,
    variants: dict,
    runs_root,
    pipeline: dict,
    contact_sheets: dict,
    manifest_counts,
    preprocess_summary,
    context: Context,
    dpi: int,
    vector_format: str,
    plan_csv=files.PLAN_CSV,
    profile: dict | None = None,
) -> pd.DataFrame:
    """Tables, figures and report from whatever exists now, into ``out_dir``; the claims it judged.

    ``pipeline`` is the pipeline table's jobs (``{"stage1": [...], "stage2": [...]}``, as for
    :func:`mammoscale.report.tables.pipeline_table`); those whose benchmark is not written yet
    are left out. ``profile`` (the reference cell's, :func:`mammoscale.report.breakdown.section`'s arguments) is
    shown once its figure exists.
    """
    out = Path(out_dir)
    runs = tables.write_tables(
        cells,
        variants,
        runs_root,
        *(out / Path(table).name for table in (files.RUNS_CSV, files.SPEEDUPS_CSV, files.QUALITY_CSV)),
        seeds=context.run_config["train"].get("seeds", 1),
    )
    done = {stage: [job for job in jobs if Path(job[-1]).is_file()] for stage, jobs in pipeline.items()}
    steps = tables.pipeline_table(done["stage1"], done["stage2"])
    pairs = tables.speedups(runs)
    figure_files = {}
    for name in captions.drawn(variants):
        fig = figures.draw(
            name,
            runs=runs,
            pairs=pairs,
            pipeline=steps,
            reference=context.reference,
            variants=variants,
            profiles=context.run_config["hardware"],
        )
        figure_files[name] = out / "figures" / f"{name}.png"
        plots.save(fig, figure_files[name], out / "figures" / f"{name}.{vector_format}", dpi=dpi)
    sheets = {size: path for size, path in contact_sheets.items() if Path(path).is_file()}
    series = None
    if context.train_examples:
        series = scaling.scaling_table(
            runs,
            context.run_config["hardware"],
            epochs=context.run_config["train"]["epochs"],
            train_examples=context.train_examples,
        )
        files.SCALING_TABLE.write(series, out / Path(files.SCALING_CSV).name)
    return build_page(
        out / Path(files.REPORT).name,
        runs=runs,
        pairs=pairs,
        comparisons=quality.comparisons(runs),
        figure_files=figure_files,
        contact_sheets=sheets,
        counts=_existing_json(manifest_counts),
        preprocess=_existing_json(preprocess_summary),
        context=context,
        plan=files.PLAN_TABLE.read(plan_csv) if Path(plan_csv).is_file() else None,
        profile=profile if profile and all(Path(profile[key]).is_file() for key in ("figure", "operators")) else None,
        scaling=series,
        per_finding=findings.findings_table(runs),
        title="mammoscale study report (snapshot of the cells finished so far)",
    )
