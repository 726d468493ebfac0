"""Stage 1 of preprocessing, one shard at a time: each breast's canonical CC and MLO views.

Stage 1 decodes each breast's CC and MLO once, orients them (tissue on the left), crops them
to the breast and stores them fitted into a half tile of the canonical size C (the largest
image size of the grid by default). Stage 2 (:mod:`mammoscale.preprocess.tiles`) turns them
into S x S tiles for each image size S <= C; adding an image size runs stage 2 for it alone
and decodes nothing.

A breast whose view fails to decode is left out of the cache and counted: the shard's image
table (``files.IMAGE_TABLE``) records every image, what was found and done to it, which
decoder ran, or its error (:mod:`mammoscale.preprocess.summary` gathers them).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np

from mammoscale import dicom, files
from mammoscale.config import defaults, schema
from mammoscale.dataset.audit import report_fields
from mammoscale.errors import UserError
from mammoscale.preprocess import levels, roi, tiling
from mammoscale.processes import map_isolated

log = logging.getLogger(__name__)

VIEWS = ("CC", "MLO")
CONSTANT_IMAGES = tuple(schema()["properties"]["preprocess"]["properties"]["constant_images"]["enum"])
"""What stage 1 may do with a constant image: the schema's choices."""
_PREPROCESS = defaults()["preprocess"]


class PreprocessError(UserError, RuntimeError):
    """Preprocessing cannot go on; the message says why and what to look at."""


@dataclasses.dataclass(frozen=True)
class ViewSettings:
    """How stage 1 makes a view; everything but the canonical size defaults to the configuration's."""

    canonical_size: int
    roi: roi.RoiSettings = roi.RoiSettings()
    trust_pixels_for_flip: bool = _PREPROCESS["trust_pixels_for_flip"]
    resample: str = _PREPROCESS["resample"]
    constant_images: str = _PREPROCESS["constant_images"]
    """``exclude`` (a decode error) or ``blank`` (a black view, an ROI fallback)."""
    max_decode_level: int = _PREPROCESS["max_decode_level"]
    """The coarsest JPEG 2000 resolution level stage 1 may decode at (0: always the full image)."""
    max_pixels: int = defaults()["decode"]["max_pixels"]

    @classmethod
    def from_config(cls, config: dict, canonical_size: int) -> ViewSettings:
        """The settings of a complete config (:func:`mammoscale.config.load`)."""
        preprocess = config["preprocess"]
        return cls(
            canonical_size=canonical_size,
            roi=roi.RoiSettings(**preprocess["roi"]),
            trust_pixels_for_flip=preprocess["trust_pixels_for_flip"],
            resample=preprocess["resample"],
            constant_images=preprocess["constant_images"],
            max_decode_level=preprocess["max_decode_level"],
            max_pixels=config["decode"]["max_pixels"],
        )

    def __post_init__(self):
        if self.canonical_size < 2 or self.canonical_size % 2:
            raise ValueError(f"canonical size must be an even number >= 2, got {self.canonical_size}")
        if self.resample not in tiling.RESAMPLE:
            raise ValueError(f"resample must be one of {', '.join(tiling.RESAMPLE)}, not {self.resample!r}")
        if self.constant_images not in CONSTANT_IMAGES:
            raise ValueError(
                f"constant_images must be one of {', '.join(CONSTANT_IMAGES)}, not {self.constant_images!r}"
            )


# stage 1


def _identity(root: Path, breast: dict, view: str) -> dict:
    """Which image of which breast a row of the image table is about."""
    image_id = breast[f"{view.lower()}_image_id"]
    path = files.image_path(root, breast["patient_id"], image_id)
    return {
        "breast_id": breast["breast_id"],
        "view": view,
        "patient_id": breast["patient_id"],
        "image_id": image_id,
        "path": str(path.relative_to(root)),
    }


def process_breast(root: Path, breast: dict, settings: ViewSettings) -> tuple[list[np.ndarray] | None, list[dict]]:
    """Decode, orient and crop both views of one breast: the canonical views (None on failure), a row per image.

    Whatever one image's processing raises is that image's recorded error: a :class:`dicom.DicomError` with its
    kind, anything else (a bug met on this image) as ``internal_error``, its traceback in the log. The shard goes on.
    """
    views, rows = [], []
    for view in VIEWS:
        row = {**dict.fromkeys(files.IMAGE_TABLE.columns, ""), **_identity(root, breast, view)}
        path = root / row["path"]
        try:
            canonical, fields = _canonical_view(path, breast["laterality"], settings)
        except dicom.DicomError as exc:
            error = exc
        except Exception as exc:
            error = dicom.InternalError.of(path, exc)
            log.warning("%s: %s", row["path"], error.message, exc_info=True)
        else:
            views.append(canonical)
            rows.append({**row, **fields})
            continue
        rows.append({**row, "status": "error", "error_kind": error.kind, "message": error.message})
    return (views if len(views) == len(VIEWS) else None), rows


def _canonical_view(path: Path, laterality: str, settings: ViewSettings) -> tuple[np.ndarray, dict]:
    """One image's canonical view and its image-table fields (what was found and done)."""
    decoded, located, image = levels.decode_view(path, laterality, settings)
    found = located.roi
    mask = found.mask if settings.roi.mask_outside else None
    canonical = tiling.canonical_view(
        image, mask, settings.canonical_size, settings.resample, box=found.box, flip=located.flip
    )
    fields = {
        **report_fields(decoded),
        "flipped": located.flip,
        "flip_disagrees": located.disagrees,
        "roi_fallback": found.fallback,
        "roi_box": " ".join(map(str, _full_resolution(found.box, decoded.report))),
        "decode_level": decoded.report.level,
        "tissue_fraction": round(found.tissue_fraction, 4),
    }
    return canonical, fields


def _process(job: tuple[Path, dict, ViewSettings]):
    return process_breast(*job)


def _full_resolution(box: tuple[int, int, int, int], report: dicom.DecodeReport) -> tuple[int, int, int, int]:
    """A box of an image decoded at ``report.level``, in the full image's pixels (within its Rows and Columns)."""
    rows, cols = report.shape
    r0, c0, r1, c1 = (v << report.level for v in box)
    return r0, c0, min(r1, rows), min(c1, cols)


def _crashed(job: tuple[Path, dict, ViewSettings], message: str):
    """The rows of a breast whose decoding took its worker process down: both images, the same error."""
    root, breast, _ = job
    rows = [
        {
            **dict.fromkeys(files.IMAGE_TABLE.columns, ""),
            **_identity(root, breast, view),
            "status": "error",
            "error_kind": dicom.CodecCrashError.kind,
            "message": f"{message} (this breast's CC or MLO)",
        }
        for view in VIEWS
    ]
    return None, rows


def _map_breasts(jobs: list, workers: int):
    """process_breast over ``jobs`` in order, in ``workers`` processes; a crashed worker costs one breast."""
    return map_isolated(_process, jobs, workers=workers, crashed=_crashed)


def build_views(
    root: Path | str,
    breasts_csv: Path | str,
    shard: int,
    out_npy: Path | str,
    out_csv: Path | str,
    out_images_csv: Path | str,
    *,
    settings: ViewSettings,
    workers: int = 1,
) -> dict:
    """Stage 1 for one shard: canonical views of its breasts, their index, and a row per image."""
    root, out_npy = Path(root), Path(out_npy)
    breasts = files.BREAST_TABLE.read(breasts_csv)
    mine = breasts[breasts["shard"] == shard].to_dict("records")
    size = settings.canonical_size
    log.info("shard %d: %d breasts, canonical views %d x %d, %d worker(s)", shard, len(mine), size, size // 2, workers)
    started, step = time.perf_counter(), max(1, len(mine) // 10)
    index, images = [], []
    with files.atomic_array(out_npy, (len(mine), 2, size, size // 2)) as array:
        results = _map_breasts([(root, breast, settings) for breast in mine], workers)
        for done, (breast, (views, rows)) in enumerate(zip(mine, results, strict=True), 1):
            images.extend(rows)
            if views is not None:
                offset = len(index)
                for k, view in enumerate(views):
                    array[offset, k, : view.shape[0], : view.shape[1]] = view
                index.append(
                    {
                        **{c: breast[c] for c in ("breast_id", "patient_id", "laterality", "label", "split", "shard")},
                        "offset": offset,
                        "cc_rows": views[0].shape[0],
                        "cc_cols": views[0].shape[1],
                        "mlo_rows": views[1].shape[0],
                        "mlo_cols": views[1].shape[1],
                        "crc32": files.crc32(array[offset]),
                    }
                )
            if done % step == 0 or done == len(mine):
                elapsed = time.perf_counter() - started
                log.info(
                    "shard %d: %d/%d breasts (%.0f%%), %.2f breasts/s",
                    shard,
                    done,
                    len(mine),
                    100 * done / len(mine),
                    done / max(elapsed, 1e-9),
                )
    files.IMAGE_TABLE.write(files.IMAGE_TABLE.frame(images), out_images_csv)
    files.VIEW_TABLE.write(files.VIEW_TABLE.frame(index), out_csv)
    failed = sum(1 for r in images if r["status"] == "error")
    log.info("shard %d: %d of %d breasts cached, %d image(s) failed to decode", shard, len(index), len(mine), failed)
    return {"breasts": len(mine), "cached": len(index), "failed_images": failed}
