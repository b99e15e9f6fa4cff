"""Scoring: metric rows per system, question, temperature and demographic segment, and the noise
floors every run reports (split-half human agreement, uniform and training-marginal null models).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from surveysim_core.answers import AnswerDistribution, AnswerType
from surveysim_core.protocols import Metric
from surveysim_core.weights import call_metric, item_weights

METRIC_COLUMNS = [
    "system", "setting", "readout", "question", "temperature", "segment", "metric", "value",
    "sd", "n",
]  # fmt: skip

#: How a system's answers are read out (the ``readout`` column):
#: ``answer``: a baseline's answers as it gives them; ``greedy``: the most likely answer (t = 0);
#: ``sample``: the answer distribution at temperature t (metrics of sampled answers, exactly in
#: expectation for an exact decoder); ``expected``: the point prediction E[a] of the distribution
#: at t (point metrics only: rmse, pearson); ``calibrated``: the distribution at the temperature
#: with the lowest NLL on the validation split; ``distribution``: a null model's exact
#: distribution (floors).
READOUTS = ("answer", "greedy", "sample", "expected", "calibrated", "distribution")


def segment_masks(
    items: pd.DataFrame, respondents: pd.DataFrame, fields: Iterable[str]
) -> Iterable[tuple[str, np.ndarray]]:
    """("all", everything), then ("field=option", mask) for each option of each segment field."""
    yield "all", np.ones(len(items), dtype=bool)
    for name in fields:
        values = items["subject_id"].map(respondents[name]).astype(str).to_numpy()
        for option in sorted(set(values)):
            yield f"{name}={option}", values == option


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
) -> list[dict[str, Any]]:
    """Metric rows for one system's answers to the test items (aligned with ``items``).

    With ``points`` (one point prediction per item, e.g. E[a]), only metrics that score points
    are computed, from the points; ``distribution`` then only says which items have answers.
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
            for name, metric in metrics.items():
                if not applicable(metric, answer, distribution.exact):
                    continue
                if points is not None:
                    if not metric.scores_points:
                        continue
                    value = metric.point(human, points[mask], answer)
                else:
                    value = call_metric(metric, human, model, answer, weights)
                rows.append(
                    {
                        "system": system,
                        "setting": setting,
                        "readout": readout,
                        "question": qid,
                        "temperature": np.nan if temperature is None else float(temperature),
                        "segment": seg_name,
                        "metric": name,
                        "value": value,
                        "sd": np.nan,
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
) -> list[dict[str, Any]]:
    """Noise floors on the test set, per question.

    * ``floor:split_half``: the test respondents split at random into two halves; one half's
      answers are scored as if they were a model's against the other half (population-level
      metrics only). Repeated ``bootstrap`` times: ``value`` is the mean, ``sd`` the spread.
      Halves have n/2 answers each, so this floor is slightly pessimistic for n-sized samples.
    * ``floor:uniform``: every answer equally likely (exact distribution).
    * ``floor:marginal``: the training split's answer distribution for the question (exact).

    With survey weights (``weight`` column) every floor is weighted (surveysim_core.weights).
    """
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []

    def row(system, qid, name, value, sd, n):
        readout = "sample" if system == "floor:split_half" else "distribution"
        return {
            "system": system, "setting": "", "readout": readout, "question": qid,
            "temperature": np.nan,
            "segment": "all", "metric": name, "value": value, "sd": sd, "n": n,
        }  # fmt: skip

    for qid in test_items["question"].unique():
        answer = answer_types[qid]
        human = test_items.loc[test_items["question"] == qid, "answer"].to_numpy(float)
        weights = item_weights(test_items[test_items["question"] == qid])
        n = len(human)
        k = len(answer.support)
        population = {
            name: m for name, m in metrics.items()
            if m.level == "population" and applicable(m, answer, exact=False)
        }  # fmt: skip
        if n >= 4 and population:
            draws: dict[str, list[float]] = {name: [] for name in population}
            for _ in range(bootstrap):
                order = rng.permutation(n)
                a, b = human[order[: n // 2]], human[order[n // 2 :]]
                as_model = AnswerDistribution.from_codes(b, answer)
                wa = wb = None
                if weights is not None:
                    wa, wb = weights[order[: n // 2]], weights[order[n // 2 :]]
                for name, metric in population.items():
                    draws[name].append(call_metric(metric, a, as_model, answer, wa, wb))
            for name, values in draws.items():
                values_arr = np.asarray(values, float)
                rows.append(
                    row("floor:split_half", qid, name, float(np.nanmean(values_arr)),
                        float(np.nanstd(values_arr, ddof=1)), n)
                )  # fmt: skip
        uniform = np.full(k, 1.0 / k)
        train_q = train_items[train_items["question"] == qid]
        train_codes = train_q["answer"].to_numpy(float)
        train_idx = answer.index_of(train_codes)
        train_w = item_weights(train_q)
        counts = np.bincount(
            train_idx, weights=None if train_w is None else train_w, minlength=k
        ).astype(float)[:k]
        marginal = counts / counts.sum() if counts.sum() else uniform
        for system, dist in [("floor:uniform", uniform), ("floor:marginal", marginal)]:
            model = AnswerDistribution.constant(dist, n)
            for name, metric in metrics.items():
                if applicable(metric, answer, exact=True):
                    value = call_metric(metric, human, model, answer, weights)
                    rows.append(row(system, qid, name, value, np.nan, n))
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
) -> list[dict[str, Any]]:
    """Every readout of a language-model system's answers at each temperature: ``greedy``
    (t = 0) or ``sample`` rows, ``expected`` (E[a]) rows for exact distributions at t > 0, and
    ``calibrated`` rows at the temperature chosen on validation (with its ``expected`` rows when
    that temperature is not among the others)."""
    rows: list[dict[str, Any]] = []

    def score(t, dist, readout, points=None):
        rows.extend(
            score_system(system, setting, t, items, respondents, dist, answer_types, metrics,
                         segments, readout=readout, points=points)
        )  # fmt: skip

    for t, dist in distributions.items():
        score(t, dist, "greedy" if t == 0 else "sample")
        if dist.exact and t > 0:
            score(t, dist, "expected", points_of(dist, items, answer_types))
    if calibrated is not None and calibrated in distributions:
        dist = distributions[calibrated]
        score(calibrated, dist, "calibrated")
    return rows


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
    each shown metric that has a direction (lowest KL, highest accuracy), with the setting id.
    """
    present = set(metrics["metric"])
    directions = (
        summary_metrics(catalogue)
        if catalogue is not None
        else dict.fromkeys(dict.fromkeys(metrics["metric"]), None)
    )
    names = [n for n in (names or directions) if n in present]
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
                    best = group[n].idxmin() if directions[n] else group[n].idxmax()
                    label = f"{system} best {n} ({group.loc[best, 'setting']})"
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
