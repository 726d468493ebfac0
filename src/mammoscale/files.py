"""Every file the study reads or writes: where it lives, what it holds, and how it is written.

The one owner of the on-disk contracts. A path template, a column list or a dtype is defined
here once; the rules, the package and the tests ask for it instead of spelling it again, and
nothing parses a fact back out of a file name.

Paths come as templates whose ``{fields}`` are Snakemake's wildcards, so a rule can declare
``RUN + "/metrics.json"`` and Python fills the same template with :func:`fill`:

- the RSNA layout, under ``data.root``: :data:`TRAIN_CSV`, :data:`IMAGE`; ChestX-ray14's: :data:`CHEST_ENTRIES` ...
  :data:`CHEST_FLAT`;
- the results, under the working directory: :data:`BREASTS` ... :data:`REPORT`;
- the tile cache, under ``cache.root``: :data:`VIEWS_SHARD` ... :data:`TILE_INDEX_CHECK`.

Tables are :class:`Table` objects: their columns in order, the dtypes a reader needs, and an
atomic writer. Every file is written to a temporary name in its directory and renamed into
place when complete (:func:`atomic_path`, from :mod:`mammoscale.atomic`), so a half-written file
never appears under its real name, whatever kills the writer.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from mammoscale.atomic import (  # noqa: F401 (how every file here is written: mammoscale.atomic's, asked of files)
    DiskFullError,
    atomic_array,
    atomic_path,
    write_csv,
    write_json,
    write_text,
)
from mammoscale.columns import (  # noqa: F401 (the tables, re-exported: files.X_TABLE beside the path X)
    AUDIT_TABLE,
    BREAKDOWN_TABLE,
    BREAST_TABLE,
    CHEST_DECODE_ERROR_TABLE,
    CHEST_DECODE_TABLE,
    CHEST_EXCLUDED_TABLE,
    CHEST_IMAGE_TABLE,
    CHEST_TILE_TABLE,
    DECODE_ERROR_TABLE,
    EXCLUDED_TABLE,
    FINDING_PREDICTION_TABLE,
    FINDINGS_TABLE,
    IMAGE_TABLE,
    OPERATOR_TABLE,
    PIPELINE_TABLE,
    PLAN_TABLE,
    PREDICTION_TABLE,
    QUALITY_TABLE,
    RUN_OPTIONAL_INTS,
    RUN_TEXT_COLUMNS,
    SCALING_TABLE,
    SPEEDUP_TABLE,
    SPLITS,
    TILE_TABLE,
    TILE_TABLES,
    VIEW_TABLE,
    Table,
    finding_matrices,
    prediction_table,
    read_runs,
    tile_table,
)

# the RSNA layout (data.root)

TRAIN_CSV = "train.csv"
IMAGES_DIR = "train_images"
IMAGE = IMAGES_DIR + "/{patient_id}/{image_id}.dcm"
SYNTHETIC_TRUTH = "synthetic_truth.csv"
RSNA_COLUMNS = (
    "site_id",
    "patient_id",
    "image_id",
    "laterality",
    "view",
    "age",
    "cancer",
    "biopsy",
    "invasive",
    "BIRADS",
    "implant",
    "density",
    "machine_id",
    "difficult_negative_case",
)
"""The competition's ``train.csv`` columns, in its order."""
RSNA_REQUIRED = ("patient_id", "image_id", "laterality", "view", "cancer")
"""The columns the study cannot do without; ``site_id`` and ``machine_id`` are kept when present."""

# the ChestX-ray14 layout (data.root; NIH's names)

CHEST_ENTRIES = "Data_Entry_2017.csv"
CHEST_TRAIN_VAL = "train_val_list.txt"
CHEST_TEST = "test_list.txt"
"""The official lists (one Image Index a line), split by patient: the test split, and the rest."""
CHEST_PART = "images_{part}/images"
"""A directory of PNGs as NIH's twelve archives unpack (``images_001/images`` ... ``images_012/images``); one flat
:data:`CHEST_FLAT` is read too."""
CHEST_FLAT = "images"
CHEST_COLUMNS = (
    "Image Index",
    "Finding Labels",
    "Follow-up #",
    "Patient ID",
    "Patient Age",
    "Patient Gender",
    "View Position",
    "OriginalImage[Width",
    "Height]",
    "OriginalImagePixelSpacing[x",
    "y]",
)
"""``Data_Entry_2017.csv``'s header cells, in its order (its bracketed pairs hold a comma; some copies end each line
with one more, an empty column)."""
CHEST_REQUIRED = ("Image Index", "Finding Labels", "Patient ID")
"""The columns the study cannot do without; ``Follow-up #`` and ``View Position`` are kept when present."""

# the grid's names: an image size, a cell (the one template of each; :func:`size_label`, :func:`cell_label`)

SIZE_LABEL = "img{image_size}"
"""An image size's name: its tiles' directory, its contact sheet, its jobs' logs, the report's prose."""
PATCH_LABEL = "_p{patch_size}"
CELL_LABEL = SIZE_LABEL + "{patch}"
"""A cell's image and patch size: ``img512_p16`` (a ViT's), ``img224`` (a CNN's: its family has no patch size).
Templates hold ``{patch}``; :func:`fill` and :func:`partial` take ``patch_size`` (an int or None) for it."""
PATCH_PATTERN = r"(_p\d+)?"
"""What ``{patch}`` matches (the Snakefile's wildcard constraint): ``_p16``, or nothing."""

# the results (relative to the directory snakemake runs in)

RESULTS = "results"
MANIFEST = "results/manifest"
BREASTS = f"{MANIFEST}/breasts.csv"
CHEST_IMAGES = f"{MANIFEST}/images.csv"
"""A ChestX-ray14 manifest: one row per image, the unit its study trains on (:data:`CHEST_IMAGE_TABLE`)."""
EXCLUDED = f"{MANIFEST}/excluded.csv"
MANIFEST_COUNTS = f"{MANIFEST}/counts.json"
QC = "results/qc"
DECODE_ERRORS = f"{QC}/decode_errors.csv"
PREPROCESS_SUMMARY = f"{QC}/preprocess_summary.json"
CONTACT_SHEET = QC + "/contact_sheet_" + SIZE_LABEL + ".png"
DECODE_AUDIT = f"{QC}/decode_audit.csv"
DECODE_AUDIT_COUNTS = f"{QC}/decode_audit.json"
RUNS = "results/runs"
CELL = "{hardware}/{variant}/" + CELL_LABEL
"""A grid cell's name: its run directory under :data:`RUNS`, its log and benchmark names."""
RUN = f"{RUNS}/{CELL}"
SEED_DIR = "seeds/{seed}"
"""A quality cell trained again with another seed (``train.seeds``): its run directory, inside the cell's."""
SEED_RUN = f"{RUN}/{SEED_DIR}"
METRICS = "metrics.json"
FAILED_METRICS = "metrics.failed.json"
"""A failed cell's record: Snakemake deletes a failed job's outputs, so it is kept under this name."""
CELL_SETTINGS = "cell.yaml"
PREDICTIONS = "predictions.csv"
"""A scored cell's probability for each validation breast, for the paired comparisons of :mod:`mammoscale.stats`."""
TRAIN_LOG = "train.log"
CHECKPOINT = "checkpoint.pt"
CHECKPOINT_PREVIOUS = "checkpoint.prev.pt"
"""The checkpoint before the newest, kept for a damaged newest to fall back to (:mod:`mammoscale.train.checkpoint`)."""
RANK_LOG = "rank{rank}.log"
"""Everything one rank of a launched cell wrote: its log, tracebacks, NCCL's warnings (``--rank-log``)."""
RANK_OUTCOME = ".rank{rank}.outcome.json"
"""How one rank of a cell ended, for rank 0 to agree on the cell's outcome (:mod:`mammoscale.train.outcome`)."""
PROFILES = "results/profiles"
PROFILE = f"{PROFILES}/{CELL}"
"""Where a cell's profile goes (rule ``profile_cell``, :mod:`mammoscale.train.profiling`)."""
PROFILE_TRACE = "trace.pt.trace.json"
"""Rank 0's Chrome trace: Perfetto and chrome://tracing open it; TensorBoard's profiler reads ``*.pt.trace.json``."""
PROFILE_RANK_TRACE = "trace.rank{rank}.pt.trace.json"
"""The trace of another rank of a cell of several."""
PROFILE_OPERATORS = "operators.csv"
PROFILE_BREAKDOWN = "breakdown.csv"
PROFILE_FIGURE = "breakdown.{ext}"
TABLES = "results/tables"
RUNS_CSV = f"{TABLES}/runs.csv"
SPEEDUPS_CSV = f"{TABLES}/speedups.csv"
QUALITY_CSV = f"{TABLES}/quality.csv"
FINDINGS_CSV = f"{TABLES}/findings.csv"
PIPELINE_CSV = f"{TABLES}/pipeline.csv"
PLAN_CSV = f"{TABLES}/plan.csv"
SCALING_CSV = f"{TABLES}/scaling.csv"
FIGURE = "results/figures/{figure}.{ext}"
REPORT = "results/report/report.html"
SNAPSHOT = "results/snapshot"
LOG = "results/logs/{name}.log"
BENCHMARK = "results/benchmarks/{name}.tsv"
TILES_JOB = "cache_tiles/" + SIZE_LABEL + "_shard{shard}"
"""A stage-2 job's log and benchmark name: the rule declares it, the pipeline table reads its benchmark."""
CHEST_TILES_JOB = "cache_tiles/shard{shard}"
"""A ChestX-ray14 shard's job (decode, then tiles at every size): its log and benchmark name."""

# the tile cache (cache.root)

SHARD = "shard{shard}"
VIEWS_SHARD = "views/shard{shard}.npy"
VIEWS_INDEX = "views/shard{shard}.csv"
VIEWS_IMAGES = "views/shard{shard}.images.csv"
TILES_DIR = SIZE_LABEL
TILES_SHARD = TILES_DIR + "/shard{shard}.npy"
TILES_INDEX = TILES_DIR + "/shard{shard}.csv"
TILE_INDEX = TILES_DIR + "/index.csv"
TILE_INDEX_CHECK = TILES_DIR + "/index.json"
"""What the index must be when it is read: its sha256, its rows and its examples per split."""
CHEST_DECODED = "decoded/shard{shard}.csv"
"""A ChestX-ray14 shard's images: each decoded (its PNG mode and size) or its error (:data:`CHEST_DECODE_TABLE`)."""
STAGED = "mammoscale-cache-{key}"
"""A cache copied to node-local scratch, keyed by its source's location."""


def _named(fields: dict) -> dict:
    """``fields`` as templates name them: a shard number as its four digits, a patch size as ``{patch}``."""
    if "shard" in fields and not isinstance(fields["shard"], str):
        fields["shard"] = shard_name(fields["shard"])
    if "patch_size" in fields:
        fields["patch"] = patch_label(fields.pop("patch_size"))
    return fields


def fill(template: str, **fields) -> str:
    """``template`` with its ``{fields}`` filled (a shard number becomes its four digits, a patch size of None
    nothing: :func:`patch_label`)."""
    return template.format(**_named(fields))


def partial(template: str, **fields) -> str:
    """``template`` with only ``fields`` filled; its other ``{fields}`` stay wildcards."""
    for name, value in _named(fields).items():
        template = template.replace("{" + name + "}", str(value))
    return template


def patch_label(patch_size: int | None) -> str:
    """``_p16``, or nothing for a cell without a patch size (a CNN's: None, or a table's empty cell)."""
    return "" if no_patch(patch_size) else PATCH_LABEL.format(patch_size=int(patch_size))


def no_patch(patch_size) -> bool:
    """Whether ``patch_size`` is a CNN cell's: None, or as a table holds it (NaN, ``pd.NA``, an empty string)."""
    return patch_size is None or (isinstance(patch_size, str) and patch_size == "") or bool(pd.isna(patch_size))


def patch_size_of(patch: str) -> int | None:
    """A ``{patch}`` wildcard's patch size: ``_p16`` -> 16, nothing -> None (:func:`patch_label`'s inverse)."""
    return int(patch.removeprefix("_p")) if patch else None


def size_label(image_size) -> str:
    """``img512``: an image size as every file name, log and sentence of the study writes it."""
    return fill(SIZE_LABEL, image_size=image_size)


def cell_label(image_size, patch_size) -> str:
    """``img512_p16``: a cell's image and patch size as every file name, log and sentence of the study writes them
    (``img224`` for a cell without a patch size)."""
    return fill(CELL_LABEL, image_size=image_size, patch_size=patch_size)


def cell_name(hardware, variant, image_size, patch_size) -> str:
    """``local-cpu/flash/img512_p16``: a cell's full name, its run directory under :data:`RUNS`."""
    return fill(CELL, hardware=hardware, variant=variant, image_size=image_size, patch_size=patch_size)


def under(root: Path | str, template: str, **fields) -> Path:
    return Path(root) / fill(template, **fields)


def root_of(path: Path | str, template: str, **fields) -> Path:
    """The directory under which ``template`` (filled with ``fields``) names ``path``: :func:`under`'s inverse,
    for a rule that must find a root from its input files (remote storage rewrites their prefix)."""
    tail, path = Path(fill(template, **fields)).parts, Path(path)
    if path.parts[-len(tail) :] != tail:
        raise ValueError(f"{path} is not a {template} file with {fields}")
    return Path(*path.parts[: -len(tail)]) if len(path.parts) > len(tail) else Path(".")


def shard_name(shard: int) -> str:
    """A shard's number as it appears in file names: 7 -> ``0007``."""
    return f"{int(shard):04d}"


def shard_names(n_shards: int) -> list[str]:
    return [shard_name(k) for k in range(n_shards)]


def image_path(root: Path | str, patient_id, image_id) -> Path | None:
    """``root/train_images/<patient_id>/<image_id>.dcm``, or None when an id is not a plain integer.

    Integer ids cannot name a path outside ``root``, whatever the CSV says.
    """
    patient_id, image_id = str(patient_id), str(image_id)
    if not (patient_id.isascii() and patient_id.isdigit() and image_id.isascii() and image_id.isdigit()):
        return None
    return under(root, IMAGE, patient_id=patient_id, image_id=image_id)


def run_dir(hardware: str, variant: str, image_size: int, patch_size: int | None, runs_root: Path | str = RUNS) -> Path:
    """Where one cell writes (DESIGN.md's path)."""
    return under(runs_root, CELL, hardware=hardware, variant=variant, image_size=image_size, patch_size=patch_size)


def log_file(name: str) -> str:
    return fill(LOG, name=name)


def benchmark_file(name: str) -> str:
    return fill(BENCHMARK, name=name)


def read_json(path: Path | str) -> dict:
    return json.loads(Path(path).read_text())


# checksums


def sha256_file(path: Path | str, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def crc32(array: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(array).data)
