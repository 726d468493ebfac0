"""The study's preprocessing, shard by shard: canonical views (stage 1), then tiles (stage 2).

Stage 1 decodes each breast's CC and MLO once, orients them (tissue on the left), crops them
to the breast and stores them fitted into a half tile of the canonical size C (the largest
image size of the grid by default). Stage 2 turns canonical views into S x S tiles for one
image size S <= C; adding an image size runs stage 2 for it alone and decodes nothing.

A breast whose view fails to decode is left out of the cache and counted; the image's error
is recorded in ``results/qc/decode_errors.csv``. When the share of failed images exceeds
``cache.max_failure_fraction``, building the index fails with a message saying so, and the
error table stays for the user to read.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from mammoscale.errors import UserError

from mammoscale import cache, dicom, qc, roi, tiling
from mammoscale.manifest import image_path

log = logging.getLogger(__name__)

VIEWS = ("CC", "MLO")
VIEW_INDEX_COLUMNS = (
    "breast_id", "patient_id", "laterality", "label", "split", "shard", "offset",
    "cc_rows", "cc_cols", "mlo_rows", "mlo_cols", "crc32",
)
IMAGE_COLUMNS = (
    "breast_id", "view", "patient_id", "image_id", "path", *qc.SUMMARY_COLUMNS[3:],
    "flipped", "flip_disagrees", "roi_fallback", "roi_box", "tissue_fraction",
)
DECODE_ERROR_COLUMNS = ("file", "error_kind", "message", "breast_id", "view", "patient_id", "image_id")


class PreprocessError(UserError, RuntimeError):
    """Preprocessing cannot go on; the message says why and what to look at."""


@dataclasses.dataclass(frozen=True)
class ViewSettings:
    canonical_size: int
    roi: roi.RoiSettings = roi.RoiSettings()
    trust_pixels_for_flip: bool = False
    resample: str = "area"
    max_pixels: int = dicom.DEFAULT_MAX_PIXELS

    def __post_init__(self):
        if self.canonical_size < 2 or self.canonical_size % 2:
            raise ValueError(f"canonical size must be an even number >= 2, got {self.canonical_size}")
        if self.resample not in tiling.RESAMPLE:
            raise ValueError(f"resample must be one of {', '.join(tiling.RESAMPLE)}, not {self.resample!r}")


# stage 1


def process_breast(root: Path, breast: dict, settings: ViewSettings) -> tuple[list[np.ndarray] | None, list[dict]]:
    """Decode, orient and crop both views of one breast; return the canonical views (None on failure) and a row per image."""
    views, rows = [], []
    for view in VIEWS:
        image_id = breast[f"{view.lower()}_image_id"]
        path = image_path(root, str(breast["patient_id"]), str(image_id))
        row = dict.fromkeys(IMAGE_COLUMNS, "")
        row.update(breast_id=breast["breast_id"], view=view, patient_id=breast["patient_id"], image_id=image_id,
                   path=str(path.relative_to(root)))
        try:
            decoded = dicom.decode_with_report(path, max_pixels=settings.max_pixels)
        except dicom.DicomError as exc:
            row.update(status="error", error_kind=exc.kind, message=exc.message)
            rows.append(row)
            continue
        row.update(qc.report_fields(decoded))
        located = roi.locate(decoded.image, breast["laterality"], settings.roi,
                             trust_pixels=settings.trust_pixels_for_flip)
        found = located.roi
        mask = found.mask if settings.roi.mask_outside else None
        views.append(tiling.canonical_view(decoded.image, mask, settings.canonical_size, settings.resample,
                                           box=found.box, flip=located.flip))
        row.update(flipped=located.flip, flip_disagrees=located.disagrees, roi_fallback=found.fallback,
                   roi_box=" ".join(map(str, found.box)), tissue_fraction=round(found.tissue_fraction, 4))
        rows.append(row)
    return (views if len(views) == len(VIEWS) else None), rows


def _process(job: tuple[Path, dict, ViewSettings]):
    return process_breast(*job)


def _map_breasts(jobs: list, workers: int):
    """process_breast over ``jobs`` in order, in ``workers`` processes."""
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            yield from pool.map(_process, jobs, chunksize=max(1, len(jobs) // (4 * workers)))
    else:
        yield from map(_process, jobs)


def build_views(root: Path | str, breasts_csv: Path | str, shard: int, out_npy: Path | str, out_csv: Path | str,
                out_images_csv: Path | str, *, settings: ViewSettings, workers: int = 1) -> dict:
    """Stage 1 for one shard: canonical views of its breasts, their index, and a row per image."""
    root, out_npy = Path(root), Path(out_npy)
    breasts = pd.read_csv(breasts_csv, dtype={"breast_id": str, "split": str, "laterality": str})
    mine = breasts[breasts["shard"] == shard].to_dict("records")
    size = settings.canonical_size
    log.info("shard %d: %d breasts, canonical views %d x %d, %d worker(s)", shard, len(mine), size, size // 2, workers)
    started, step = time.perf_counter(), max(1, len(mine) // 10)
    index, images = [], []
    with cache.atomic_array(out_npy, (len(mine), 2, size, size // 2)) as array:
        results = _map_breasts([(root, breast, settings) for breast in mine], workers)
        for done, (breast, (views, rows)) in enumerate(zip(mine, results, strict=True), 1):
            images.extend(rows)
            if views is not None:
                offset = len(index)
                for k, view in enumerate(views):
                    array[offset, k, : view.shape[0], : view.shape[1]] = view
                index.append({
                    **{c: breast[c] for c in ("breast_id", "patient_id", "laterality", "label", "split", "shard")},
                    "offset": offset,
                    "cc_rows": views[0].shape[0], "cc_cols": views[0].shape[1],
                    "mlo_rows": views[1].shape[0], "mlo_cols": views[1].shape[1],
                    "crc32": cache.crc32(array[offset]),
                })
            if done % step == 0 or done == len(mine):
                elapsed = time.perf_counter() - started
                log.info("shard %d: %d/%d breasts (%.0f%%), %.2f breasts/s", shard, done, len(mine),
                         100 * done / len(mine), done / max(elapsed, 1e-9))
    cache.atomic_csv(pd.DataFrame(images, columns=list(IMAGE_COLUMNS)), Path(out_images_csv))
    cache.atomic_csv(pd.DataFrame(index, columns=list(VIEW_INDEX_COLUMNS)), Path(out_csv))
    failed = sum(1 for r in images if r["status"] == "error")
    log.info("shard %d: %d of %d breasts cached, %d image(s) failed to decode", shard, len(index), len(mine), failed)
    return {"breasts": len(mine), "cached": len(index), "failed_images": failed}


# stage 2


def build_tiles(views_npy: Path | str, views_csv: Path | str, out_npy: Path | str, out_csv: Path | str, *,
                image_size: int, resample: str = "area") -> int:
    """Stage 2 for one shard and size: S x S tiles from the shard's canonical views."""
    views_npy, out_npy = Path(views_npy), Path(out_npy)
    index = pd.read_csv(views_csv, dtype={"breast_id": str, "split": str, "laterality": str})
    views = np.load(views_npy, mmap_mode="r") if len(index) else None
    if views is not None and image_size > views.shape[2]:
        raise PreprocessError(f"image size {image_size} is larger than the canonical views ({views.shape[2]}): raise "
                              "cache.canonical_size (or leave it unset: the largest grid size) and rebuild")
    rows = []
    with cache.atomic_array(out_npy, (len(index), image_size, image_size)) as array:
        for i, r in enumerate(index.itertuples(index=False)):
            cc = views[r.offset, 0, : r.cc_rows, : r.cc_cols]
            mlo = views[r.offset, 1, : r.mlo_rows, : r.mlo_cols]
            array[i] = tiling.tile(np.ascontiguousarray(cc), np.ascontiguousarray(mlo), image_size, resample)
            rows.append({"breast_id": r.breast_id, "patient_id": r.patient_id, "laterality": r.laterality,
                         "label": r.label, "split": r.split, "shard": r.shard, "file": out_npy.name, "offset": i,
                         "crc32": cache.crc32(array[i])})
    digest = cache.sha256_file(out_npy)
    frame = pd.DataFrame(rows, columns=[c for c in cache.TILE_INDEX_COLUMNS if c != "shard_sha256"])
    frame["shard_sha256"] = digest
    cache.atomic_csv(frame, Path(out_csv))
    log.info("%s: %d tiles of %d x %d", out_npy, len(rows), image_size, image_size)
    return len(rows)


# gathering


def gather_qc(images_csvs: list[Path | str], decode_errors_csv: Path | str, summary_json: Path | str) -> dict:
    """Every shard's image rows -> decode_errors.csv and the preprocessing counts."""
    images = pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False) for p in images_csvs], ignore_index=True)
    errors = images[images["status"] == "error"]
    decode_errors = errors.rename(columns={"path": "file"})[list(DECODE_ERROR_COLUMNS)]
    cache.atomic_csv(decode_errors, Path(decode_errors_csv))
    ok = images[images["status"] == "ok"]
    failed_breasts = errors["breast_id"].nunique()
    summary = {
        "images": int(len(images)),
        "decoded": int(len(ok)),
        "failed_images": int(len(errors)),
        "failed_fraction": round(len(errors) / len(images), 6) if len(images) else 0.0,
        "errors_by_kind": dict(Counter(errors["error_kind"])),
        "breasts": int(images["breast_id"].nunique()),
        "breasts_cached": int(images["breast_id"].nunique() - failed_breasts),
        "breasts_excluded_decode_error": int(failed_breasts),
        "flip_disagreements": int((ok["flip_disagrees"] == "True").sum()),
        "roi_fallbacks": int((ok["roi_fallback"] == "True").sum()),
        "clipped_images": int((ok["clipped_pixels"].astype(int) > 0).sum()),
        "constant_images": int((ok["constant"] == "True").sum()),
        "transfer_syntaxes": dict(Counter(ok["transfer_syntax"])),
        "photometric": dict(Counter(ok["photometric"])),
        "voi": dict(Counter(ok["voi"])),
    }
    Path(summary_json).write_text(json.dumps(summary, indent=2) + "\n")
    log.info("%d of %d images decoded; %d breast(s) excluded for decode errors; %d flip disagreement(s); "
             "%d ROI fallback(s)", summary["decoded"], summary["images"], failed_breasts,
             summary["flip_disagreements"], summary["roi_fallbacks"])
    return summary


def check_failures(summary_json: Path | str, decode_errors_csv: Path | str, *, max_failure_fraction: float) -> None:
    """Refuse to build on a set where too many images failed to decode."""
    summary = json.loads(Path(summary_json).read_text())
    if summary["failed_fraction"] > max_failure_fraction:
        raise PreprocessError(
            f"{summary['failed_images']} of {summary['images']} images ({100 * summary['failed_fraction']:.1f}%) failed "
            f"to decode, more than cache.max_failure_fraction = {max_failure_fraction}: see {decode_errors_csv} "
            f"(errors by kind: {summary['errors_by_kind']})"
        )


def gather_index(shard_csvs: list[Path | str], index_csv: Path | str) -> int:
    """Every shard's tile rows -> the size's index.csv, read by cache.open_tiles."""
    frames = [pd.read_csv(p, dtype={"breast_id": str, "split": str, "file": str, "shard_sha256": str})
              for p in shard_csvs]
    index = pd.concat(frames, ignore_index=True)[list(cache.TILE_INDEX_COLUMNS)]
    cache.atomic_csv(index, Path(index_csv))
    log.info("%s: %d tiles in %d shards", index_csv, len(index), len(frames))
    return len(index)


def build_cache(data_root: Path | str, out: Path | str, *, image_sizes: tuple[int, ...], n_shards: int = 2,
                split_fractions: dict[str, float] | None = None, seed: int = 1, workers: int = 1,
                settings: ViewSettings | None = None) -> Path:
    """The whole chain in one process, manifest to index, under ``out``; returns the cache root.

    The workflow runs these same steps as separate jobs (rules/preprocess.smk); this is for
    tests, benchmarks and notebooks that need a cache without Snakemake.
    """
    from mammoscale import manifest

    out = Path(out)
    settings = settings or ViewSettings(canonical_size=max(image_sizes))
    breasts_csv = out / "manifest" / "breasts.csv"
    manifest.main(data_root, breasts_csv, out / "manifest" / "excluded.csv", out / "manifest" / "counts.json",
                  split_fractions=split_fractions or {"train": 0.6, "val": 0.2, "test": 0.2}, seed=seed,
                  n_shards=n_shards)
    root = out / "cache"
    names = [f"shard{shard:04d}" for shard in range(n_shards)]
    for shard, name in enumerate(names):
        views = root / "views"
        build_views(data_root, breasts_csv, shard, views / f"{name}.npy", views / f"{name}.csv",
                    views / f"{name}.images.csv", settings=settings, workers=workers)
        for size in image_sizes:
            build_tiles(views / f"{name}.npy", views / f"{name}.csv", root / f"img{size}" / f"{name}.npy",
                        root / f"img{size}" / f"{name}.csv", image_size=size)
    gather_qc([root / "views" / f"{n}.images.csv" for n in names], out / "qc" / "decode_errors.csv",
              out / "qc" / "summary.json")
    for size in image_sizes:
        gather_index([root / f"img{size}" / f"{n}.csv" for n in names], root / f"img{size}" / "index.csv")
    return root
