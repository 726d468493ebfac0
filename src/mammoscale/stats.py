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
- **Several labels.** ChestX-ray14's findings: each finding's AUC per image and their mean over the findings
  with both classes, their intervals from one set of patient resamples (stratified by whether a patient has any
  finding), so the mean's interval is the spread of the resamples' means; a paired bootstrap of the difference
  of two models' means. A finding too rare to be in most resamples gets no interval (:data:`MIN_SCORABLE`).

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


def _patient_counts(patient_id, label, rng: np.random.Generator) -> np.ndarray:
    """How often each row is drawn in each of :data:`RESAMPLES` resamples, ``(RESAMPLES, rows)``: patients drawn
    with replacement, all their rows taken, within each stratum (patients with a positive row, patients without;
    a row of several labels is positive when any is), so that every resample keeps as many positive patients as the
    data."""
    patients, of_row = np.unique(np.asarray(patient_id), return_inverse=True)
    label = np.asarray(label).astype(bool)
    positive = np.zeros(len(patients), dtype=bool)
    np.logical_or.at(positive, of_row, label.any(axis=1) if label.ndim == 2 else label)
    counts = np.zeros((RESAMPLES, len(patients)), dtype=np.int64)
    for stratum in (positive, ~positive):
        members = np.flatnonzero(stratum)
        if len(members):
            counts[:, members] = rng.multinomial(len(members), np.full(len(members), 1 / len(members)), size=RESAMPLES)
    return counts[:, of_row]


def _patient_draws(patient_id, label, rng: np.random.Generator) -> list[np.ndarray]:
    """:func:`_patient_counts`' resamples as the rows each takes (a row drawn twice, twice): every resample of a
    single label has both classes to score."""
    rows = np.arange(len(np.asarray(patient_id)))
    return [np.repeat(rows, count) for count in _patient_counts(patient_id, label, rng)]


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


# several labels at once (ChestX-ray14's fourteen findings)

MIN_SCORABLE = 0.9
"""A label's interval needs at least this share of the resamples to hold both of its classes: a finding with a
handful of positive patients, missing from many resamples, gets no interval rather than one drawn from the resamples
that happened to hold it (the mean's interval likewise, over the resamples that hold every label it averages)."""
_CHUNK = 256
"""Resamples scored at once: ``_CHUNK`` x rows weights in memory."""


def _weighted_aucs(label, score, weights: np.ndarray) -> np.ndarray:
    """The AUC of ``score`` for each row of ``weights`` (``(resamples, rows)``: how often each row counts), ties
    sharing half as in :func:`roc_auc`; NaN where a resample lacks a class. The Mann-Whitney count with weights:
    each positive counts the weight of the negatives below it, and half of those tied with it."""
    order = np.argsort(np.asarray(score, dtype=np.float64), kind="stable")
    sorted_score, positive = np.asarray(score, dtype=np.float64)[order], np.asarray(label).astype(bool)[order]
    starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])
    out = np.empty(len(weights))
    for first in range(0, len(weights), _CHUNK):
        w = weights[first : first + _CHUNK, order].astype(np.float64)
        pos = np.add.reduceat(w * positive, starts, axis=1)
        neg = np.add.reduceat(w * ~positive, starts, axis=1)
        wins = (pos * (np.cumsum(neg, axis=1) - neg / 2)).sum(axis=1)
        pairs = pos.sum(axis=1) * neg.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[first : first + len(w)] = np.where(pairs > 0, wins / pairs, np.nan)
    return out


def _scorable_bounds(draws: np.ndarray) -> tuple[float, float] | tuple[None, None]:
    """:func:`_bounds`, or (None, None) when fewer than :data:`MIN_SCORABLE` of the draws could be scored."""
    if draws.size == 0 or np.isfinite(draws).mean() < MIN_SCORABLE:
        return None, None
    return _bounds(draws)


@dataclass(frozen=True)
class LabelAucs:
    """Each label's AUC with its interval, and their mean over the labels with both classes (the *scored* ones),
    with its interval: one set of patient resamples for every label, so the mean's draws are means of theirs."""

    auc: tuple[float | None, ...]
    ci_low: tuple[float | None, ...]
    ci_high: tuple[float | None, ...]
    positives: tuple[int, ...]
    mean: float | None
    mean_ci_low: float | None
    mean_ci_high: float | None
    draws: np.ndarray
    """``(RESAMPLES, labels)``: each resample's AUCs (NaN: a class absent), for a paired comparison."""

    @property
    def scored(self) -> tuple[bool, ...]:
        return tuple(value is not None for value in self.auc)


def _mean_of_scored(draws: np.ndarray, scored) -> np.ndarray:
    """Each resample's mean AUC over the scored labels: NaN where one of them could not be scored."""
    return draws[:, np.asarray(scored, dtype=bool)].mean(axis=1) if any(scored) else np.full(len(draws), np.nan)


def label_aucs(patient_id, labels, scores, *, counts: np.ndarray | None = None) -> LabelAucs:
    """AUCs of ``scores`` for ``labels`` (both ``(rows, labels)``) and their mean, with percentile bootstrap
    intervals that resample patients (:func:`_patient_counts`, stratified by whether a patient has any positive
    label); ``counts``: those resamples, when another model is scored on the same ones."""
    labels, scores = np.asarray(labels).astype(bool), np.asarray(scores, dtype=np.float64)
    aucs = [roc_auc(labels[:, k], scores[:, k]) for k in range(labels.shape[1])]
    if counts is None:
        counts = _patient_counts(patient_id, labels, _rng()) if len(np.unique(patient_id)) >= 2 else None
    if counts is None:
        draws = np.full((0, labels.shape[1]), np.nan)
    else:
        draws = np.stack([_weighted_aucs(labels[:, k], scores[:, k], counts) for k in range(labels.shape[1])], axis=1)
    bounds = [_scorable_bounds(draws[:, k]) if auc is not None else (None, None) for k, auc in enumerate(aucs)]
    scored = [auc is not None for auc in aucs]
    mean_low, mean_high = _scorable_bounds(_mean_of_scored(draws, scored))
    return LabelAucs(
        auc=tuple(aucs),
        ci_low=tuple(low for low, _ in bounds),
        ci_high=tuple(high for _, high in bounds),
        positives=tuple(int(n) for n in labels.sum(axis=0)),
        mean=float(np.mean([a for a in aucs if a is not None])) if any(scored) else None,
        mean_ci_low=mean_low,
        mean_ci_high=mean_high,
        draws=draws,
    )


def paired_labels(patient_id, labels, a, b) -> Comparison:
    """The paired bootstrap of ``mean AUC(a) - mean AUC(b)`` over the labels with both classes, on the same rows,
    resampling patients once for both models (metric ``auc``)."""
    counts = _patient_counts(patient_id, labels, _rng()) if len(np.unique(patient_id)) >= 2 else None
    first, second = (label_aucs(patient_id, labels, scores, counts=counts) for scores in (a, b))
    difference = None if first.mean is None else first.mean - second.mean
    low = high = p_value = None
    if difference is not None and counts is not None:
        draws = _mean_of_scored(first.draws, first.scored) - _mean_of_scored(second.draws, first.scored)
        low, high = _scorable_bounds(draws)
        finite = draws[np.isfinite(draws)]
        if low is not None and finite.size:
            p_value = float(min(1.0, 2 * min((finite <= 0).mean(), (finite >= 0).mean())))
    return Comparison("auc", first.mean, second.mean, difference, low, high, p_value, len(np.asarray(labels)))
