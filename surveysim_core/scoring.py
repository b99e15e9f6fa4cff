"""Scoring: metric rows per system, question, temperature and demographic segment, with bootstrap
confidence intervals over test respondents; paired differences between systems; and the noise
floors every run reports (a sampling floor at the test sample's size, split-half human agreement,
uniform and training-marginal null models).

Uncertainty. Each metric row carries a 95% bootstrap interval (``ci_low``, ``ci_high``; the
percentile interval re-centred on the estimate, :func:`bootstrap_interval`) and the bootstrap
standard deviation (``sd``). A draw resamples the *respondents* of
the row's question and segment with replacement (each drawn respondent brings all of their
items), never single items, so that answers of one person stay together. The draws depend only on
``evaluation.seed``, the question, the segment and the test respondents, so every system is
scored on the same resampled respondents: differences between two systems are paired
(:func:`difference_rows`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from surveysim_core.answers import AnswerDistribution, AnswerType
from surveysim_core.protocols import Metric
from surveysim_core.selection import chosen_label, eligible
from surveysim_core.weights import call_metric, item_weights

METRIC_COLUMNS = [
    "system", "setting", "readout", "question", "temperature", "segment", "metric", "value",
    "sd", "ci_low", "ci_high", "n",
]  # fmt: skip

#: How a system's answers are read out (the ``readout`` column):
#: ``answer``: a baseline's answers as it gives them; ``greedy``: the most likely answer (t = 0);
#: ``sample``: the answer distribution at temperature t (metrics of sampled answers, exactly in
#: expectation for an exact decoder); ``expected``: the point prediction E[a] of the distribution
#: at t (point metrics only: rmse, pearson); ``calibrated``: the distribution at the temperature
#: with the lowest NLL on the validation split; ``distribution``: a null model's exact
#: distribution (floors).
READOUTS = ("answer", "greedy", "sample", "expected", "calibrated", "distribution")

#: two-sided level of every bootstrap interval
CI_LEVEL = 0.95

#: key of a row's bootstrap draws: (system, setting, readout, question, temperature, metric),
#: segment "all"; the temperature is -1.0 for systems without one (NaN keys never compare equal)
DrawKey = tuple[str, str, str, str, float, str]

DIFFERENCE_COLUMNS = [
    "system", "setting", "readout", "question", "temperature", "metric", "against", "reference",
    "reference_setting", "reference_readout", "value", "reference_value", "difference", "ci_low", "ci_high",
    "higher_is_better",
]  # fmt: skip


def _text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def draw_key(
    system: str, setting: Any, readout: Any, question: Any, temperature: Any, metric: str
) -> DrawKey:
    t = float(temperature) if temperature is not None and pd.notna(temperature) else -1.0
    return (str(system), _text(setting), _text(readout), str(question), t, str(metric))


def _rng(seed: int, *parts: str) -> np.random.Generator:
    """A generator that depends only on ``seed`` and ``parts`` (not on Python's hash seed)."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


def respondent_resamples(
    subjects: np.ndarray, draws: int, seed: int, *key: str
) -> list[np.ndarray]:
    """Positions (into ``subjects``) of each bootstrap draw over respondents.

    ``subjects`` holds the respondent of each item. A draw picks as many respondents as there
    are, with replacement, and takes all items of each pick; the same ``seed``, ``key`` and
    ``subjects`` always give the same draws.
    """
    subjects = np.asarray(subjects).astype(str)
    unique, inverse = np.unique(subjects, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    starts = np.searchsorted(inverse[order], np.arange(len(unique)))
    ends = np.append(starts[1:], len(order))
    rng = _rng(seed, *key)
    out = []
    for _ in range(draws):
        picks = rng.integers(0, len(unique), len(unique))
        out.append(np.concatenate([order[starts[p] : ends[p]] for p in picks]))
    return out


def percentile_interval(values: np.ndarray, level: float = CI_LEVEL) -> tuple[float, float]:
    """The percentile interval of bootstrap ``values`` (NaN draws left out; NaN if none)."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_interval(
    value: float, draws: np.ndarray, level: float = CI_LEVEL
) -> tuple[float, float]:
    """The confidence interval of a point ``value`` from its bootstrap ``draws``.

    The percentile interval of the draws, shifted by the bootstrap's median bias
    (``median(draws) - value``) so that it is centred where the estimate is. Plug-in
    divergences such as KL are biased upward under resampling (duplicated respondents make
    both histograms noisier); their plain percentile interval can lie entirely above the point
    estimate. For unbiased metrics (RMSE, accuracy) the shift is negligible. A metric whose value
    and draws are all non-negative keeps a lower bound of at least 0.
    """
    draws = np.asarray(draws, float)
    draws = draws[np.isfinite(draws)]
    if len(draws) == 0 or not np.isfinite(value):
        return float("nan"), float("nan")
    low, high = percentile_interval(draws, level)
    bias = float(np.median(draws)) - value
    low, high = low - bias, high - bias
    if value >= 0 and draws.min() >= 0:
        low = max(low, 0.0)
    return float(low), float(high)


def _spread(values: np.ndarray) -> float:
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def segment_masks(
    items: pd.DataFrame,
    respondents: pd.DataFrame,
    fields: Iterable[str],
    order: Mapping[str, Sequence[str]] | None = None,
) -> Iterable[tuple[str, np.ndarray]]:
    """("all", everything), then ("field=option", mask) for each option of each segment field
    that some item's respondent has. ``order``: the order to list a field's options in (the
    survey's declared order, for a reader); options it lacks follow, sorted."""
    yield "all", np.ones(len(items), dtype=bool)
    for name in fields:
        values = items["subject_id"].map(respondents[name]).astype(str).to_numpy()
        present = set(values)
        first = [o for o in (order or {}).get(name, ()) if o in present]
        for option in [*first, *sorted(present - set(first))]:
            yield f"{name}={option}", values == option


def resample_counts(subjects: np.ndarray, draws: int, seed: int, *key: str) -> np.ndarray:
    """``(draws, len(subjects))``: how often each row is drawn in each bootstrap resample of
    :func:`respondent_resamples` (one row per subject, as for personas); counts make a weighted
    mean over every resample one matrix product."""
    n = len(subjects)
    resamples = respondent_resamples(subjects, draws, seed, *key)
    counts = np.zeros((draws, n))
    for b, picks in enumerate(resamples):
        counts[b] = np.bincount(picks, minlength=n)
    return counts


def weighted_mean_draws(
    values: np.ndarray, weights: np.ndarray, counts: np.ndarray
) -> tuple[Any, np.ndarray]:
    """The weighted mean of ``values`` (n,) or (n, K) and its bootstrap draws (draws,) or
    (draws, K) over the resamples ``counts`` (:func:`resample_counts`).

    ``weights`` is zero outside the segment; a draw with no weight in the segment is NaN.
    """
    total = weights.sum()
    x = values if values.ndim == 2 else values[:, None]
    estimate = (weights @ x) / total if total > 0 else np.full(x.shape[1], np.nan)
    num = counts @ (weights[:, None] * x)
    den = counts @ weights
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = np.where(den[:, None] > 0, num / den[:, None], np.nan)
    if values.ndim == 1:
        return estimate[0], boot[:, 0]
    return estimate, boot


def bootstrap_intervals(estimate: Any, draws: np.ndarray) -> tuple[Any, Any]:
    """:func:`bootstrap_interval` of a scalar ``estimate`` and its draws (draws,), or of each
    of K estimates and their draws (draws, K)."""
    if np.ndim(estimate) == 0:
        return bootstrap_interval(float(estimate), draws)
    bounds = [bootstrap_interval(float(e), draws[:, k]) for k, e in enumerate(estimate)]
    return np.array([b[0] for b in bounds]), np.array([b[1] for b in bounds])


def applicable(metric: Metric, answer: AnswerType, exact: bool) -> bool:
    if metric.needs_order and not answer.ordered:
        return False
    return not (metric.needs_exact and not exact)


def score_system(
    system: str,
    setting: str,
    temperature: float | None,
    items: pd.DataFrame,
    respondents: pd.DataFrame,
    distribution: AnswerDistribution,
    answer_types: Mapping[str, AnswerType],
    metrics: Mapping[str, Metric],
    segments: Iterable[str],
    readout: str = "answer",
    points: np.ndarray | None = None,
    bootstrap: int = 0,
    seed: int = 0,
    draws: dict[DrawKey, np.ndarray] | None = None,
) -> list[dict[str, Any]]:
    """Metric rows for one system's answers to the test items (aligned with ``items``).

    With ``points`` (one point prediction per item, e.g. E[a]), only metrics that score points
    are computed, from the points; ``distribution`` then only says which items have answers.

    With ``bootstrap`` > 0 each row gets an interval over ``bootstrap`` respondent resamples
    (:func:`respondent_resamples`, seeded by ``seed``, question and segment;
    :func:`bootstrap_interval`). When ``draws`` is given, the draws of each overall (segment
    "all") row are stored in it, for paired differences (:func:`difference_rows`).
    """
    rows = []
    human_all = items["answer"].to_numpy(float)
    weights_all = item_weights(items)
    segs = list(segment_masks(items, respondents, segments))
    for qid in items["question"].unique():
        qmask = (items["question"] == qid).to_numpy()
        answer = answer_types[qid]
        for seg_name, seg_mask in segs:
            mask = qmask & seg_mask
            if not mask.any():
                continue
            sub = distribution.subset(mask)
            model = AnswerDistribution(sub.probs[:, : len(answer.support)], sub.exact)
            human = human_all[mask]
            weights = None if weights_all is None else weights_all[mask]
            pts = points[mask] if points is not None else None
            wanted = {
                name: metric for name, metric in metrics.items()
                if applicable(metric, answer, distribution.exact)
                and (pts is None or metric.scores_points)
            }  # fmt: skip
            resamples = []
            if bootstrap > 0 and wanted:
                subjects = items["subject_id"].to_numpy()[mask]
                resamples = respondent_resamples(subjects, bootstrap, seed, str(qid), seg_name)
            t = np.nan if temperature is None else float(temperature)
            for name, metric in wanted.items():
                if pts is not None:
                    value = metric.point(human, pts, answer)
                    values = np.array(
                        [metric.point(human[i], pts[i], answer) for i in resamples], float
                    )
                else:
                    value = call_metric(metric, human, model, answer, weights)
                    values = np.array(
                        [
                            call_metric(metric, human[i], model.subset(i), answer,
                                        None if weights is None else weights[i])
                            for i in resamples
                        ],
                        float,
                    )  # fmt: skip
                low, high = bootstrap_interval(value, values)
                if draws is not None and seg_name == "all" and len(values):
                    draws[draw_key(system, setting, readout, qid, t, name)] = values
                rows.append(
                    {
                        "system": system,
                        "setting": setting,
                        "readout": readout,
                        "question": qid,
                        "temperature": t,
                        "segment": seg_name,
                        "metric": name,
                        "value": value,
                        "sd": _spread(values),
                        "ci_low": low,
                        "ci_high": high,
                        "n": int(mask.sum()),
                    }
                )
    return rows


def floor_rows(
    test_items: pd.DataFrame,
    train_items: pd.DataFrame,
    answer_types: Mapping[str, AnswerType],
    metrics: Mapping[str, Metric],
    bootstrap: int,
    seed: int,
    test_respondents: pd.DataFrame | None = None,
    train_respondents: pd.DataFrame | None = None,
    segments: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """Noise floors on the test set, per question, overall and per segment.

    A floor is what a reference "system" scores against the same test humans; a system is read
    against the floor of its kind (a sampled system against ``floor:sampling``, an exact
    distribution against ``floor:marginal``).

    * ``floor:sampling`` (population metrics): how far the test humans are from ``n`` answers
      drawn from the population itself, with ``n`` the test sample's own size. Each of
      ``bootstrap`` draws takes ``n`` answers with replacement from the *pooled* training and
      test answers to the question (of the segment's respondents, for a segment row) and scores
      them as a model against the test humans; ``value`` is the mean, ``sd`` and the 2.5-97.5
      percentiles the spread. This is what a perfect simulator that samples one answer per test
      item would score on average: a sampled system cannot be expected to go below it. Pooling
      the test answers in makes it slightly optimistic (their own answers can be drawn); with
      a training split several times the test's size that is small.
    * ``floor:split_half`` (population metrics, overall only): the test respondents split at
      random into halves scored against each other. Halves have n/2 answers each, so this floor
      carries the finite-sample bias of half the sample and lies *above* ``floor:sampling``; it
      is kept for comparison with earlier runs.
    * ``floor:uniform``: every answer equally likely (exact distribution).
    * ``floor:marginal``: the training split's answer distribution for the question (exact, the
      same distribution for every segment); not the ``marginal`` *baseline*, which samples one
      answer per item from that distribution.

    With survey weights (``weight`` column) every floor is weighted (surveysim_core.weights): the
    sampling floor draws pooled answers with probability proportional to their weight.
    """
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []

    def row(system, qid, segment, name, value, n, sd=np.nan, ci=(np.nan, np.nan)):
        readout = "distribution" if system in ("floor:uniform", "floor:marginal") else "sample"
        return {
            "system": system, "setting": "", "readout": readout, "question": qid,
            "temperature": np.nan,
            "segment": segment, "metric": name, "value": value, "sd": sd,
            "ci_low": ci[0], "ci_high": ci[1], "n": n,
        }  # fmt: skip

    segments = list(segments) if test_respondents is not None else []
    test_segs = list(segment_masks(test_items, test_respondents, segments))
    # survey weights, when the data have them: pooled draws are weighted by them too
    columns = ["question", "answer"] + (["subject_id"] if segments else [])
    columns += [c for c in ("weight",) if c in train_items.columns and c in test_items.columns]
    pooled_items = pd.concat([train_items[columns], test_items[columns]], ignore_index=True)
    pooled_segs = dict(
        segment_masks(pooled_items, pd.concat([train_respondents, test_respondents]), segments)
        if segments
        else [("all", np.ones(len(pooled_items), dtype=bool))]
    )
    for qid in test_items["question"].unique():
        answer = answer_types[qid]
        qmask = (test_items["question"] == qid).to_numpy()
        k = len(answer.support)
        population = {
            name: m for name, m in metrics.items()
            if m.level == "population" and applicable(m, answer, exact=False)
        }  # fmt: skip
        uniform = np.full(k, 1.0 / k)
        train_q = train_items[train_items["question"] == qid]
        train_w = item_weights(train_q)
        counts = np.bincount(
            answer.index_of(train_q["answer"].to_numpy(float)), weights=train_w, minlength=k
        ).astype(float)[:k]
        marginal = counts / counts.sum() if counts.sum() else uniform
        test_w = item_weights(test_items)
        pooled_q = (pooled_items["question"] == qid).to_numpy()
        for seg_name, seg_mask in test_segs:
            human = test_items.loc[qmask & seg_mask, "answer"].to_numpy(float)
            weights = None if test_w is None else test_w[qmask & seg_mask]
            n = len(human)
            if n == 0:
                continue
            in_pool = pooled_q & pooled_segs.get(seg_name, pooled_q)
            pool = pooled_items.loc[in_pool, "answer"].to_numpy(float)
            pool_w = item_weights(pooled_items.loc[in_pool])
            chance = None if pool_w is None else pool_w / pool_w.sum()
            if population and len(pool):
                gen = _rng(seed, "floor:sampling", str(qid), seg_name)
                # the drawn answers stand for the population: unit weights on the model side
                ones = None if weights is None else np.ones(n)
                for name, metric in population.items():
                    values = np.array(
                        [
                            call_metric(metric, human, AnswerDistribution.from_codes(draw, answer),
                                        answer, weights, ones)
                            for draw in (gen.choice(pool, n, p=chance) for _ in range(bootstrap))
                        ],
                        float,
                    )  # fmt: skip
                    rows.append(
                        row("floor:sampling", qid, seg_name, name, float(np.nanmean(values)), n,
                            _spread(values), percentile_interval(values))
                    )  # fmt: skip
            if seg_name == "all" and n >= 4 and population:
                halves: dict[str, list[float]] = {name: [] for name in population}
                for _ in range(bootstrap):
                    order = rng.permutation(n)
                    a, b = human[order[: n // 2]], human[order[n // 2 :]]
                    wa = wb = None
                    if weights is not None:
                        wa, wb = weights[order[: n // 2]], weights[order[n // 2 :]]
                    as_model = AnswerDistribution.from_codes(b, answer)
                    for name, metric in population.items():
                        halves[name].append(call_metric(metric, a, as_model, answer, wa, wb))
                for name, half_values in halves.items():
                    values_arr = np.asarray(half_values, float)
                    rows.append(
                        row("floor:split_half", qid, seg_name, name,
                            float(np.nanmean(values_arr)), n, _spread(values_arr),
                            percentile_interval(values_arr))
                    )  # fmt: skip
            for name, metric in metrics.items():
                if getattr(metric, "describes_humans", False) and applicable(metric, answer, True):
                    value = metric.point(human, human, answer)
                    rows.append(
                        {**row("floor:humans", qid, seg_name, name, value, n), "readout": ""}
                    )
            for system, dist in [("floor:uniform", uniform), ("floor:marginal", marginal)]:
                model = AnswerDistribution.constant(dist, n)
                for name, metric in metrics.items():
                    if applicable(metric, answer, exact=True):
                        value = call_metric(metric, human, model, answer, weights)
                        rows.append(row(system, qid, seg_name, name, value, n))
    return rows


def points_of(
    distribution: AnswerDistribution, items: pd.DataFrame, answer_types: Mapping[str, AnswerType]
) -> np.ndarray:
    """E[a] per item (each question on its own answer set): the ``expected`` readout."""
    points = np.full(len(items), np.nan)
    for qid, answer in answer_types.items():
        mask = (items["question"] == qid).to_numpy()
        if mask.any():
            points[mask] = distribution.subset(mask).expected(answer)
    return points


def mean_nll(
    distribution: AnswerDistribution, items: pd.DataFrame, answer_types: Mapping[str, AnswerType]
) -> float:
    """Mean negative log-probability of the true answers (items with probability 0 count as
    log(1e-300)), pooled over questions."""
    total, n = 0.0, 0
    for qid, answer in answer_types.items():
        mask = (items["question"] == qid).to_numpy()
        if not mask.any():
            continue
        idx = answer.index_of(items.loc[mask, "answer"].to_numpy(float))
        probs = distribution.probs[mask][:, : len(answer.support)]
        p = probs[np.arange(len(idx)), np.maximum(idx, 0)] * (idx >= 0)
        total += float(-np.sum(np.log(np.maximum(p, 1e-300))))
        n += len(idx)
    return total / n if n else float("nan")


def calibrated_temperature(
    distributions: Mapping[float, AnswerDistribution],
    items: pd.DataFrame,
    answer_types: Mapping[str, AnswerType],
) -> float | None:
    """The temperature (> 0) whose exact distributions give the validation items the lowest
    mean NLL, or None when there is none to choose from."""
    scored = [
        (mean_nll(d, items, answer_types), t)
        for t, d in distributions.items()
        if t > 0 and d.exact and len(d)
    ]
    scored = [(nll, t) for nll, t in scored if np.isfinite(nll)]
    return min(scored)[1] if scored else None


def readout_rows(
    system: str,
    setting: str,
    items: pd.DataFrame,
    respondents: pd.DataFrame,
    distributions: Mapping[float, AnswerDistribution],
    answer_types: Mapping[str, AnswerType],
    metrics: Mapping[str, Metric],
    segments: Iterable[str],
    calibrated: float | None = None,
    bootstrap: int = 0,
    seed: int = 0,
    draws: dict[DrawKey, np.ndarray] | None = None,
) -> list[dict[str, Any]]:
    """Every readout of a language-model system's answers at each temperature: ``greedy``
    (t = 0) or ``sample`` rows, ``expected`` (E[a]) rows for exact distributions at t > 0, and
    ``calibrated`` rows at the temperature chosen on validation (with its ``expected`` rows when
    that temperature is not among the others)."""
    rows: list[dict[str, Any]] = []

    def score(t, dist, readout, points=None):
        rows.extend(
            score_system(system, setting, t, items, respondents, dist, answer_types, metrics,
                         segments, readout=readout, points=points, bootstrap=bootstrap,
                         seed=seed, draws=draws)
        )  # fmt: skip

    for t, dist in distributions.items():
        score(t, dist, "greedy" if t == 0 else "sample")
        if dist.exact and t > 0:
            score(t, dist, "expected", points_of(dist, items, answer_types))
    if calibrated is not None and calibrated in distributions:
        dist = distributions[calibrated]
        score(calibrated, dist, "calibrated")
    return rows


#: which way is better for the metrics the core knows (others: lower is better)
HIGHER_IS_BETTER = {"accuracy", "success_rate", "representativeness", "pearson"}


def higher_is_better(catalogue: Mapping[str, Any]) -> set[str]:
    """The metrics where higher is better: each metric's own ``lower_is_better`` where it says,
    else :data:`HIGHER_IS_BETTER`."""
    own = {n: getattr(m, "lower_is_better", None) for n, m in catalogue.items()}
    return {n for n, lower in own.items() if lower is False} | {
        n for n in HIGHER_IS_BETTER if own.get(n) is None
    }


def is_point(row: Any, sampling: set[str]) -> bool:
    """Whether a metric row scores point predictions, to be compared with the marginal's mean:
    a language model's E[a] (``expected``) or mode (``greedy``), a regression baseline's answers;
    not sampled answers (a distribution at t > 0, a sampling baseline's draws)."""
    readout = str(row["readout"])
    return readout in ("expected", "greedy") or (
        readout == "answer" and str(row["system"]) not in sampling
    )


def undirected(catalogue: Mapping[str, Any]) -> set[str]:
    """The metrics that describe rather than score (``lower_is_better`` None and not higher
    is better, e.g. ``spread``): no system is better or worse than another by them."""
    higher = higher_is_better(catalogue)
    return {
        n for n, m in catalogue.items()
        if getattr(m, "lower_is_better", None) is None and n not in higher
    }  # fmt: skip


def difference_rows(
    metrics: pd.DataFrame,
    draws: Mapping[DrawKey, np.ndarray],
    higher: Iterable[str] = HIGHER_IS_BETTER,
    skip: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """Paired differences (system minus reference) of every overall metric row, with CIs.

    The references per question and metric are the ``marginal`` baseline and the best baseline
    (baselines are systems without a temperature, floors left out): of a grid baseline only its
    setting chosen on the validation split takes part (:func:`surveysim_core.selection.eligible`),
    and among the baselines the best validation value wins where every one has one, else the
    best test value (a run without validation respondents, or from before the choice). Both systems' values in a bootstrap draw come from the same
    resampled respondents, so the interval is the percentile interval of the per-draw
    differences. Rows whose draws are missing get NaN CIs. ``higher`` names the metrics where
    higher is better (:func:`higher_is_better` of the run's metrics); ``skip`` those with no
    direction (:func:`undirected`). A point prediction (:func:`is_point`) is compared with
    the marginal baseline's mean where it has one, sampled answers with its sampled answers.
    """
    higher_set = set(higher)
    overall = metrics[(metrics["segment"] == "all") & ~metrics["system"].str.startswith("floor:")]
    overall = overall[~overall["metric"].isin(set(skip))]
    if "readout" not in overall:
        overall = overall.assign(readout="")
    overall = overall.assign(
        setting=overall["setting"].fillna("").astype(str),
        readout=overall["readout"].fillna("").astype(str),
        temperature=pd.to_numeric(overall["temperature"], errors="coerce"),
    )
    out: list[dict[str, Any]] = []

    def key(r) -> DrawKey:
        return draw_key(
            r["system"], r["setting"], r["readout"], r["question"], r["temperature"], r["metric"]
        )

    lookup = draws.get
    # baselines that sample their answers: those that also give their mean (``expected``)
    has_mean = (overall["readout"] == "expected") & overall["temperature"].isna()
    sampling = set(overall.loc[has_mean, "system"])

    for (qid, name), group in overall.groupby(["question", "metric"], sort=False):
        baselines = eligible(group[group["temperature"].isna() & group["value"].notna()])
        if baselines.empty:
            continue
        up = name in higher_set
        basis = baselines["value"]
        if "validation_value" in baselines and baselines["validation_value"].notna().all():
            basis = baselines["validation_value"]
        best = baselines.loc[basis.idxmax() if up else basis.idxmin()]
        marginal = baselines[baselines["system"] == "marginal"]
        # the marginal's mean (True) and its sampled answers (False), where it has them; each row
        # is paired with the one of its own kind (:func:`is_point`), else with the other
        marginal_by = {
            point: rows.iloc[0]
            for point in (True, False)
            if len(rows := marginal[(marginal["readout"] == "expected") == point])
        }

        # per reference: its row for a point prediction (True) and for the others (False)
        references = [("best baseline", {True: best, False: best})]
        if marginal_by:
            references.insert(0, ("marginal baseline", marginal_by))
        for against, by_point in references:
            for _, r in group.iterrows():
                point = is_point(r, sampling)
                ref = by_point[point] if point in by_point else by_point[not point]
                if key(r) == key(ref):
                    continue
                ref_draws = lookup(key(ref))
                mine = lookup(key(r))
                low = high = np.nan
                if mine is not None and ref_draws is not None and len(mine) == len(ref_draws):
                    low, high = bootstrap_interval(r["value"] - ref["value"], mine - ref_draws)
                out.append(
                    {
                        "system": r["system"], "setting": r["setting"],
                        "readout": r["readout"], "question": qid,
                        "temperature": r["temperature"], "metric": name, "against": against,
                        "reference": ref["system"], "reference_setting": ref["setting"], "reference_readout": ref["readout"],
                        "value": r["value"], "reference_value": ref["value"],
                        "difference": r["value"] - ref["value"], "ci_low": low, "ci_high": high,
                        "higher_is_better": up,
                    }
                )  # fmt: skip
    return out


def __getattr__(name: str) -> Any:
    # SUMMARY_METRICS was the core's hard-coded list of summary metrics and their directions;
    # metrics now carry both (``Metric.summary``, ``Metric.lower_is_better``)
    if name == "SUMMARY_METRICS":
        import warnings

        warnings.warn(
            "surveysim_core.scoring.SUMMARY_METRICS is deprecated: a metric says whether the"
            " summary shows it (Metric.summary) and which way is better"
            " (Metric.lower_is_better); use summary_metrics(plan.metrics)",
            DeprecationWarning,
            stacklevel=2,
        )
        return {
            "kl": True, "rmse": True, "pearson": False, "accuracy": False, "nll": True,
            "success_rate": False,
        }  # fmt: skip
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def summary_metrics(catalogue: Mapping[str, Any]) -> dict[str, bool | None]:
    """The metrics a summary shows (each metric's own ``summary`` flag) and each one's
    direction (``lower_is_better``): those with a direction first, in catalogue order."""
    shown = {
        name: getattr(metric, "lower_is_better", None)
        for name, metric in catalogue.items()
        if getattr(metric, "summary", False)
    }
    ranked = [n for n, d in shown.items() if d is not None]
    return {n: shown[n] for n in [*ranked, *(n for n in shown if n not in ranked)]}


def summary_table(
    metrics: pd.DataFrame,
    names: Iterable[str] | None = None,
    *,
    catalogue: Mapping[str, Any] | None = None,
) -> str:
    """A readable per-question table of the overall (segment 'all') metrics.

    ``catalogue`` maps metric names to metric objects (a run's ``plan.metrics``): it says which
    metrics to show and which way each is better. Without it every metric in ``metrics`` is
    shown, none with a direction. Systems with many settings (grids) show their best setting by
    each shown metric that has a direction (lowest KL, highest accuracy), with the setting id:
    the setting chosen on the validation split (``chosen_on``, :mod:`surveysim_core.selection`),
    labelled "on validation"; in a run without validation respondents (or from before the choice
    was recorded) the best on the test split, labelled "on test".
    """
    present = set(metrics["metric"])
    directions = (
        summary_metrics(catalogue)
        if catalogue is not None
        else dict.fromkeys(dict.fromkeys(metrics["metric"]), None)
    )
    names = [n for n in (names or directions) if n in present]
    if catalogue is not None and "position_bias" in present and "position_bias" not in names:
        # a run that showed options in several orders (surveysim_core.option_order)
        names.append("position_bias")
    overall = metrics[metrics["segment"] == "all"]
    lines = []
    for qid in overall["question"].unique():
        q = overall[overall["question"] == qid]
        if "readout" not in q:
            q = q.assign(readout="")
        wide = (
            q.assign(temperature=q["temperature"].fillna(-1.0), setting=q["setting"].fillna(""),
                     readout=q["readout"].fillna(""))
            .pivot_table(index=["system", "setting", "readout", "temperature"], columns="metric",
                         values="value", aggfunc="first", sort=False)
            .reset_index()
        )  # fmt: skip
        choice = eligible(q.assign(setting=q["setting"].fillna("")))
        shown_readout = wide["readout"].isin(["greedy", "sample", "expected", "calibrated"])
        wide["system"] = wide["system"].where(
            ~shown_readout, wide["system"] + " [" + wide["readout"] + "]"
        )
        wide["temperature"] = wide["temperature"].where(wide["temperature"] >= 0)
        shown_names = [n for n in names if n in wide.columns and wide[n].notna().any()]
        shown = []
        for system, group in wide.groupby("system", sort=False):
            criteria = [
                n for n in shown_names
                if directions.get(n) is not None and group[n].notna().any()
            ]  # fmt: skip
            if group["setting"].nunique() > 3 and criteria:
                for n in criteria:
                    rows = choice[(choice["system"] == system) & (choice["metric"] == n)]
                    pick = group[group["setting"].isin(set(rows["setting"]))]
                    pick = pick if pick[n].notna().any() else group
                    best = pick[n].idxmin() if directions[n] else pick[n].idxmax()
                    on = chosen_label(rows) if len(pick) < len(group) else "on test"
                    label = f"{system} best {n} {on} ({group.loc[best, 'setting']})"
                    shown.append(group.loc[[best]].assign(system=label))
            else:
                shown.append(group)
        table = pd.concat(shown)
        width = max(28, *(len(str(s)) for s in table["system"]))
        lines.append(f"\n{qid}")
        header = f"  {'system':<{width}} {'t':>5} " + " ".join(f"{n:>13}" for n in shown_names)
        lines.append(header)
        lines.append("  " + "-" * (len(header) - 2))
        for _, r in table.iterrows():
            t = "" if pd.isna(r["temperature"]) else f"{r['temperature']:g}"
            vals = " ".join(
                f"{r[n]:>13.4f}" if pd.notna(r[n]) else f"{'':>13}" for n in shown_names
            )
            lines.append(f"  {r['system']:<{width}} {t:>5} {vals}")
    return "\n".join(lines)
