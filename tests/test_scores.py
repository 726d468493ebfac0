"""Per-breast AUC and the RSNA probabilistic F1, against brute force and hand-worked values."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mammoscale.train import scores


def brute_auc(label, score) -> float:
    pos = [s for s, y in zip(score, label) if y]
    neg = [s for s, y in zip(score, label) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_auc_equals_the_pairwise_definition_with_ties(seed):
    rng = np.random.default_rng(seed)
    label = rng.random(40) < 0.3
    label[:2] = [True, False]
    score = np.round(rng.random(40), 1)  # many ties
    assert scores.roc_auc(label, score) == pytest.approx(brute_auc(label, score))


def test_auc_extremes_and_one_class():
    assert scores.roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert scores.roc_auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert scores.roc_auc([1, 1], [0.3, 0.4]) is None
    assert scores.roc_auc([0, 0], [0.3, 0.4]) is None


def test_probabilistic_f1_by_hand():
    # pTP = 0.8, pFP = 0.2 + 0.4 = 0.6, positives = 2: P = 0.8/1.4, R = 0.4
    precision, recall = 0.8 / 1.4, 0.4
    assert scores.probabilistic_f1([1, 1, 0, 0], [0.8, 0.0, 0.2, 0.4]) == pytest.approx(
        2 * precision * recall / (precision + recall)
    )
    assert scores.probabilistic_f1([1, 0], [1.0, 0.0]) == 1.0
    assert scores.probabilistic_f1([1, 0], [0.0, 0.7]) == 0.0
    assert scores.probabilistic_f1([0, 0], [0.5, 0.5]) is None


def test_a_breast_counts_once_with_its_mean_probability():
    breasts = scores.per_breast([1, 1, 1, 2], ["L", "L", "R", "L"], [1, 1, 0, 0], [0.4, 0.8, 0.1, 0.5])
    assert len(breasts) == 3
    row = breasts[(breasts.patient_id == 1) & (breasts.laterality == "L")].iloc[0]
    assert row.probability == pytest.approx(0.6) and row.label == 1
    result = scores.evaluate(breasts)
    assert result["val_auc"] == 1.0
    assert 0 < result["val_pf1"] < 1


def test_evaluate_without_positives_gives_nulls():
    breasts = scores.per_breast([1, 2], ["L", "L"], [0, 0], [0.2, 0.3])
    result = scores.evaluate(breasts)
    assert set(result) == set(scores.QUALITY_KEYS)
    assert (result["val_breasts"], result["val_positive_breasts"]) == (2, 0)
    assert all(value is None for key, value in result.items() if key.startswith("val_") and "breasts" not in key)


def test_evaluate_gives_intervals_around_the_metrics():
    rng = np.random.default_rng(3)
    patients = np.repeat(np.arange(60), 2)
    label = rng.integers(0, 2, patients.size)
    probability = np.clip(0.3 * label + rng.uniform(0, 0.7, patients.size), 0, 1)
    result = scores.evaluate(scores.per_breast(patients, np.tile(["L", "R"], 60), label, probability))
    for metric in ("auc", "pf1"):
        assert result[f"val_{metric}_ci_low"] < result[f"val_{metric}"] < result[f"val_{metric}_ci_high"]
    assert result["val_breasts"] == 120 and result["val_positive_breasts"] == int(label.sum())
