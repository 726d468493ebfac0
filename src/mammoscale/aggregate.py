"""The study's tables: one row per configured cell, flash-vs-baseline ratios, and the data pipeline.

Every configured cell gets a row in ``runs.csv`` whatever its state: its ``metrics.json`` when it
finished (``ok``, ``oom``, ``skipped``), the record a failed run left (``metrics.failed.json``,
see :func:`mammoscale.grid.run_job`), or ``missing`` when it has not run yet. The tables, and
the figures drawn from them, can so be made while SLURM jobs are still running, and a cell
absent from a figure is absent for a stated reason.

``speedups.csv`` pairs every flash variant with every baseline at each hardware, image size and
patch size: throughput ratio (flash / baseline) and memory ratio (baseline / flash), defined
only where both ran (``ok``), with both statuses kept so an OOM baseline stays visible.

``pipeline.csv`` holds what the preprocessing jobs measured: items and seconds per shard, from
Snakemake's benchmark files and the shards' own records.

This module reads files and writes CSV; it imports neither torch nor matplotlib.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from mammoscale.errors import UserError
from mammoscale.grid import FAILED_RECORD, role

log = logging.getLogger(__name__)

STATUSES = ("ok", "oom", "failed", "skipped", "missing")
KEY = ["hardware", "variant", "image_size", "patch_size"]
FIRST_COLUMNS = [*KEY, "status", "message", "role", "family", "model", "attention", "attention_backend", "mode", "tokens",
                 "seq_len", "throughput_img_s", "step_time_s", "train_time_s", "peak_mem_bytes", "peak_mem_kind",
                 "achieved_tflops", "mfu", "val_auc", "val_pf1", "input_wait_fraction", "loader_img_s", "world_size",
                 "micro_batch", "grad_accum", "global_batch", "run_dir"]
PAIR = ["hardware", "image_size", "patch_size"]


def run_dir(runs_root: Path | str, hardware: str, variant: str, image_size: int, patch_size: int) -> Path:
    """Where one cell writes: ``<runs_root>/<hardware>/<variant>/img<S>_p<P>`` (DESIGN.md's path)."""
    return Path(runs_root) / hardware / variant / f"img{image_size}_p{patch_size}"


def runs_root_of(metrics_files) -> Path:
    """The directory above ``<hardware>/<variant>/img<S>_p<P>/metrics.json`` of the given files (one root)."""
    roots = {Path(path).parents[3] for path in metrics_files}
    if len(roots) != 1:
        raise ValueError(f"expected the metrics files of one runs directory, got {sorted(map(str, roots)) or 'none'}")
    return roots.pop()


def read_cell(directory: Path) -> dict | None:
    """The cell's record: ``metrics.json``, else a failed run's ``metrics.failed.json``, else None."""
    for name in ("metrics.json", FAILED_RECORD):
        path = directory / name
        if path.is_file():
            try:
                return json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise UserError(f"{path} is not valid JSON ({exc}); rerun the cell with --force") from exc
    return None


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


def runs_table(cells, variants: dict, runs_root: Path | str) -> pd.DataFrame:
    """One row per configured cell ``(hardware, variant, image size, patch size)``, in grid order."""
    rows = []
    for hardware, variant, size, patch in cells:
        spec = variants[variant]
        directory = run_dir(runs_root, hardware, variant, size, patch)
        row = {"hardware": hardware, "variant": variant, "image_size": size, "patch_size": patch,
               "status": "missing", "family": spec["model"], "attention": spec["attention"],
               "role": role(spec["attention"]), "tokens": (size // patch) ** 2, "run_dir": str(directory)}
        record = read_cell(directory)
        if record is not None:
            found = (record.get("hardware"), record.get("variant"), record.get("image_size"), record.get("patch_size"))
            if found != (hardware, variant, size, patch):
                raise UserError(f"{directory} holds the record of cell {found}, not of {(hardware, variant, size, patch)}; "
                                "remove it and rerun the cell")
            row.update(flatten(record))
        rows.append(row)
    table = pd.DataFrame(rows)
    for column in FIRST_COLUMNS:
        if column not in table:
            table[column] = None
    rest = sorted(column for column in table.columns if column not in FIRST_COLUMNS)
    return table[FIRST_COLUMNS + rest]


def speedups(runs: pd.DataFrame) -> pd.DataFrame:
    """Each flash variant against each baseline at the same hardware, image size and patch size."""
    columns = ["variant", "status", "throughput_img_s", "peak_mem_bytes"]
    flash = runs.loc[runs["role"] == "flash", PAIR + ["tokens"] + columns]
    baseline = runs.loc[runs["role"] == "baseline", PAIR + columns]
    pairs = flash.merge(baseline, on=PAIR, suffixes=("_flash", "_baseline"))
    both = (pairs["status_flash"] == "ok") & (pairs["status_baseline"] == "ok")
    pairs["throughput_ratio"] = (pairs["throughput_img_s_flash"].astype(float)
                                 / pairs["throughput_img_s_baseline"].astype(float)).where(both)
    pairs["memory_ratio"] = (pairs["peak_mem_bytes_baseline"].astype(float)
                             / pairs["peak_mem_bytes_flash"].astype(float)).where(both)
    pairs = pairs.rename(columns={"variant_flash": "flash_variant", "variant_baseline": "baseline_variant",
                                  "status_flash": "flash_status", "status_baseline": "baseline_status"})
    order = [*PAIR, "tokens", "flash_variant", "baseline_variant", "flash_status", "baseline_status",
             "throughput_ratio", "memory_ratio", "throughput_img_s_flash", "throughput_img_s_baseline",
             "peak_mem_bytes_flash", "peak_mem_bytes_baseline"]
    return pairs[order].sort_values(PAIR + ["flash_variant", "baseline_variant"], ignore_index=True)


def read_benchmark(path: Path | str) -> dict:
    """Wall seconds and CPU seconds of one job from Snakemake's benchmark file."""
    table = pd.read_csv(path, sep="\t")
    if table.empty or "s" not in table:
        raise UserError(f"{path} is not a Snakemake benchmark file (no 's' column)")
    return {"seconds": float(table["s"].iloc[-1]), "cpu_seconds": float(table["cpu_time"].iloc[-1])}


def pipeline_table(stage1: list[tuple], stage2: list[tuple]) -> pd.DataFrame:
    """One row per preprocessing job with its items per second.

    ``stage1``: ``(images_csv, benchmark)`` per views shard (items: images decoded);
    ``stage2``: ``(tiles_csv, benchmark)`` per tiled shard, in ``.../img<S>/`` (items: tiles written).
    """
    rows = []
    for images_csv, benchmark in stage1:
        images = pd.read_csv(images_csv, usecols=["status"])
        rows.append({"stage": "decode + crop", "image_size": None, "shard": Path(images_csv).name.split(".")[0],
                     "items": int((images["status"] == "ok").sum()), "item": "image", **read_benchmark(benchmark)})
    for tiles_csv, benchmark in stage2:
        tiles = pd.read_csv(tiles_csv)
        size = Path(tiles_csv).parent.name.removeprefix("img")
        rows.append({"stage": f"tile img{size}", "image_size": int(size), "shard": Path(tiles_csv).stem,
                     "items": len(tiles), "item": "tile", **read_benchmark(benchmark)})
    table = pd.DataFrame(rows, columns=["stage", "image_size", "shard", "items", "item", "seconds", "cpu_seconds"])
    table["items_per_s"] = table["items"] / table["seconds"].where(table["seconds"] > 0)
    return table


def write_tables(cells, variants: dict, runs_root: Path | str, runs_csv: Path | str,
                 speedups_csv: Path | str) -> pd.DataFrame:
    """Write ``runs.csv`` and ``speedups.csv``; log the count of cells per status."""
    runs = runs_table(cells, variants, runs_root)
    for path, table in ((runs_csv, runs), (speedups_csv, speedups(runs))):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(path, index=False)
    counts = runs["status"].value_counts()
    log.info("%d cells: %s", len(runs), ", ".join(f"{counts[s]} {s}" for s in STATUSES if s in counts))
    return runs


def read_runs(path: Path | str) -> pd.DataFrame:
    """``runs.csv`` back; names and provenance (``env.*``: job ids, commits) stay text, not numbers."""
    header = pd.read_csv(path, nrows=0).columns
    text = {"hardware", "variant", "status", "message", "attention_backend", "model", "run_dir"}
    return pd.read_csv(path, dtype={column: str for column in header if column in text or column.startswith("env.")})
