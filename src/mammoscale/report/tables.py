"""The study's tables: one row per configured cell, flash-vs-baseline ratios, and the data pipeline.

Every configured cell gets a row in ``runs.csv`` whatever its state: its ``metrics.json`` when it
finished (``ok``, ``oom``, ``skipped``), the record a failed run left (``metrics.failed.json``,
see :func:`mammoscale.train.job.run_job`), or ``missing`` when it has not run yet. The tables,
and the figures drawn from them, can so be made while SLURM jobs are still running, and a cell
absent from a figure is absent for a stated reason.

A cell of a family without patches (a CNN, :mod:`mammoscale.plan.families`) has an empty ``patch_size`` and
``seq_len``, and the role ``none``.

``speedups.csv`` pairs every flash variant with every baseline (their roles) at each hardware, image size and
patch size: throughput ratio (flash / baseline) and memory ratio (baseline / flash), defined
only where both ran (``ok``), with both statuses kept so an OOM baseline stays visible. A variant without
attention is in no pair.

``pipeline.csv`` holds what the preprocessing jobs measured: items and seconds per shard, from
Snakemake's benchmark files and the shards' own records.

This module reads files and writes CSV; it imports neither torch nor matplotlib.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from mammoscale import files, records, stats
from mammoscale.errors import UserError
from mammoscale.files import read_runs  # noqa: F401 (the tables' reader, beside their writer)
from mammoscale.plan import families
from mammoscale.plan.grid import Cell
from mammoscale.report import findings, quality

log = logging.getLogger(__name__)

STATUS_LABEL = {records.OOM: "OOM", records.FAILED: "failed", records.SKIPPED: "skipped", records.MISSING: "not run"}
"""How a status without a number is written in the figures and the report."""
PREDICTED_OOM = "OOM (predicted)"
"""A cell the memory model found out of memory, not run (``oom_basis: predicted``)."""


def status_label(status: str, basis=None) -> str:
    """A status as the figures and the report write it; a predicted OOM is told from a measured one."""
    if status == records.OOM and basis == records.PREDICTED:
        return PREDICTED_OOM
    return STATUS_LABEL.get(status, status)


KEY = list(Cell._fields)
FIRST_COLUMNS = [
    *KEY,
    "status",
    "message",
    "role",
    "family",
    "model",
    "attention",
    "attention_backend",
    "mode",
    "seq_len",
    "throughput_img_s",
    "step_time_s",
    "train_time_s",
    "peak_mem_bytes",
    "peak_mem_kind",
    "predicted_peak_bytes",
    "oom_basis",
    "achieved_tflops",
    "mfu",
    "val_auc",
    "val_pf1",
    "input_wait_fraction",
    "loader_img_s",
    "world_size",
    "micro_batch",
    "micro_batch_planned",
    "grad_accum",
    "global_batch",
    "run_dir",
]
PAIR = ["hardware", "image_size", "patch_size"]


def flatten(record: dict, prefix: str = "") -> dict:
    """Nested dicts become dotted columns (``env.torch``); lists become JSON text in one column."""
    flat: dict = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, list):
            flat[name] = json.dumps(value)
        else:
            flat[name] = value
    return flat


def runs_table(cells, variants: dict, runs_root: Path | str = files.RUNS, seeds: int = 1) -> pd.DataFrame:
    """One row per configured cell ``(hardware, variant, image size, patch size)``, in grid order; a quality cell
    trained with ``seeds`` seeds has its AUC and pF1 over them too (:func:`mammoscale.report.quality.seed_summary`)."""
    rows = []
    for cell in map(Cell._make, cells):
        spec = variants[cell.variant]
        attention = families.variant_attention(spec)
        directory = cell.run_dir(runs_root)
        row = {
            **cell._asdict(),
            "status": records.MISSING,
            "family": spec["family"],
            "attention": attention,
            "role": families.role(attention),
            "seq_len": families.seq_len(spec["family"], cell.image_size, cell.patch_size),
            "run_dir": str(directory),
        }
        record = records.read_cell_record(directory)
        if record is not None:
            found = tuple(record.get(key) for key in KEY)
            if found != tuple(cell):
                raise UserError(
                    f"{directory} holds the record of cell {found}, not of {tuple(cell)}; rerun the cell: "
                    f"{records.rerun_cell(directory)}"
                )
            row.update(flatten(record))
            row.update(quality.seed_summary(record, Path(directory), seeds))
        rows.append(row)
    table = pd.DataFrame(rows)
    for column in FIRST_COLUMNS:
        if column not in table:
            table[column] = None
    for column in files.RUN_OPTIONAL_INTS:  # a CNN's are empty: the others stay integers, not 16.0
        table[column] = table[column].astype("Int64")
    rest = sorted(column for column in table.columns if column not in FIRST_COLUMNS)
    return table[FIRST_COLUMNS + rest]


def at_patch(frame: pd.DataFrame, patch_size) -> pd.Series:
    """The rows of ``frame`` (runs.csv, speedups.csv, plan.csv) at ``patch_size``; None: the cells without one."""
    if files.no_patch(patch_size):
        return frame["patch_size"].isna()
    return frame["patch_size"].eq(int(patch_size)).fillna(False).astype(bool)


def patched(runs: pd.DataFrame) -> pd.Series:
    """The rows of runs.csv whose cell has a patch size (a vision transformer's); the others are a CNN's."""
    return runs["patch_size"].notna()


def with_attention(runs: pd.DataFrame) -> pd.Series:
    """The rows of runs.csv of a variant with an attention (flash or baseline): what a figure about attention draws."""
    return runs["role"] != families.NO_ATTENTION


def speedups(runs: pd.DataFrame) -> pd.DataFrame:
    """Each flash variant against each baseline at the same hardware, image size and patch size
    (``seq_len`` is the flash variant's)."""
    columns = ["variant", "status", "throughput_img_s", "peak_mem_bytes", WINDOWS, "throughput_unstable"]
    runs = runs.assign(**{column: runs.get(column) for column in columns if column not in runs})
    flash = runs.loc[runs["role"] == "flash", PAIR + ["seq_len"] + columns]
    baseline = runs.loc[runs["role"] == "baseline", PAIR + columns]
    pairs = flash.merge(baseline, on=PAIR, suffixes=("_flash", "_baseline"))
    both = (pairs["status_flash"] == records.OK) & (pairs["status_baseline"] == records.OK)
    pairs["throughput_ratio"] = (
        pairs["throughput_img_s_flash"].astype(float) / pairs["throughput_img_s_baseline"].astype(float)
    ).where(both)
    windows = {side: pairs[f"{WINDOWS}_{side}"].map(_windows) for side in ("flash", "baseline")}
    for side, found in windows.items():
        pairs[f"windows_{side}"] = found.map(len).where(both)
    bounds = [stats.ratio_ci(f, b) if ok else (None, None) for f, b, ok in zip(*windows.values(), both)]
    pairs["throughput_ratio_ci_low"] = [low for low, _ in bounds]
    pairs["throughput_ratio_ci_high"] = [high for _, high in bounds]
    pairs["unstable"] = (
        flags(pairs["throughput_unstable_flash"]) | flags(pairs["throughput_unstable_baseline"])
    ).where(both)
    pairs["memory_ratio"] = (
        pairs["peak_mem_bytes_baseline"].astype(float) / pairs["peak_mem_bytes_flash"].astype(float)
    ).where(both)
    pairs = pairs.rename(
        columns={
            "variant_flash": "flash_variant",
            "variant_baseline": "baseline_variant",
            "status_flash": "flash_status",
            "status_baseline": "baseline_status",
        }
    )
    return pairs[list(files.SPEEDUP_TABLE.columns)].sort_values(
        PAIR + ["flash_variant", "baseline_variant"], ignore_index=True
    )


WINDOWS = "throughput_windows_img_s"


def _windows(value) -> list[float]:
    """A record's timing windows, as a cell wrote them or as runs.csv holds them (JSON text); [] when absent."""
    if isinstance(value, str):
        return json.loads(value)
    return list(value) if isinstance(value, list) else []


def flags(values) -> pd.Series:
    """A column of booleans as a cell wrote them or as runs.csv reads them back (``True``, ``"True"``); absent:
    False."""
    return pd.Series(values, dtype=object).astype(str).str.lower() == "true"


def read_benchmark(path: Path | str) -> dict:
    """Wall seconds and CPU seconds of one job from Snakemake's benchmark file."""
    table = pd.read_csv(path, sep="\t")
    if table.empty or "s" not in table:
        raise UserError(f"{path} is not a Snakemake benchmark file (no 's' column)")
    return {"seconds": float(table["s"].iloc[-1]), "cpu_seconds": float(table["cpu_time"].iloc[-1])}


def pipeline_table(stage1: list[tuple], stage2: list[tuple]) -> pd.DataFrame:
    """One row per preprocessing job with its items per second.

    ``stage1``: ``(shard, images_csv, benchmark)`` per views shard (items: images decoded);
    ``stage2``: ``(image_size, shard, tiles_csv, benchmark)`` per tiled shard (items: tiles written).
    """
    rows = []
    for shard, images_csv, benchmark in stage1:
        images = files.IMAGE_TABLE.read(images_csv, columns=("status",))
        rows.append(
            {
                "stage": "decode + crop",
                "image_size": None,
                "shard": files.fill(files.SHARD, shard=shard),
                "items": int((images["status"] == "ok").sum()),
                "item": "image",
                **read_benchmark(benchmark),
            }
        )
    for size, shard, tiles_csv, benchmark in stage2:
        rows.append(
            {
                "stage": f"tile {files.size_label(size)}",
                "image_size": int(size),
                "shard": files.fill(files.SHARD, shard=shard),
                "items": len(files.TILE_TABLE.read(tiles_csv)),
                "item": "tile",
                **read_benchmark(benchmark),
            }
        )
    table = files.PIPELINE_TABLE.frame(rows)
    table["items_per_s"] = table["items"] / table["seconds"].where(table["seconds"] > 0)
    return table


def write_tables(
    cells,
    variants: dict,
    runs_root: Path | str,
    runs_csv: Path | str,
    speedups_csv: Path | str,
    quality_csv,
    findings_csv=None,
    *,
    seeds: int = 1,
) -> pd.DataFrame:
    """Write ``runs.csv``, ``speedups.csv``, ``quality.csv`` and ``findings.csv`` (each scored cell's AUROC per
    finding; no rows for a task of one label); log the count of cells per status."""
    runs = runs_table(cells, variants, runs_root, seeds)
    files.write_csv(runs, runs_csv)
    files.SPEEDUP_TABLE.write(speedups(runs), speedups_csv)
    files.QUALITY_TABLE.write(quality.comparisons(runs), quality_csv)
    if findings_csv is not None:
        files.FINDINGS_TABLE.write(findings.findings_table(runs), findings_csv)
    counts = runs["status"].value_counts()
    log.info("%d cells: %s", len(runs), ", ".join(f"{counts[s]} {s}" for s in records.RUN_STATUSES if s in counts))
    return runs
