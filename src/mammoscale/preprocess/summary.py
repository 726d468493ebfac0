"""What stage 1 found, gathered over its shards: the decode errors, the counts, and what decoded.

Every shard's image table becomes ``results/qc/decode_errors.csv`` (the images that failed, with
their kind) and ``results/qc/preprocess_summary.json``: counts for the report's data QC, the
decoder (codec package and version) of every image, and the versions the preprocessing ran
with. :func:`check_failures` then refuses to build the cache on a set where too many failed.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pandas as pd

from mammoscale import files, provenance
from mammoscale.logs import tell
from mammoscale.preprocess.tiles import PreprocessError

log = logging.getLogger(__name__)

MISSING_FILE = "missing_file"
"""The manifest's reason for a listed image whose file is not there (a lost image, like a failed decode)."""


def losses(images: pd.DataFrame, excluded: pd.DataFrame) -> dict:
    """What every data source's summary counts of its losses: images decoded and failed (``images``' ``status``),
    files missing (the manifest's ``excluded`` rows of reason :data:`MISSING_FILE`), and the lost fraction
    :func:`check_failures` limits (lost = missing or failed, of every listed image)."""
    errors = images[images["status"] == "error"]
    missing = int((excluded["reason"] == MISSING_FILE).sum())
    lost = len(errors) + missing
    return {
        "images": int(len(images)),
        "decoded": int((images["status"] == "ok").sum()),
        "failed_images": int(len(errors)),
        "failed_fraction": round(len(errors) / len(images), 6) if len(images) else 0.0,
        "missing_files": missing,
        "lost_images": int(lost),
        "lost_fraction": round(lost / (len(images) + missing), 6) if len(images) + missing else 0.0,
        "errors_by_kind": dict(Counter(errors["error_kind"])),
    }


def summarise(
    images_csvs: list[Path | str], excluded_csv: Path | str, decode_errors_csv: Path | str, summary_json: Path | str
) -> dict:
    """Every shard's image rows and the manifest's exclusions -> decode_errors.csv and the counts.

    An image is *lost* when its file is missing (the manifest's ``missing_file``) or it fails to
    decode (any kind, an unreadable file included); ``lost_fraction`` is what
    ``cache.max_failure_fraction`` limits. Whenever anything was lost, one line says so on standard
    error as well as in the log.
    """
    images = pd.concat([files.IMAGE_TABLE.read(path) for path in images_csvs], ignore_index=True)
    excluded = files.EXCLUDED_TABLE.read(excluded_csv)
    errors = images[images["status"] == "error"]
    files.DECODE_ERROR_TABLE.write(errors.rename(columns={"path": "file"}), decode_errors_csv)
    ok = images[images["status"] == "ok"]
    failed_breasts = errors["breast_id"].nunique()
    summary = {
        **losses(images, excluded),
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
        "decoders": dict(Counter(ok["decoder"])),
        "decode_levels": {str(k): v for k, v in sorted(Counter(ok["decode_level"]).items())},
        "versions": {**provenance.versions(provenance.PREPROCESSING_PACKAGES), **provenance.host()},
    }
    files.write_json(summary, summary_json)
    log.info(
        "%d of %d images decoded (%s); %d breast(s) excluded for decode errors; %d flip disagreement(s); "
        "%d ROI fallback(s)",
        summary["decoded"],
        summary["images"],
        ", ".join(f"{n} by {name}" for name, n in summary["decoders"].items()) or "none",
        failed_breasts,
        summary["flip_disagreements"],
        summary["roi_fallbacks"],
    )
    if summary["lost_images"]:
        tell(
            f"{lost_of(summary)}; {summary['breasts_cached']} of "
            f"{summary['breasts']} breasts cached: see {decode_errors_csv} and {excluded_csv}"
        )
    return summary


def lost_of(summary: dict) -> str:
    """``3 of 167 images lost (missing_file 1, truncated 2)``: a summary's :func:`losses`, in words."""
    return f"{summary['lost_images']} of {summary['images'] + summary['missing_files']} images lost ({_kinds(summary)})"


def _kinds(summary: dict) -> str:
    kinds = {
        **({MISSING_FILE: summary["missing_files"]} if summary["missing_files"] else {}),
        **summary["errors_by_kind"],
    }
    return ", ".join(f"{kind} {n}" for kind, n in kinds.items())


def check_failures(summary_json: Path | str, decode_errors_csv: Path | str, *, max_failure_fraction: float) -> None:
    """Refuse to build on a set where too many images are lost: missing, unreadable or failed to decode."""
    summary = files.read_json(summary_json)
    if summary["lost_fraction"] > max_failure_fraction:
        raise PreprocessError(
            f"{summary['lost_images']} of {summary['images'] + summary['missing_files']} images "
            f"({100 * summary['lost_fraction']:.1f}%) are lost ({_kinds(summary)}), more than "
            f"cache.max_failure_fraction = {max_failure_fraction}: see {decode_errors_csv} and {files.EXCLUDED}"
        )
