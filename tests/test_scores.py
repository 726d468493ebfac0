"""Per-breast AUC and the RSNA probabilistic F1, and per-image AUROCs of several findings, against brute force and
hand-worked values."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mammoscale import stats
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


# several labels (ChestX-ray14's findings)


@pytest.mark.parametrize("seed", range(3))
def test_an_auc_with_rows_counted_several_times_is_the_auc_of_the_repeated_rows(seed):
    rng = np.random.default_rng(seed)
    label = rng.random(30) < 0.4
    score = np.round(rng.random(30), 1)  # ties
    counts = rng.integers(0, 3, (4, 30))
    counts[:, :2] = 1
    label[:2] = [True, False]
    weighted = stats._weighted_aucs(label, score, counts)
    for row, count in zip(weighted, counts):
        rows = np.repeat(np.arange(30), count)
        assert row == pytest.approx(brute_auc(label[rows], score[rows]))
    assert np.isnan(stats._weighted_aucs(label, score, np.where(label, 0, 1)[None]))[0]  # no positive drawn


def test_findings_are_scored_per_image_each_on_its_own_and_averaged():
    findings = ("A", "B", "C")
    labels = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    probabilities = np.array([[0.9, 0.2, 0.1], [0.3, 0.6, 0.2], [0.8, 0.4, 0.3], [0.1, 0.5, 0.4]])
    images = scores.per_image([7, 7, 8, 9], ["a", "b", "c", "d"], labels, probabilities, findings)
    assert len(images) == 12 and list(images.columns) == ["patient_id", "image_id", "finding", "label", "probability"]
    result = scores.evaluate_findings(images, findings)
    # A: positives 0.9, 0.8 over negatives 0.3, 0.1: 1.0; B: positives 0.6, 0.4 over 0.2, 0.5: 3 of 4 pairs
    per_label = result["val_auc_per_label"]
    assert (per_label["A"]["auc"], per_label["B"]["auc"], per_label["C"]["auc"]) == (1.0, 0.75, None)
    assert [per_label[f]["positives"] for f in findings] == [2, 2, 0]
    assert result["val_auc"] == pytest.approx(0.875) and scores.left_out(result) == ["C"]
    assert (result["val_images"], result["val_positive_images"]) == (4, 3)
    assert result["val_pf1"] is None and result["val_breasts"] is None and set(result) == set(scores.QUALITY_KEYS)


def test_an_image_seen_twice_counts_once_with_its_mean_probability():
    images = scores.per_image([1, 1], ["x", "x"], [[1, 0], [1, 0]], [[0.2, 0.6], [0.4, 0.8]], ("A", "B"))
    assert len(images) == 2
    assert images.set_index("finding")["probability"].to_dict() == pytest.approx({"A": 0.3, "B": 0.7})


def test_a_one_label_evaluation_leaves_the_keys_of_several_labels_empty():
    breasts = scores.per_breast([1, 2, 3, 4], ["L"] * 4, [1, 0, 1, 0], [0.9, 0.1, 0.7, 0.2])
    result = scores.evaluate(breasts)
    assert result["val_auc"] == 1.0 and result["val_auc_per_label"] is None and result["val_images"] is None
