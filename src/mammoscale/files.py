"""Every file the study reads or writes: where it lives, what it holds, and how it is written.

The one owner of the on-disk contracts. A path template, a column list or a dtype is defined
here once; the rules, the package and the tests ask for it instead of spelling it again, and
nothing parses a fact back out of a file name.

Paths come as templates whose ``{fields}`` are Snakemake's wildcards, so a rule can declare
``RUN + "/metrics.json"`` and Python fills the same template with :func:`fill`:

- the RSNA layout, under ``data.root``: :data:`TRAIN_CSV`, :data:`IMAGE`;
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
from collections.abc import Mapping
from dataclasses import dataclass, field
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

# the grid's names: an image size, a cell (the one template of each; :func:`size_label`, :func:`cell_label`)

SIZE_LABEL = "img{image_size}"
"""An image size's name: its tiles' directory, its contact sheet, its jobs' logs, the report's prose."""
CELL_LABEL = SIZE_LABEL + "_p{patch_size}"
"""A cell's image and patch size: ``img512_p16``."""

# the results (relative to the directory snakemake runs in)

RESULTS = "results"
MANIFEST = "results/manifest"
BREASTS = f"{MANIFEST}/breasts.csv"
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
PIPELINE_CSV = f"{TABLES}/pipeline.csv"
PLAN_CSV = f"{TABLES}/plan.csv"
FIGURE = "results/figures/{figure}.{ext}"
REPORT = "results/report/report.html"
SNAPSHOT = "results/snapshot"
LOG = "results/logs/{name}.log"
BENCHMARK = "results/benchmarks/{name}.tsv"
TILES_JOB = "cache_tiles/" + SIZE_LABEL + "_shard{shard}"
"""A stage-2 job's log and benchmark name: the rule declares it, the pipeline table reads its benchmark."""

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
"""What the index must be when it is read: its sha256, its rows and its breasts per split."""
STAGED = "mammoscale-cache-{key}"
"""A cache copied to node-local scratch, keyed by its source's location."""


def fill(template: str, **fields) -> str:
    """``template`` with its ``{fields}`` filled (a shard number becomes its four digits)."""
    if "shard" in fields and not isinstance(fields["shard"], str):
        fields["shard"] = shard_name(fields["shard"])
    return template.format(**fields)


def partial(template: str, **fields) -> str:
    """``template`` with only ``fields`` filled; its other ``{fields}`` stay wildcards."""
    for name, value in fields.items():
        template = template.replace("{" + name + "}", fill("{" + name + "}", **{name: value}))
    return template


def size_label(image_size) -> str:
    """``img512``: an image size as every file name, log and sentence of the study writes it."""
    return fill(SIZE_LABEL, image_size=image_size)


def cell_label(image_size, patch_size) -> str:
    """``img512_p16``: a cell's image and patch size as every file name, log and sentence of the study writes them."""
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


def run_dir(hardware: str, variant: str, image_size: int, patch_size: int, runs_root: Path | str = RUNS) -> Path:
    """Where one cell writes (DESIGN.md's path)."""
    return under(runs_root, CELL, hardware=hardware, variant=variant, image_size=image_size, patch_size=patch_size)


def log_file(name: str) -> str:
    return fill(LOG, name=name)


def benchmark_file(name: str) -> str:
    return fill(BENCHMARK, name=name)


# tables


@dataclass(frozen=True)
class Table:
    """A CSV file's columns (in order) and the dtypes its readers rely on.

    ``text=True`` reads every column as text, empty cells as ``""`` (tables of messages and
    codes, where ``"NA"`` is a value, not a gap).
    """

    columns: tuple[str, ...]
    dtypes: Mapping[str, str] = field(default_factory=dict)
    text: bool = False

    @classmethod
    def of(cls, spec: str, *, text: bool = False) -> Table:
        """A table from ``"column[:dtype] ..."``: its columns in order, with the dtypes given."""
        columns = [item.partition(":") for item in spec.split()]
        return cls(tuple(name for name, _, _ in columns), {name: kind for name, _, kind in columns if kind}, text)

    def frame(self, rows=()) -> pd.DataFrame:
        """A frame of ``rows`` (dicts) with exactly this table's columns."""
        return pd.DataFrame(list(rows), columns=list(self.columns))

    def read(self, path: Path | str, *, columns: tuple[str, ...] | None = None) -> pd.DataFrame:
        if self.text:
            return pd.read_csv(path, dtype=str, keep_default_na=False, usecols=columns)
        dtypes = {name: kind for name, kind in self.dtypes.items() if columns is None or name in columns}
        return pd.read_csv(path, dtype=dtypes, usecols=columns)

    def missing(self, frame: pd.DataFrame) -> list[str]:
        return [name for name in self.columns if name not in frame.columns]

    def write(self, frame: pd.DataFrame, path: Path | str) -> None:
        """Write ``frame``'s columns of this table, in order, atomically."""
        write_csv(frame[list(self.columns)], path)


SPLITS = ("train", "val", "test")
_ID = "breast_id:str patient_id:int64 laterality:str"
BREAST_TABLE = Table.of(
    f"{_ID} cc_image_id:int64 mlo_image_id:int64 label:int64 site_id:str machine_id:str split:str shard:int64"
)
"""``breasts.csv``: one row per breast, the unit the study trains on."""
EXCLUDED_TABLE = Table.of("patient_id laterality image_id view reason detail", text=True)
AUDIT_TABLE = Table.of(
    "patient_id image_id path status error_kind message transfer_syntax photometric bits_stored rows columns voi "
    "rescaled clipped_pixels constant laterality_header view_header decoder mean_intensity",
    text=True,
)
"""One row per decoded (or failed) image: the decode audit, and the basis of a stage-1 image row."""
IMAGE_TABLE = Table.of(
    f"breast_id view {' '.join(AUDIT_TABLE.columns)} decode_level flipped flip_disagrees roi_fallback roi_box "
    "tissue_fraction",
    text=True,
)
"""A stage-1 shard's ``.images.csv``: every image it decoded, what was found and done, or its error."""
DECODE_ERROR_TABLE = Table.of("file error_kind message breast_id view patient_id image_id", text=True)
VIEW_TABLE = Table.of(f"{_ID} label:int64 split:str shard:int64 offset:int64 cc_rows cc_cols mlo_rows mlo_cols crc32")
"""A stage-1 shard's ``.csv``: where each breast's canonical views are in its ``.npy``."""
TILE_TABLE = Table.of(f"{_ID} label:int64 split:str shard:int64 file:str offset:int64 crc32:int64 shard_sha256:str")
"""A stage-2 shard's ``.csv`` and a size's ``index.csv``: one row per tile, with its checksums."""
SPEEDUP_TABLE = Table.of(
    "hardware:str image_size patch_size seq_len flash_variant:str baseline_variant:str flash_status:str "
    "baseline_status:str throughput_ratio throughput_ratio_ci_low throughput_ratio_ci_high windows_flash "
    "windows_baseline unstable memory_ratio throughput_img_s_flash throughput_img_s_baseline peak_mem_bytes_flash "
    "peak_mem_bytes_baseline"
)
"""``speedups.csv``: each flash variant against each baseline, at each hardware, image size and patch size."""
PREDICTION_TABLE = Table.of("patient_id:int64 laterality:str label:int64 probability:float64")
"""``predictions.csv``: a scored cell's probability per validation breast."""
QUALITY_TABLE = Table.of(
    "hardware:str image_size:int64 patch_size:int64 variant_a:str variant_b:str metric:str a b difference ci_low "
    "ci_high p_value breasts positive_breasts verdict:str detail:str"
)
"""``quality.csv``: each pair of variants scored on the same breasts, per metric (:mod:`mammoscale.report.quality`)."""
OPERATOR_TABLE = Table.of(
    "name:str calls:int64 self_cpu_s:float64 self_device_s:float64 total_cpu_s:float64 total_device_s:float64"
)
"""A profile's ``operators.csv``: the operators by self time (device time where there is a device), in seconds."""
BREAKDOWN_TABLE = Table.of("step:int64 phase:str seconds:float64 share:float64")
"""A profile's ``breakdown.csv``: each profiled step's seconds per phase, and its share of the step."""
PIPELINE_TABLE = Table.of("stage:str image_size shard:str items item:str seconds cpu_seconds items_per_s")
"""``pipeline.csv``: items and seconds of each preprocessing job."""
PLAN_TABLE = Table.of(
    "hardware:str variant:str image_size:int64 patch_size:int64 seq_len:int64 mode:str device:str world_size:int64 "
    "micro_batch:int64 grad_accum:int64 predicted_peak_bytes:int64 memory_limit_bytes fits:bool data_bytes:int64 "
    "data_on_device submitted:bool flops_per_img:int64 steps:int64 images:int64 gpu_hours predicted_hours "
    "time_limit_hours signal_before_limit_s:int64 mfu runs"
)
"""``plan.csv``: each configured cell's plan before it runs (:mod:`mammoscale.plan.sizing`)."""
RUN_TEXT_COLUMNS = ("hardware", "variant", "status", "message", "attention_backend", "model", "run_dir")
"""Columns of ``runs.csv`` that stay text whatever they hold (with every ``env.*`` column: job ids, commits)."""


def read_runs(path: Path | str) -> pd.DataFrame:
    """``runs.csv`` back; names and provenance stay text, not numbers."""
    header = pd.read_csv(path, nrows=0).columns
    return pd.read_csv(path, dtype={c: str for c in header if c in RUN_TEXT_COLUMNS or c.startswith("env.")})


# reading back


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
