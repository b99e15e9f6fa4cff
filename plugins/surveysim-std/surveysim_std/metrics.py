"""Metrics comparing human answers with a system's answers.

Every metric takes the human answer codes ``y`` (one per respondent-item), the system's
:class:`~surveysim_core.answers.AnswerDistribution` ``P`` (row ``i``: probability of each valid
answer for item ``i``; a sampled answer is a one-hot row, a failed one an all-zero row) and the
answer type. Failures are excluded: histograms and errors use only the valid mass.

Choices the paper leaves open, fixed here:

* **KL direction**: ``KL(human || model) = sum_k h_k log(h_k / m_k)``, the information lost when
  the model's answer histogram stands in for the humans'. It punishes a model that gives no mass
  where people answer.
* **Empty bins**: additive (Krichevsky-Trofimov) smoothing of 0.5 pseudo-counts per bin on both
  histograms, ``h_k = (c_k + 0.5) / (n + 0.5 K)`` with ``n`` the number of human answers. The
  model's histogram (counts of valid answers, or expected counts for exact distributions) is first
  rescaled to the same total ``n``, so that the smoothing weighs the same on both sides and a
  system with few valid answers is not pulled towards uniform (and so rewarded) for failing;
  ``success_rate`` reports failures. This keeps KL finite and treats sampled and exact answers
  alike.
* **KL of a system that mostly fails**: rescaling would let a handful of valid answers stand
  for all of them (at temperature ``inf`` a tiny, nearly uniform valid mass once scored KL 2.5e-9
  at success rate 0.0002). So KL (and Wasserstein, representativeness) are NaN, "not reported",
  when the valid mass is below ``MIN_SUCCESS_RATE`` (one half) of the items: a system cannot
  win on distribution metrics by failing.
* **Bins**: the answer type's bins (width 10 on 0-100, so ten bins with 100 in the last; width 1
  on 0-9 and on 1-7 scales; one bin per option for categorical answers).
* **Wasserstein**: the 1-D earth mover's distance between the two answer distributions on the
  answer values, divided by the largest possible distance (``max - min``), so it lies in [0, 1];
  representativeness is ``1 - WD/WDmax`` as OpinionQA reports it.
* **RMSE** for an exact distribution is the root of the expected squared error given a valid
  answer: ``sqrt(sum_i sum_a P_ia (a - y_i)^2 / sum_i sum_a P_ia)`` (the RMSE of sampled
  answers, in expectation). For a point prediction (the ``expected`` readout, E[a]) it is the
  plain RMSE of the points.
* **Pearson** is the correlation of the point prediction (E[a] given a valid answer, for a
  distribution) with the true answers.
* **Survey weights** (``weights``, one per row; ``model_weights`` for the model's rows where they
  are other respondents, as in the split-half floor): each row counts ``w_i`` times, with the
  weights rescaled to mean 1 so that histograms still sum to the number of answers. Histograms
  become ``c_k = sum_i w_i [y_i = k]``, the model's ``m_k = sum_i w_i P_ik``; RMSE
  ``sqrt(sum_i w_i sum_a P_ia (a - y_i)^2 / sum_i w_i sum_a P_ia)``; accuracy, success rate and
  NLL are weighted means. Without weights every ``w_i`` is 1.
"""

from __future__ import annotations

import numpy as np

from surveysim_core.answers import AnswerDistribution, AnswerType
from surveysim_core.protocols import Metric
from surveysim_core.weights import normalised

SMOOTHING = 0.5
#: below this share of valid answers, distribution metrics (KL, Wasserstein) are NaN
MIN_SUCCESS_RATE = 0.5


def mostly_failed(model: AnswerDistribution, mass: np.ndarray | None = None) -> bool:
    """True when fewer than ``MIN_SUCCESS_RATE`` of the items have a valid answer (in mass;
    ``mass``: the model's weighted mass per value, with weights of mean 1, if weighted)."""
    total = model.probs.sum() if mass is None else float(np.sum(mass))
    return len(model) == 0 or total < MIN_SUCCESS_RATE * len(model)


def human_counts(
    codes: np.ndarray, answer: AnswerType, weights: np.ndarray | None = None
) -> np.ndarray:
    """Count (weighted count) of each support value among the human answers."""
    idx = answer.index_of(codes)
    ok = idx >= 0
    w = None if weights is None else np.asarray(weights, float)[ok]
    return np.bincount(idx[ok], weights=w, minlength=len(answer.support)).astype(float)


def model_mass(model: AnswerDistribution, weights: np.ndarray | None = None) -> np.ndarray:
    """The model's (weighted) expected count of each support value."""
    if weights is None:
        return model.probs.sum(axis=0)
    return (model.probs * np.asarray(weights, float)[:, None]).sum(axis=0)


def _weights(weights, model_weights, n_human: int, n_model: int):
    """Human and model row weights, each rescaled to mean 1 (None where there are none)."""
    if weights is None:
        return None, None
    model_weights = weights if model_weights is None else model_weights
    return normalised(weights, n_human), normalised(model_weights, n_model)


def binned(counts: np.ndarray, answer: AnswerType) -> np.ndarray:
    bins = answer.bin_edges()
    return np.bincount(bins, weights=counts, minlength=int(bins.max()) + 1)


def smoothed(counts: np.ndarray) -> np.ndarray:
    return (counts + SMOOTHING) / (counts.sum() + SMOOTHING * len(counts))


def kl_divergence(human: np.ndarray, model: np.ndarray) -> float:
    """KL(human || model) of two count vectors over the same bins, after rescaling the model's
    counts to the human total and smoothing both."""
    human = np.asarray(human, float)
    model = np.asarray(model, float) * (human.sum() / np.sum(model))
    p, q = smoothed(human), smoothed(model)
    return float(np.sum(p * np.log(p / q)))


def wasserstein_normalised(human: np.ndarray, model: np.ndarray, answer: AnswerType) -> float:
    """Earth mover's distance between two count vectors over ``support``, divided by the span."""
    p = human / human.sum()
    q = model / model.sum()
    gaps = np.diff(answer.support)
    distance = float(np.sum(np.abs(np.cumsum(p - q)[:-1]) * gaps))
    return distance / answer.span


def population_histograms(
    human, model: AnswerDistribution, answer: AnswerType, weights=None, model_weights=None
) -> tuple[np.ndarray, np.ndarray] | None:
    """The (weighted) human answer counts and the model's answer mass per support value, or
    None when there is nothing to compare or most of the model's answers failed (the rule that
    keeps a few valid answers from standing for all of them)."""
    wh, wm = _weights(weights, model_weights, len(human), len(model))
    mass = model_mass(model, wm)
    if mass.sum() <= 0 or len(human) == 0 or mostly_failed(model, mass):
        return None
    return human_counts(human, answer, wh), mass


class KL(Metric):
    name = "kl"
    level = "population"
    lower_is_better = True
    summary = True
    weighted = True

    def __call__(self, human, model: AnswerDistribution, answer: AnswerType, weights=None,
                 model_weights=None) -> float:  # fmt: skip
        histograms = population_histograms(human, model, answer, weights, model_weights)
        if histograms is None:
            return float("nan")
        counts, mass = histograms
        return kl_divergence(binned(counts, answer), binned(mass, answer))


class RMSE(Metric):
    name = "rmse"
    level = "individual"
    lower_is_better = True
    summary = True
    needs_order = True
    weighted = True

    def __call__(self, human, model: AnswerDistribution, answer: AnswerType, weights=None,
                 model_weights=None) -> float:  # fmt: skip
        squared = (answer.support[None, :] - np.asarray(human, float)[:, None]) ** 2
        probs = model.probs * normalised(weights, len(model))[:, None]
        mass = probs.sum()
        if mass <= 0:
            return float("nan")
        return float(np.sqrt(np.sum(probs * squared) / mass))

    scores_points = True

    def point(self, human, predicted, answer: AnswerType) -> float:
        error = np.asarray(predicted, float) - np.asarray(human, float)
        error = error[np.isfinite(error)]
        return float(np.sqrt(np.mean(error**2))) if len(error) else float("nan")


class Pearson(Metric):
    """Correlation of the system's point prediction with each respondent's true answer: does it
    tell who answers high from who answers low? For a distribution the point prediction is
    E[a] given a valid answer (a one-hot row's answer itself); items without one are left out.
    NaN when either side is constant (e.g. a model that gives everyone the same answer)."""

    name = "pearson"
    level = "individual"
    needs_order = True
    lower_is_better = False
    summary = True
    scores_points = True

    def __call__(self, human, model: AnswerDistribution, answer: AnswerType) -> float:
        return pearson(model.expected(answer), human)

    def point(self, human, predicted, answer: AnswerType) -> float:
        return pearson(predicted, human)


class Spread(Metric):
    """Standard deviation of the system's point predictions across the items: how much it tells
    respondents apart at all. A model that gives everyone the same answer has 0 (its pearson is
    NaN), however close that answer is to the mean. The humans' own SD is the ``floor:humans``
    row (:attr:`describes_humans`). For a distribution the point prediction is E[a] given a
    valid answer; for sampled answers the answers themselves."""

    name = "spread"
    level = "individual"
    needs_order = True
    lower_is_better = None  # a description, not a score: more spread is not better by itself
    summary = True
    scores_points = True
    describes_humans = True

    def __call__(self, human, model: AnswerDistribution, answer: AnswerType) -> float:
        return self.point(human, model.expected(answer), answer)

    def point(self, human, predicted, answer: AnswerType) -> float:
        values = np.asarray(predicted, float)
        values = values[np.isfinite(values)]
        return float(np.std(values)) if len(values) >= 2 else float("nan")


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation over the pairs where both are finite (NaN when either is constant)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 2:
        return float("nan")
    x, y = x[ok] - x[ok].mean(), y[ok] - y[ok].mean()
    denominator = np.sqrt(np.sum(x * x) * np.sum(y * y))
    return float(np.sum(x * y) / denominator) if denominator > 0 else float("nan")


class SuccessRate(Metric):
    """Share of valid answers (for exact distributions: mean probability of a valid answer,
    i.e. the coverage of the answer set)."""

    name = "success_rate"
    level = "individual"
    # coverage of the answer set, not closeness to people: shown, never used to pick a best
    lower_is_better = None
    summary = True
    weighted = True

    def __call__(self, human, model: AnswerDistribution, answer: AnswerType, weights=None,
                 model_weights=None) -> float:  # fmt: skip
        if not len(model):
            return float("nan")
        return float(np.mean(model.probs.sum(axis=1) * normalised(weights, len(model))))


class Wasserstein(Metric):
    name = "wasserstein"
    level = "population"
    lower_is_better = True
    needs_order = True
    weighted = True

    def __call__(self, human, model: AnswerDistribution, answer: AnswerType, weights=None,
                 model_weights=None) -> float:  # fmt: skip
        histograms = population_histograms(human, model, answer, weights, model_weights)
        if histograms is None:
            return float("nan")
        counts, mass = histograms
        return wasserstein_normalised(counts, mass, answer)


class Representativeness(Wasserstein):
    name = "representativeness"
    lower_is_better = False  # 1 - Wasserstein

    def __call__(self, human, model: AnswerDistribution, answer: AnswerType, weights=None,
                 model_weights=None) -> float:  # fmt: skip
        return 1.0 - super().__call__(human, model, answer, weights, model_weights)


class Accuracy(Metric):
    """Share of valid answers that equal the human's (expected share for distributions)."""

    name = "accuracy"
    level = "individual"
    lower_is_better = False
    summary = True
    weighted = True

    def __call__(self, human, model: AnswerDistribution, answer: AnswerType, weights=None,
                 model_weights=None) -> float:  # fmt: skip
        idx = answer.index_of(human)
        w = normalised(weights, len(idx))
        mass = (model.probs.sum(axis=1) * w).sum()
        if mass <= 0:
            return float("nan")
        hit = model.probs[np.arange(len(idx)), np.maximum(idx, 0)] * (idx >= 0)
        return float((hit * w).sum() / mass)


class NegativeLogLikelihood(Metric):
    """Mean negative log-probability of each respondent's true answer (a proper scoring rule).

    Needs exact distributions. Undefined (NaN) when any true answer has probability zero, as
    under a greedy (t=0) one-hot distribution: the honest value is infinite, and any floor on
    the probability (1e-12 gives about 27.6 per miss) would only report the floor. Such rows
    are read by accuracy and RMSE instead.
    """

    name = "nll"
    level = "individual"
    lower_is_better = True
    summary = True
    needs_exact = True
    weighted = True

    def __call__(self, human, model: AnswerDistribution, answer: AnswerType, weights=None,
                 model_weights=None) -> float:  # fmt: skip
        idx = answer.index_of(human)
        p = model.probs[np.arange(len(idx)), np.maximum(idx, 0)] * (idx >= 0)
        if len(p) == 0 or not np.all(p > 0):
            return float("nan")
        w = normalised(weights, len(idx))
        return float(-np.mean(w * np.log(p)))
