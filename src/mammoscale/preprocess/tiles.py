"""Stage 2 of preprocessing, one shard and image size at a time: S x S tiles, then the size's index.

A tile is S x S uint8: the CC view in the left half, the MLO view in the right
(:func:`mammoscale.preprocess.tiling.tile`). Each tile row carries the crc32 of the tile and
the sha256 of its shard file, so a copy (or a suspect disk) can be verified
(:mod:`mammoscale.cache`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from mammoscale import files
from mammoscale.cache import REBUILD_TILES, REBUILD_VIEWS, write_index
from mammoscale.config import defaults
from mammoscale.errors import UserError
from mammoscale.preprocess import tiling

log = logging.getLogger(__name__)


class PreprocessError(UserError, RuntimeError):
    """Preprocessing cannot go on; the message says why and what to look at."""


def build_tiles(
    views_npy: Path | str,
    views_csv: Path | str,
    out_npy: Path | str,
    out_csv: Path | str,
    *,
    image_size: int,
    resample: str = defaults()["preprocess"]["resample"],
) -> int:
    """Stage 2 for one shard and size: S x S tiles from the shard's canonical views."""
    views_npy, out_npy = Path(views_npy), Path(out_npy)
    index = files.VIEW_TABLE.read(views_csv)
    views = np.load(views_npy, mmap_mode="r") if len(index) else None
    if views is not None and image_size > views.shape[2]:
        raise PreprocessError(
            f"image size {image_size} is larger than the canonical views ({views.shape[2]}): raise "
            "cache.canonical_size (or leave it unset: the largest grid size) and rebuild"
        )
    rows = []
    with files.atomic_array(out_npy, (len(index), image_size, image_size)) as array:
        for i, r in enumerate(index.itertuples(index=False)):
            if files.crc32(views[r.offset]) != r.crc32:
                raise PreprocessError(
                    f"{views_npy}: the views of breast {r.breast_id} do not match their crc32: the file changed "
                    f"after it was written. Rebuild the views: {REBUILD_VIEWS}"
                )
            cc = views[r.offset, 0, : r.cc_rows, : r.cc_cols]
            mlo = views[r.offset, 1, : r.mlo_rows, : r.mlo_cols]
            array[i] = tiling.tile(np.ascontiguousarray(cc), np.ascontiguousarray(mlo), image_size, resample)
            rows.append(
                {
                    "breast_id": r.breast_id,
                    "patient_id": r.patient_id,
                    "laterality": r.laterality,
                    "label": r.label,
                    "split": r.split,
                    "shard": r.shard,
                    "file": out_npy.name,
                    "offset": i,
                    "crc32": files.crc32(array[i]),
                }
            )
    frame = files.TILE_TABLE.frame(rows)
    frame["shard_sha256"] = files.sha256_file(out_npy)
    files.TILE_TABLE.write(frame, out_csv)
    log.info("%s: %d tiles of %d x %d", out_npy, len(rows), image_size, image_size)
    return len(rows)


def gather_index(
    shard_csvs: list[Path | str],
    index_csv: Path | str,
    shard_npys: list[Path | str],
    check_json: Path | str,
    *,
    breasts_csv: Path | str | None = None,
    decode_errors_csv: Path | str | None = None,
) -> int:
    """Every shard's tile rows -> the size's index.csv and its check, read by :func:`mammoscale.cache.open_tiles`.

    Each shard file's sha256 is computed from its bytes and must equal the one stage 2 recorded
    when it wrote the file: a shard changed since is refused, never indexed. Given the manifest
    (``breasts_csv``) and ``decode_errors_csv``, the index must hold every breast the manifest put in
    each split, less those whose images failed to decode, and no other.
    """
    index = read_shards(shard_csvs, shard_npys, files.TILE_TABLE)
    if breasts_csv is not None:
        breasts = files.BREAST_TABLE.read(breasts_csv, columns=("breast_id", "split"))
        failed = () if decode_errors_csv is None else files.DECODE_ERROR_TABLE.read(decode_errors_csv)["breast_id"]
        check_splits(index, breasts, failed, "breast_id", manifest=breasts_csv, stage=("views", REBUILD_VIEWS))
    write_index(index, index_csv, check_json)
    return len(index)


def read_shards(shard_csvs: list[Path | str], shard_npys: list[Path | str], table: files.Table) -> pd.DataFrame:
    """Every shard's tile rows (``table``'s), each shard file's sha256 computed from its bytes and equal to the one
    recorded when it was written: a shard changed since is refused, never indexed."""
    frames = []
    for csv, npy in zip(shard_csvs, shard_npys, strict=True):
        frame = table.read(csv)
        actual = files.sha256_file(npy)
        recorded = set(frame["shard_sha256"])
        if recorded and recorded != {actual}:
            raise PreprocessError(
                f"{npy}: sha256 {actual[:12]}... is not the {next(iter(recorded))[:12]}... recorded when it was "
                f"written: the file changed since. Rebuild the tiles: {REBUILD_TILES}"
            )
        frames.append(frame)
    log.info("%d tiles in %d shards, every shard's sha256 checked", sum(map(len, frames)), len(frames))
    return pd.concat(frames, ignore_index=True)


def check_splits(
    index: pd.DataFrame, manifest_rows: pd.DataFrame, failed, key: str, *, manifest: Path | str, stage: tuple[str, str]
) -> None:
    """Each split of the index holds the manifest's examples (``key``: ``breast_id``, ``image_id``) of that split
    less those whose images ``failed`` to decode, and nothing else; ``stage``: what to rebuild when not, and how."""
    expected = manifest_rows[~manifest_rows[key].isin(set(failed))]
    what, rebuild = stage
    unit = key.removesuffix("_id") + "s"
    for split in files.SPLITS:
        want = set(expected.loc[expected["split"] == split, key])
        have = set(index.loc[index["split"] == split, key])
        if want != have:
            lost, foreign = sorted(want - have), sorted(have - want)
            raise PreprocessError(
                f"the {split} split of the tiles holds {len(have)} {unit}; the manifest ({manifest}) less the decode "
                f"errors puts {len(want)} there ({len(lost)} missing, e.g. {lost[:3]}; {len(foreign)} not the "
                f"manifest's, e.g. {foreign[:3]}): the {what} no longer match the manifest. Rebuild the {what}: "
                f"{rebuild}"
            )
