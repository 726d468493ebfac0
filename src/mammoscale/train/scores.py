"""Model quality per breast: ROC AUC and the RSNA challenge's probabilistic F1.

A tile is one breast (CC | MLO), so a breast's score is its tile's probability; should a
breast appear more than once (tiles of the same breast from a re-run shard), its
probabilities are averaged first, so every breast counts once.
"""

from __future__ import annotations

import math

import pandas as pd

from mammoscale import stats
from mammoscale.stats import probabilistic_f1, roc_auc  # noqa: F401 (the metrics, where the cell scores)


def per_breast(patient_id, laterality, label, probability) -> pd.DataFrame:
    """One row per (patient_id, laterality): the mean probability and the breast's label."""
    frame = pd.DataFrame(
        {"patient_id": patient_id, "laterality": laterality, "label": label, "probability": probability}
    )
    return frame.groupby(["patient_id", "laterality"], as_index=False).agg(
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
)
"""The record's keys of model quality: each metric with its bootstrap interval, and what it was scored on."""


def unscored() -> dict:
    """The quality keys of a cell that scored nothing (throughput mode, or no validation split)."""
    return dict.fromkeys(QUALITY_KEYS)


def evaluate(breasts: pd.DataFrame) -> dict[str, float | int | None]:
    """AUC and pF1 of a per-breast frame with their bootstrap intervals over patients, rounded for the record;
    NaN-free."""
    result = {"val_breasts": len(breasts), "val_positive_breasts": int(breasts["label"].astype(bool).sum())}
    args = (breasts["patient_id"].to_numpy(), breasts["label"].to_numpy(), breasts["probability"].to_numpy())
    for metric in stats.METRICS:
        low, high = stats.quality_ci(metric, *args)
        result[f"val_{metric}"] = _finite(stats.METRICS[metric](*args[1:]))
        result[f"val_{metric}_ci_low"], result[f"val_{metric}_ci_high"] = _finite(low), _finite(high)
    return {key: result[key] for key in QUALITY_KEYS}


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 6)
