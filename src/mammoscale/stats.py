"""The study's numbers with their uncertainty: throughput windows, bootstrap intervals, paired comparisons.

One owner for how a number's spread is computed, shared by the cell that measures (``mammoscale.train``)
and the tables and report that compare (``mammoscale.report``); torch-free, numpy only.

- **Throughput.** A cell's timed steps are cut into consecutive *windows*; each window gives one
  images/s. The cell's throughput is the windows' median; its interval a percentile bootstrap of
  the median over windows; its spread the coefficient of variation, and a cell whose windows vary
  by more than :data:`UNSTABLE_CV` is *unstable* (pyperf warns at the same 10 %). A speed-up is the
  ratio of two medians, its interval the bootstrap of that ratio over each cell's windows.
- **Quality.** AUC and the RSNA challenge's probabilistic F1 per breast, with percentile bootstrap
  intervals that resample *patients* (a patient's two breasts are not independent), stratified by
  whether a patient has a positive breast (a resample without a positive could not be scored), and
  a paired bootstrap of the difference between two models scored on the same breasts.

Every bootstrap draws from a generator seeded with :data:`SEED`, so a table made twice from the
same records is the same table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
"""The level of every interval the study reports."""
RESAMPLES = 2000
"""Bootstrap resamples of every interval."""
SEED = 0
"""The bootstrap generator's seed: the same records give the same intervals."""
UNSTABLE_CV = 0.10
"""A cell whose windows' standard deviation passes this share of their mean is flagged unstable."""
MIN_WINDOWS = 5
"""Fewer windows than this give no interval: a verdict resting on them is inconclusive. The percentile bootstrap of a
median holds the true one 75 % of the time at 3 windows (it is about their range), 88 % at 4, 95 % at 5 and more
(``bench/intervals.py``, bench/README.md)."""


def _rng() -> np.random.Generator:
    return np.random.default_rng(SEED)


def _bounds(draws: np.ndarray) -> tuple[float, float] | tuple[None, None]:
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        return None, None
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


# throughput


def window_throughputs(step_times, images_per_step: int, windows: int) -> list[float]:
    """Images/s of each of ``windows`` consecutive, near-equal runs of ``step_times`` (as many windows as steps
    when there are fewer steps)."""
    times = np.asarray(step_times, dtype=np.float64)
    if times.size == 0:
        return []
    return [
        images_per_step * len(chunk) / float(chunk.sum())
        for chunk in np.array_split(times, min(windows, times.size))
        if chunk.sum() > 0
    ]


def cv(values) -> float | None:
    """Standard deviation (n - 1) over the mean; None with fewer than two values."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2 or values.mean() == 0:
        return None
    return float(values.std(ddof=1) / values.mean())


def median_ci(values) -> tuple[float, float] | tuple[None, None]:
    """Percentile bootstrap interval of the median; (None, None) below :data:`MIN_WINDOWS` values."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < MIN_WINDOWS:
        return None, None
    draws = _rng().choice(values, size=(RESAMPLES, values.size), replace=True)
    return _bounds(np.median(draws, axis=1))


def ratio_ci(numerator, denominator) -> tuple[float, float] | tuple[None, None]:
    """Percentile bootstrap interval of median(numerator) / median(denominator), each resampled on its own."""
    a, b = (np.asarray(v, dtype=np.float64) for v in (numerator, denominator))
    if a.size < MIN_WINDOWS or b.size < MIN_WINDOWS:
        return None, None
    rng = _rng()
    tops = np.median(rng.choice(a, size=(RESAMPLES, a.size), replace=True), axis=1)
    bottoms = np.median(rng.choice(b, size=(RESAMPLES, b.size), replace=True), axis=1)
    return _bounds(tops / bottoms)


@dataclass(frozen=True)
class Throughput:
    """A cell's throughput from its windows."""

    windows: list[float]
    median: float | None
    ci_low: float | None
    ci_high: float | None
    cv: float | None

    @property
    def unstable(self) -> bool | None:
        return None if self.cv is None else self.cv > UNSTABLE_CV

    @classmethod
    def of(cls, windows) -> Throughput:
        windows = [float(w) for w in windows]
        low, high = median_ci(windows)
        return cls(windows, float(np.median(windows)) if windows else None, low, high, cv(windows))


# quality


def roc_auc(label, score) -> float | None:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks for ties); None with one class only."""
    label = np.asarray(label).astype(bool)
    score = np.asarray(score, dtype=np.float64)
    positives, negatives = int(label.sum()), int((~label).sum())
    if positives == 0 or negatives == 0:
        return None
    ranks = _midranks(score)
    u = ranks[label].sum() - positives * (positives + 1) / 2
    return float(u / (positives * negatives))


def _midranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing the mean of their ranks (scipy's ``rankdata``, without importing scipy.stats:
    0.7 s of every training job's start)."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + 1 + ends) / 2)[inverse]


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


METRICS = {"auc": roc_auc, "pf1": probabilistic_f1}
"""The quality metrics by the name the record gives them (``val_auc``, ``val_pf1``)."""


def _patient_draws(patient_id, label, rng: np.random.Generator) -> list[np.ndarray]:
    """:data:`RESAMPLES` resamples of the rows: patients drawn with replacement, all their rows taken, within each
    stratum (patients with a positive breast, patients without), so that every resample keeps as many positive
    patients as the data and has both classes to score."""
    patients, of_row = np.unique(np.asarray(patient_id), return_inverse=True)
    positive = np.zeros(len(patients), dtype=bool)
    np.logical_or.at(positive, of_row, np.asarray(label).astype(bool))
    counts = np.zeros((RESAMPLES, len(patients)), dtype=np.int64)
    for stratum in (positive, ~positive):
        members = np.flatnonzero(stratum)
        if len(members):
            counts[:, members] = rng.multinomial(len(members), np.full(len(members), 1 / len(members)), size=RESAMPLES)
    rows = np.arange(len(of_row))
    return [np.repeat(rows, count[of_row]) for count in counts]


def _value(metric, label, score) -> float:
    value = METRICS[metric](label, score)
    return math.nan if value is None else value


def quality_ci(metric: str, patient_id, label, probability) -> tuple[float, float] | tuple[None, None]:
    """Bootstrap interval of ``metric`` (``auc`` or ``pf1``) over breasts, resampling patients."""
    label, probability = np.asarray(label), np.asarray(probability, dtype=np.float64)
    if len(np.unique(patient_id)) < 2:
        return None, None
    draws = np.array([_value(metric, label[i], probability[i]) for i in _patient_draws(patient_id, label, _rng())])
    return _bounds(draws)


@dataclass(frozen=True)
class Comparison:
    """Two models on the same breasts: ``a`` minus ``b``, its interval and a two-sided bootstrap p-value."""

    metric: str
    a: float | None
    b: float | None
    difference: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    breasts: int

    @property
    def distinguishable(self) -> bool | None:
        """True when the interval of the difference leaves out 0; None when it could not be computed."""
        if self.ci_low is None:
            return None
        return not self.ci_low <= 0 <= self.ci_high


def paired(metric: str, patient_id, label, a, b) -> Comparison:
    """The paired bootstrap of ``metric(a) - metric(b)`` on the same breasts, resampling patients."""
    label = np.asarray(label)
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    first, second = METRICS[metric](label, a), METRICS[metric](label, b)
    difference = None if first is None or second is None else first - second
    low = high = p_value = None
    if difference is not None and len(np.unique(patient_id)) >= 2:
        draws = np.array(
            [
                _value(metric, label[i], a[i]) - _value(metric, label[i], b[i])
                for i in _patient_draws(patient_id, label, _rng())
            ]
        )
        low, high = _bounds(draws)
        finite = draws[np.isfinite(draws)]
        if finite.size:
            p_value = float(min(1.0, 2 * min((finite <= 0).mean(), (finite >= 0).mean())))
    return Comparison(metric, first, second, difference, low, high, p_value, len(label))
