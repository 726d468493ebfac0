"""The report's data QC section: what the data source listed, what was kept, decoded and cached, and what was lost
and why (every count from the manifest's ``counts.json`` and the cache's ``preprocess_summary.json``).
"""

from __future__ import annotations

from mammoscale import files, tasks
from mammoscale.report.html import image, items
from mammoscale.tasks import BREAST_CANCER


def _reduced(levels: dict | None) -> str | None:
    """``12 (level 1: 4, level 2: 8)`` from the summary's images per decode level."""
    if levels is None:
        return None
    reduced = {level: n for level, n in levels.items() if str(level) != "0"}
    detail = ", ".join(f"level {level}: {n}" for level, n in reduced.items())
    return f"{sum(reduced.values())}" + (f" ({detail})" if detail else "")


def section(counts: dict, preprocess: dict, contact_sheets: dict, task: str = BREAST_CANCER.name) -> str:
    """The data QC section of ``task``'s data source: a breast's (RSNA) or an image's (ChestX-ray14)."""
    unit = tasks.task(task).unit
    return (breasts if unit == "breast" else images)(counts, preprocess, contact_sheets)


def breasts(counts: dict, preprocess: dict, contact_sheets: dict) -> str:
    """Mammography: images and breasts listed, paired, decoded and cached; what was lost and why; contact sheets."""
    excluded = counts.get("excluded_by_reason", {})
    errors = preprocess.get("errors_by_kind", {})
    unused = counts.get("other_views_not_used", {})
    summary = {
        "images listed": counts.get("rows"),
        "patients": counts.get("patients"),
        "breasts (CC + MLO pairs)": counts.get("breasts"),
        "positive breasts": counts.get("positive_breasts"),
        "breasts cached": preprocess.get("breasts_cached"),
        "breasts lost to a decode error": preprocess.get("breasts_excluded_decode_error"),
        "images decoded": preprocess.get("decoded"),
        "images failed": preprocess.get("failed_images"),
        "flip disagreements (CSV laterality vs tissue side)": preprocess.get("flip_disagreements"),
        "ROI fallbacks (full frame kept)": preprocess.get("roi_fallbacks"),
        "images with clipped pixels": preprocess.get("clipped_images"),
        "constant images": preprocess.get("constant_images"),
        "missing files": preprocess.get("missing_files"),
        "images lost (missing or failed)": preprocess.get("lost_images"),
        "images decoded at a reduced JPEG 2000 level": _reduced(preprocess.get("decode_levels")),
    }
    sheets = "".join(
        '<figure class="sheet">'
        + image(path, f"contact sheet, image size {size}")
        + f"<figcaption>Contact sheet, {files.size_label(size)}: random tiles with their labels, CC left, MLO right."
        "</figcaption></figure>"
        for size, path in sorted(contact_sheets.items())
    )
    splits = counts.get("breasts_by_split", {})
    return (
        items(summary)
        + "<h3>Breasts by split</h3>"
        + items({k: f"{v} ({counts.get('positive_by_split', {}).get(k, 0)} positive)" for k, v in splits.items()})
        + "<h3>Exclusions by reason</h3>"
        + (items(excluded) if excluded else "<p>None.</p>")
        + "<h3>Decode errors by kind</h3>"
        + (items(errors) if errors else "<p>None.</p>")
        + "<h3>Views not used</h3>"
        + (items(unused) if unused else "<p>None.</p>")
        + sheets
    )


def images(counts: dict, preprocess: dict, contact_sheets: dict) -> str:
    """ChestX-ray14: images listed, kept and cached, images per finding and split; what was lost and why."""
    excluded = counts.get("excluded_by_reason", {})
    errors = preprocess.get("errors_by_kind", {})
    summary = {
        "rows of Data_Entry_2017.csv": counts.get("rows"),
        "patients": counts.get("patients"),
        "images kept": counts.get("images"),
        "images with a finding": counts.get("images_with_findings"),
        "images cached": preprocess.get("images_cached"),
        "images failed": preprocess.get("failed_images"),
        "missing files": preprocess.get("missing_files"),
        "images lost (missing or failed)": preprocess.get("lost_images"),
        "PNG modes decoded": ", ".join(f"{mode}: {n}" for mode, n in preprocess.get("modes", {}).items()) or None,
    }
    sheets = "".join(
        '<figure class="sheet">'
        + image(path, f"contact sheet, image size {size}")
        + f"<figcaption>Contact sheet, {files.size_label(size)}: random images with their findings.</figcaption>"
        "</figure>"
        for size, path in sorted(contact_sheets.items())
    )
    splits = counts.get("images_by_split", {})
    by_split = counts.get("positive_by_split", {})
    patients = counts.get("patients_by_split", {})
    return (
        items(summary)
        + "<h3>Images by split</h3>"
        + items(
            {k: f"{v} ({by_split.get(k, 0)} with a finding; {patients.get(k, 0)} patients)" for k, v in splits.items()}
        )
        + "<h3>Images per finding</h3>"
        + items(counts.get("findings", {}))
        + "<h3>Exclusions by reason</h3>"
        + (items(excluded) if excluded else "<p>None.</p>")
        + "<h3>Decode errors by kind</h3>"
        + (items(errors) if errors else "<p>None.</p>")
        + sheets
    )
