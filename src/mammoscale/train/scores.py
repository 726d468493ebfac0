"""Model quality on the validation split: per breast for mammography, per image and finding for chest X-rays.

- ``breast-cancer``: a tile is one breast (CC | MLO), so a breast's score is its tile's probability; should a
  breast appear more than once (tiles of the same breast from a re-run shard), its probabilities are averaged
  first, so every breast counts once. ROC AUC and the RSNA challenge's probabilistic F1, each with its bootstrap
  interval over patients.
- ``chest-findings``: each image has one probability per finding (a sigmoid each). Each finding's AUROC with its
  interval, and ``val_auc`` their mean over the findings with both classes in the split (CheXNet's summary), its
  interval from the same patient resamples (:func:`mammoscale.stats.label_aucs`); a finding without a positive
  (or a negative) is left out of the mean, its entry null. ``val_pf1`` is null: the probabilistic F1 is RSNA's
  metric of one label, not CheXNet's.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from mammoscale import files, records, stats
from mammoscale.stats import probabilistic_f1, roc_auc  # noqa: F401 (the metrics, where the cell scores)
from mammoscale.tasks import Task


def per_breast(patient_id, laterality, label, probability) -> pd.DataFrame:
    """One row per (patient_id, laterality): the mean probability and the breast's label."""
    frame = pd.DataFrame(
        {"patient_id": patient_id, "laterality": laterality, "label": label, "probability": probability}
    )
    return frame.groupby(["patient_id", "laterality"], as_index=False).agg(
        label=("label", "max"), probability=("probability", "mean")
    )


def per_image(patient_id, image_id, labels, probabilities, findings: tuple[str, ...]) -> pd.DataFrame:
    """One row per image and finding (:data:`mammoscale.files.FINDING_PREDICTION_TABLE`), ``labels`` and
    ``probabilities`` ``(images, findings)``; an image seen twice has its probabilities averaged."""
    labels, probabilities = np.asarray(labels), np.asarray(probabilities, dtype=np.float64)
    frame = pd.DataFrame(
        {
            "patient_id": np.repeat(np.asarray(patient_id).astype(str), len(findings)),
            "image_id": np.repeat(np.asarray(image_id).astype(str), len(findings)),
            "finding": np.tile(np.asarray(findings, dtype=object), len(labels)),
            "label": labels.reshape(-1).astype(np.int64),
            "probability": probabilities.reshape(-1),
        }
    )
    keys = ["patient_id", "image_id", "finding"]
    return frame.groupby(keys, as_index=False, sort=False).agg(
        label=("label", "max"), probability=("probability", "mean")
    )


QUALITY_KEYS = (
    "val_auc",
    "val_auc_ci_low",
    "val_auc_ci_high",
    "val_pf1",
    "val_pf1_ci_low",
    "val_pf1_ci_high",
    "val_breasts",
    "val_positive_breasts",
    "val_images",
    "val_positive_images",
    "val_auc_per_label",
)
"""The record's keys of model quality: each metric with its bootstrap interval, what it was scored on, and (several
labels) each label's AUC."""


def unscored() -> dict:
    """The quality keys of a cell that scored nothing (throughput mode, or no validation split)."""
    return dict.fromkeys(QUALITY_KEYS)


def evaluate(breasts: pd.DataFrame) -> dict[str, float | int | None]:
    """AUC and pF1 of a per-breast frame with their bootstrap intervals over patients, rounded for the record;
    NaN-free."""
    result = {
        **unscored(),
        "val_breasts": len(breasts),
        "val_positive_breasts": int(breasts["label"].astype(bool).sum()),
    }
    args = (breasts["patient_id"].to_numpy(), breasts["label"].to_numpy(), breasts["probability"].to_numpy())
    for metric in stats.METRICS:
        low, high = stats.quality_ci(metric, *args)
        result[f"val_{metric}"] = _finite(stats.METRICS[metric](*args[1:]))
        result[f"val_{metric}_ci_low"], result[f"val_{metric}_ci_high"] = _finite(low), _finite(high)
    return result


def evaluate_findings(images: pd.DataFrame, findings: tuple[str, ...]) -> dict:
    """Each finding's AUROC and their mean (``val_auc``) with intervals over patients, from a per-image-and-finding
    frame (:func:`per_image`, or ``predictions.csv`` read back); rounded for the record, NaN-free."""
    ids, labels, probabilities = files.finding_matrices(images, findings)
    result = stats.label_aucs(ids["patient_id"].to_numpy(), labels, probabilities)
    per_label = {
        finding: dict(zip(records.label_keys(), (*map(_finite, values), positives)))
        for finding, *values, positives in zip(findings, result.auc, result.ci_low, result.ci_high, result.positives)
    }
    return {
        **unscored(),
        "val_auc": _finite(result.mean),
        "val_auc_ci_low": _finite(result.mean_ci_low),
        "val_auc_ci_high": _finite(result.mean_ci_high),
        "val_images": len(ids),
        "val_positive_images": int(labels.any(axis=1).sum()),
        "val_auc_per_label": per_label,
    }


def left_out(result: dict) -> list[str]:
    """The labels a multi-label result could not score (one class only in the split): out of ``val_auc``'s mean."""
    return [name for name, entry in (result.get("val_auc_per_label") or {}).items() if entry["auc"] is None]


def score(task: Task, index: pd.DataFrame, probabilities: np.ndarray) -> tuple[pd.DataFrame, dict]:
    """The validation split's predictions as ``predictions.csv`` holds them (:func:`prediction_table`) and their
    quality keys: ``index`` the tile index rows scored, ``probabilities`` one row each (one column per label)."""
    if task.multilabel:
        labels = index[list(task.labels)].to_numpy()
        images = per_image(index["patient_id"], index["image_id"], labels, probabilities, task.labels)
        return images, evaluate_findings(images, task.labels)
    breasts = per_breast(
        index["patient_id"].to_numpy(), index["laterality"].to_numpy(), index["label"].to_numpy(), probabilities
    )
    return breasts, evaluate(breasts)


def prediction_table(task: Task) -> files.Table:
    """What ``predictions.csv`` holds for ``task``: a row per breast, or per image and finding."""
    return files.prediction_table(task.multilabel)


def describe(task: Task, result: dict) -> str:
    """The validation line of a cell's log."""
    interval = "%.0f%% intervals, patients resampled" % (100 * stats.CONFIDENCE)
    auc = f"{result['val_auc']} [{result['val_auc_ci_low']}, {result['val_auc_ci_high']}]"
    if not task.multilabel:
        pf1 = f"{result['val_pf1']} [{result['val_pf1_ci_low']}, {result['val_pf1_ci_high']}]"
        return f"validation: {result['val_breasts']} breasts, AUC {auc}, pF1 {pf1} ({interval})"
    missing = left_out(result)
    out = f"; left out of the mean (one class only): {', '.join(missing)}" if missing else ""
    return (
        f"validation: {result['val_images']} images ({result['val_positive_images']} with a finding), mean AUROC "
        f"{auc} over {len(task.labels) - len(missing)} findings ({interval}){out}"
    )


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 6)
