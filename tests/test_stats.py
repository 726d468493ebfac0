"""The study's uncertainty: throughput windows, bootstrap intervals, paired comparisons (mammoscale.stats)."""

from __future__ import annotations

import numpy as np
import pytest

from mammoscale import stats


def test_windows_are_consecutive_runs_of_the_timed_steps():
    assert stats.window_throughputs([1.0, 1.0, 2.0, 2.0], 2, 2) == [2.0, 1.0]
    assert stats.window_throughputs([1.0, 0.5], 4, 3) == [4.0, 8.0]  # fewer steps than windows: a step each
    assert stats.window_throughputs([], 2, 3) == []
    assert len(stats.window_throughputs(np.ones(10), 1, 3)) == 3


def test_a_cell_whose_windows_vary_is_unstable():
    steady = stats.Throughput.of([100.0, 101.0, 99.0, 100.5, 100.2])
    assert steady.median == pytest.approx(100.2) and steady.unstable is False
    assert steady.ci_low <= steady.median <= steady.ci_high
    shaky = stats.Throughput.of([100.0, 70.0, 130.0])
    assert shaky.cv == pytest.approx(0.3) and shaky.unstable is True


def test_too_few_windows_give_no_interval():
    four = stats.Throughput.of([10.0, 11.0, 10.5, 10.2])  # an interval from 4 would hold the median 88 % of the time
    assert (four.ci_low, four.ci_high) == (None, None) and four.cv is not None
    one = stats.Throughput.of([10.0])
    assert one.cv is None and one.unstable is None
    assert stats.ratio_ci([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0, 5.0]) == (None, None)


def test_the_ratio_of_medians_and_its_interval():
    assert stats.ratio_ci([6.0] * 5, [2.0] * 6) == pytest.approx((3.0, 3.0))
    low, high = stats.ratio_ci([5.8, 6.0, 6.2, 6.1, 5.9], [1.9, 2.0, 2.1, 2.0, 2.05])
    assert low < 3.0 < high and high - low < 0.5


def test_intervals_are_reproducible():
    values = np.random.default_rng(1).normal(10, 1, 8)
    assert stats.median_ci(values) == stats.median_ci(values)


def test_patients_are_resampled_whole():
    patient = np.array([7, 7, 8, 8, 9])
    for rows in stats._patient_draws(patient, [0, 0, 1, 0, 0], np.random.default_rng(0))[:50]:
        assert (patient[rows] == 8).sum() == 2  # the one positive patient (8) is drawn once in every resample
        for p in (7, 8):  # a patient's two breasts come together, as often each
            assert (rows == np.flatnonzero(patient == p)[0]).sum() == (rows == np.flatnonzero(patient == p)[1]).sum()


def test_a_quality_interval_narrows_with_more_patients():
    def width(patients: int) -> float:
        rng = np.random.default_rng(patients)
        label = rng.integers(0, 2, patients)
        score = label * 0.4 + rng.uniform(0, 1, patients)
        low, high = stats.quality_ci("auc", np.arange(patients), label, score)
        assert low < stats.roc_auc(label, score) < high
        return high - low

    assert width(400) < width(40) / 2


def test_one_model_against_itself_is_indistinguishable():
    rng = np.random.default_rng(2)
    label, score = rng.integers(0, 2, 80), rng.uniform(0, 1, 80)
    same = stats.paired("auc", np.arange(80) // 2, label, score, score)
    assert same.difference == 0 and (same.ci_low, same.ci_high) == (0, 0)
    assert same.distinguishable is False and same.p_value == 1.0


def test_a_better_model_is_told_apart_and_a_noisy_one_is_not():
    rng = np.random.default_rng(4)
    label = rng.integers(0, 2, 300)
    good, random = label * 0.6 + rng.uniform(0, 1, 300), rng.uniform(0, 1, 300)
    better = stats.paired("auc", np.arange(300), label, good, random)
    assert better.difference > 0.2 and better.distinguishable and better.p_value < 0.01
    few = np.array([1, 0, 1, 0, 0, 1, 0, 0])
    noisy = stats.paired("auc", np.arange(8), few, rng.uniform(0, 1, 8), rng.uniform(0, 1, 8))
    assert noisy.distinguishable is False and noisy.ci_low < 0 < noisy.ci_high


def test_a_comparison_without_both_classes_has_no_interval():
    result = stats.paired("auc", [1, 2], [0, 0], [0.1, 0.2], [0.3, 0.4])
    assert result.difference is None and result.distinguishable is None


def test_auc_ranks_ties_as_scipy_does():
    from scipy.stats import rankdata

    rng = np.random.default_rng(5)
    scores = rng.integers(0, 6, 200).astype(float)  # many ties
    assert stats._midranks(scores) == pytest.approx(rankdata(scores))
    label = rng.integers(0, 2, 200)
    assert stats.roc_auc(label, scores) == pytest.approx(
        (rankdata(scores)[label == 1].sum() - label.sum() * (label.sum() + 1) / 2) / (label.sum() * (200 - label.sum()))
    )
    assert stats.roc_auc([0, 1], [0.5, 0.5]) == 0.5
