"""Every table of the study: its columns in order and the dtypes its readers rely on.

One owner per column list; :mod:`mammoscale.files` re-exports each, so a caller writes ``files.BREAST_TABLE`` beside
``files.BREASTS``, the path it describes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mammoscale.atomic import write_csv
from mammoscale.tasks import FINDINGS


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
_FINDINGS = " ".join(f"{name}:int64" for name in FINDINGS)
CHEST_TILE_TABLE = Table.of(
    f"image_id:str patient_id:int64 label:int64 {_FINDINGS} split:str shard:int64 file:str offset:int64 crc32:int64 "
    "shard_sha256:str"
)
"""A ChestX-ray14 shard's tile ``.csv`` and its size's ``index.csv``: one row per image, 0/1 per finding, ``label``
1 where any finding is."""
TILE_TABLES = {"breast": TILE_TABLE, "image": CHEST_TILE_TABLE}
"""The tile table of each unit a task trains on (:attr:`mammoscale.tasks.Task.unit`); its first column,
``<unit>_id``, names a tile's example."""
CHEST_IMAGE_TABLE = Table.of(
    f"image_id:str patient_id:int64 follow_up:str view_position:str {_FINDINGS} label:int64 split:str shard:int64 "
    "path:str"
)
"""``images.csv`` (:data:`CHEST_IMAGES`): one row per image kept, its findings, its split and shard, its PNG's path
under ``data.root``."""
CHEST_EXCLUDED_TABLE = Table.of("image_id patient_id reason detail", text=True)
"""A ChestX-ray14 manifest's ``excluded.csv``: every row of ``Data_Entry_2017.csv`` not kept, and why."""
CHEST_DECODE_TABLE = Table.of("image_id patient_id path status error_kind message mode rows cols", text=True)
"""A ChestX-ray14 shard's ``decoded/shard*.csv``: every image, ``ok`` (its PNG mode and size) or ``error`` (why)."""
CHEST_DECODE_ERROR_TABLE = Table.of("file error_kind message image_id patient_id", text=True)
"""A ChestX-ray14 cache's ``decode_errors.csv``: every PNG that did not decode."""
SPEEDUP_TABLE = Table.of(
    "hardware:str image_size patch_size seq_len flash_variant:str baseline_variant:str flash_status:str "
    "baseline_status:str throughput_ratio throughput_ratio_ci_low throughput_ratio_ci_high windows_flash "
    "windows_baseline unstable memory_ratio throughput_img_s_flash throughput_img_s_baseline peak_mem_bytes_flash "
    "peak_mem_bytes_baseline"
)
"""``speedups.csv``: each flash variant against each baseline, at each hardware, image size and patch size."""
PREDICTION_TABLE = Table.of("patient_id:int64 laterality:str label:int64 probability:float64")
"""``predictions.csv``: a scored cell's probability per validation breast."""
FINDING_PREDICTION_TABLE = Table.of("patient_id:str image_id:str finding:str label:int64 probability:float64")
"""``predictions.csv`` of a cell of several labels (ChestX-ray14's findings): its probability per validation image
and finding."""


def prediction_table(multilabel: bool) -> Table:
    """What a scored cell's ``predictions.csv`` holds: a row per breast, or (``multilabel``) per image and finding."""
    return FINDING_PREDICTION_TABLE if multilabel else PREDICTION_TABLE


def finding_matrices(frame: pd.DataFrame, findings) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """A :data:`FINDING_PREDICTION_TABLE` frame as matrices: its images (``patient_id``, ``image_id``, in order of
    appearance), their labels and probabilities ``(images, findings)``, columns in the order of ``findings``."""
    keys = ["patient_id", "image_id"]
    images = frame[keys].drop_duplicates().reset_index(drop=True)
    wide = frame.pivot(index=keys, columns="finding").reindex(pd.MultiIndex.from_frame(images))
    return images, wide["label"][list(findings)].to_numpy(), wide["probability"][list(findings)].to_numpy()


QUALITY_TABLE = Table.of(
    "hardware:str image_size:int64 patch_size:Int64 variant_a:str variant_b:str metric:str a b difference ci_low "
    "ci_high p_value breasts positive_breasts verdict:str detail:str"
)
"""``quality.csv``: each pair of variants scored on the same breasts, per metric (:mod:`mammoscale.report.quality`)."""
FINDINGS_TABLE = Table.of(
    "finding:str hardware:str variant:str image_size:int64 patch_size:Int64 auc:float64 ci_low:float64 "
    "ci_high:float64 positives:Int64 images:Int64 chexnet_auc:float64 chexnet_inside:boolean"
)
"""``findings.csv``: each scored cell's AUROC per finding with its interval, beside CheXNet's published one
(:mod:`mammoscale.report.findings`)."""
OPERATOR_TABLE = Table.of(
    "name:str calls:int64 self_cpu_s:float64 self_device_s:float64 total_cpu_s:float64 total_device_s:float64"
)
"""A profile's ``operators.csv``: the operators by self time (device time where there is a device), in seconds."""
BREAKDOWN_TABLE = Table.of("step:int64 phase:str seconds:float64 share:float64")
"""A profile's ``breakdown.csv``: each profiled step's seconds per phase, and its share of the step."""
PIPELINE_TABLE = Table.of("stage:str image_size shard:str items item:str seconds cpu_seconds items_per_s")
"""``pipeline.csv``: items and seconds of each preprocessing job."""
PLAN_TABLE = Table.of(
    "hardware:str variant:str image_size:int64 patch_size:Int64 seq_len:Int64 mode:str device:str world_size:int64 "
    "micro_batch:int64 grad_accum:int64 predicted_peak_bytes:int64 memory_limit_bytes fits:bool data_bytes:int64 "
    "data_on_device submitted:bool flops_per_img:int64 steps:int64 images:int64 gpu_hours predicted_hours "
    "time_limit_hours signal_before_limit_s:int64 mfu runs"
)
"""``plan.csv``: each configured cell's plan before it runs (:mod:`mammoscale.plan.sizing`)."""
SCALING_TABLE = Table.of(
    "series:str variant:str image_size:int64 patch_size device:str hardware:str nodes:int64 ranks:int64 global_batch "
    "status:str throughput_img_s throughput_ci_low_img_s throughput_ci_high_img_s ideal_img_s speedup speedup_ci_low "
    "speedup_ci_high efficiency efficiency_ci_low efficiency_ci_high epochs:int64 train_examples:int64 time_to_train_h"
)
"""``scaling.csv``: each point of each scaling series, its speed-up, efficiency and time to train
(:mod:`mammoscale.report.scaling`)."""
RUN_TEXT_COLUMNS = ("hardware", "variant", "status", "message", "attention_backend", "model", "run_dir")
"""Columns of ``runs.csv`` that stay text whatever they hold (with every ``env.*`` column: job ids, commits)."""
RUN_OPTIONAL_INTS = ("patch_size", "seq_len")
"""Columns of ``runs.csv`` that are integers where a cell has them, empty for a CNN's (no patch, no tokens)."""


def read_runs(path: Path | str) -> pd.DataFrame:
    """``runs.csv`` back; names and provenance stay text, not numbers."""
    header = pd.read_csv(path, nrows=0).columns
    types = {c: str for c in header if c in RUN_TEXT_COLUMNS or c.startswith("env.")}
    return pd.read_csv(path, dtype={**types, **{c: "Int64" for c in RUN_OPTIONAL_INTS if c in header}})


def tile_table(columns) -> Table | None:
    """The tile table (:data:`TILE_TABLES`) whose id column is among ``columns`` (a header, a frame's columns);
    None for neither."""
    return next((table for table in TILE_TABLES.values() if table.columns[0] in columns), None)
