"""The decode audit: decode every image of an RSNA-layout dataset and summarise what was found.

Before hours of preprocessing and GPU time, a user wants to know: does every listed file
exist and decode, with which transfer syntaxes, photometric interpretations and VOI
branches, and which files were clipped, constant or broken, and why. The result is one row
per ``train.csv`` row (nothing dropped: a row that cannot be decoded says why) and a JSON
summary of counts.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path

import pandas as pd

from mammoscale import dicom, files
from mammoscale.dataset.manifest import read_train_csv
from mammoscale.processes import map_isolated

log = logging.getLogger(__name__)


def summarise_dataset(
    root: Path | str, *, workers: int = 1, max_pixels: int = dicom.DEFAULT_MAX_PIXELS
) -> tuple[pd.DataFrame, dict]:
    """Decode every image listed in ``root/train.csv``; return the per-image table and counts."""
    root = Path(root)
    table = read_train_csv(root, required=("patient_id", "image_id"))
    jobs = [(root, str(r.patient_id), str(r.image_id), max_pixels) for r in table.itertuples(index=False)]
    log.info("decoding %d images listed in %s with %d worker(s)", len(jobs), root / "train.csv", workers)
    started = time.perf_counter()
    rows = []
    step = max(1, len(jobs) // 10)
    for done, row in enumerate(map_isolated(_summarise_one, jobs, workers=workers, crashed=_crashed), 1):
        rows.append(row)
        _progress(done, len(jobs), step, started)
    summary = files.AUDIT_TABLE.frame(rows)
    counts = count(summary)
    counts["seconds"] = round(time.perf_counter() - started, 3)
    counts["unlisted_files"] = _unlisted_files(root, summary)
    log.info(
        "decoded %d of %d images in %.1f s; errors by kind: %s",
        counts["decoded"],
        counts["images"],
        counts["seconds"],
        counts["errors_by_kind"] or "none",
    )
    return summary, counts


def _crashed(job: tuple[Path, str, str, int], message: str) -> dict:
    """The row of an image whose decoding took its worker process down."""
    root, patient_id, image_id, _ = job
    row = {**dict.fromkeys(files.AUDIT_TABLE.columns, ""), "patient_id": patient_id, "image_id": image_id}
    path = files.image_path(root, patient_id, image_id)
    row.update(status="error", error_kind=dicom.CodecCrashError.kind, message=message)
    row["path"] = str(path.relative_to(root)) if path is not None else ""
    return row


def _summarise_one(job: tuple[Path, str, str, int]) -> dict:
    root, patient_id, image_id, max_pixels = job
    row = dict.fromkeys(files.AUDIT_TABLE.columns, "")
    row.update(patient_id=patient_id, image_id=image_id)
    path = files.image_path(root, patient_id, image_id)
    if path is None:
        row.update(
            status="error",
            error_kind="invalid_id",
            message=f"patient_id {patient_id!r} / image_id {image_id!r} must be integers",
        )
        return row
    row["path"] = str(path.relative_to(root))
    try:
        decoded = dicom.decode_with_report(path, max_pixels=max_pixels)
    except dicom.DicomError as exc:
        row.update(status="error", error_kind=exc.kind, message=exc.message)
        return row
    except Exception as exc:  # a bug met on this file: recorded as its error, the audit goes on
        log.warning("%s: unexpected error", path, exc_info=True)
        error = dicom.InternalError.of(path, exc)
        row.update(status="error", error_kind=error.kind, message=error.message)
        return row
    row.update(report_fields(decoded))
    return row


def report_fields(decoded: dicom.Decoded) -> dict:
    """The summary columns of one decoded image (status ``ok``)."""
    report = decoded.report
    return {
        "status": "ok",
        "error_kind": "",
        "message": "; ".join(report.notes),
        "transfer_syntax": report.transfer_syntax,
        "photometric": report.photometric,
        "bits_stored": report.bits_stored,
        "rows": report.shape[0],
        "columns": report.shape[1],
        "voi": report.voi,
        "rescaled": report.rescaled,
        "clipped_pixels": report.clipped_pixels,
        "constant": report.constant,
        "laterality_header": report.laterality,
        "view_header": report.view,
        "decoder": report.decoder,
        "mean_intensity": round(float(decoded.image.mean()), 3),
    }


def count(summary: pd.DataFrame) -> dict:
    """Counts a person reads first: how many decoded, errors by kind, and the variety of the set."""
    ok = summary[summary["status"] == "ok"]
    return {
        "images": int(len(summary)),
        "decoded": int(len(ok)),
        "errors": int((summary["status"] != "ok").sum()),
        "errors_by_kind": dict(Counter(summary.loc[summary["status"] != "ok", "error_kind"])),
        "transfer_syntaxes": dict(Counter(ok["transfer_syntax"])),
        "photometric": dict(Counter(ok["photometric"])),
        "bits_stored": {str(k): v for k, v in Counter(ok["bits_stored"]).items()},
        "voi": dict(Counter(ok["voi"])),
        "rescaled": int(ok["rescaled"].astype(bool).sum()),
        "clipped_images": int((ok["clipped_pixels"].astype(int) > 0).sum()),
        "constant_images": int(ok["constant"].astype(bool).sum()),
        "decoders": dict(Counter(ok["decoder"])),
    }


def _unlisted_files(root: Path, summary: pd.DataFrame) -> int:
    """DICOM files on disk that train.csv does not list (counted, so nothing is silently unused)."""
    images = root / files.IMAGES_DIR
    if not images.is_dir():
        return 0
    listed = set(summary["path"])
    return sum(1 for p in images.glob("*/*.dcm") if str(p.relative_to(root)) not in listed)


def _progress(done: int, total: int, step: int, started: float) -> None:
    if done % step == 0 or done == total:
        elapsed = time.perf_counter() - started
        log.info("%d/%d decoded (%.0f%%), %.1f images/s", done, total, 100 * done / total, done / max(elapsed, 1e-9))


def main(root: Path | str, audit_csv: Path | str, counts_json: Path | str, *, workers: int, max_pixels: int) -> dict:
    """Write the per-image table and the counts; the Snakemake rule ``decode_audit`` calls this."""
    summary, counts = summarise_dataset(root, workers=workers, max_pixels=max_pixels)
    files.AUDIT_TABLE.write(summary, audit_csv)
    files.write_json(counts, counts_json)
    return counts
