"""Model quality per breast: ROC AUC and the RSNA challenge's probabilistic F1.

A tile is one breast (CC | MLO), so a breast's score is its tile's probability; should a
breast appear more than once (tiles of the same breast from a re-run shard), its
probabilities are averaged first, so every breast counts once.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import rankdata


def per_breast(patient_id, laterality, label, probability) -> pd.DataFrame:
    """One row per (patient_id, laterality): the mean probability and the breast's label."""
    frame = pd.DataFrame(
        {"patient_id": patient_id, "laterality": laterality, "label": label, "probability": probability}
    )
    return frame.groupby(["patient_id", "laterality"], as_index=False).agg(
        label=("label", "max"), probability=("probability", "mean")
    )


def roc_auc(label, score) -> float | None:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks for ties); None with one class only."""
    label = np.asarray(label).astype(bool)
    score = np.asarray(score, dtype=np.float64)
    positives, negatives = int(label.sum()), int((~label).sum())
    if positives == 0 or negatives == 0:
        return None
    ranks = rankdata(score)
    u = ranks[label].sum() - positives * (positives + 1) / 2
    return float(u / (positives * negatives))


def probabilistic_f1(label, probability) -> float | None:
    """RSNA pF1: precision and recall with probabilities as fractional counts; None without positives.

    pTP = sum(p * y), pFP = sum(p * (1 - y)); precision = pTP / (pTP + pFP), recall = pTP / sum(y).
    """
    label = np.asarray(label, dtype=np.float64)
    probability = np.asarray(probability, dtype=np.float64)
    positives = label.sum()
    if positives == 0:
        return None
    true_pos = float((probability * label).sum())
    predicted = float(probability.sum())
    if true_pos == 0 or predicted == 0:
        return 0.0
    precision, recall = true_pos / predicted, true_pos / positives
    return 2 * precision * recall / (precision + recall)


def evaluate(breasts: pd.DataFrame) -> dict[str, float | None]:
    """``val_auc`` and ``val_pf1`` of a per-breast frame, rounded for the record; NaN-free."""
    auc = roc_auc(breasts["label"], breasts["probability"])
    pf1 = probabilistic_f1(breasts["label"], breasts["probability"])
    return {"val_auc": _finite(auc), "val_pf1": _finite(pf1)}


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 6)
