"""The scoring stage: one path for every system. A system's result becomes metric rows (with
bootstrap intervals), a predictions table and settings rows, written under ``systems/<name>/``;
a resumed run reads back the systems already scored instead of running them again.

Every system is scored on the same bootstrap resamples of the test respondents; the draws of its
overall rows (``Scored.draws``) pair its values with every other system's for
``differences.csv`` (:func:`surveysim_core.scoring.difference_rows`). They are kept beside the
metrics (``systems/<name>/draws.npz``, arrays only) so that a resumed run still pairs the
systems it kept; a system whose answers come from the result cache is scored afresh, so its
draws are recomputed from the cached distributions.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from surveysim_core.option_order import position_rows
from surveysim_core.plan import Plan
from surveysim_core.protocols import ItemSet, Progress, System, SystemAnswers, SystemResult
from surveysim_core.report import system_headline
from surveysim_core.rundir import RunDir
from surveysim_core.scoring import (
    METRIC_COLUMNS,
    DrawKey,
    higher_is_better,
    readout_rows,
    score_system,
)
from surveysim_core.selection import CHOICE_COLUMNS, choice_summary, mark_choice
from surveysim_core.systems import system_id

#: metrics.csv: the tidy columns, the id of the system's full settings, then how a baseline's
#: setting was chosen (:mod:`surveysim_core.selection`)
SCORED_COLUMNS = [*METRIC_COLUMNS, "system_id", *CHOICE_COLUMNS]
#: settings.csv; ``validation``: a baseline setting's validation values and what it was chosen for
SETTINGS_COLUMNS = ["system", "system_id", "setting", "params", "settings", "validation"]


@dataclass
class Scored:
    """A system's metric rows and settings rows (and, when just computed, its predictions)."""

    metrics: pd.DataFrame
    settings: list[dict[str, Any]]
    predictions: pd.DataFrame | None = None
    timings: dict[str, float] = field(default_factory=dict)
    #: bootstrap draws of the overall rows, for paired differences (empty: none known)
    draws: dict[DrawKey, np.ndarray] = field(default_factory=dict)


def score_result(
    result: SystemResult, plan: Plan, test: ItemSet, val: ItemSet | None = None
) -> Scored:
    """Metric rows, predictions and settings rows of one system's answers to ``test``.

    Answers without a temperature (a baseline's) are scored as given (readout ``answer``), and
    their setting per question and metric is chosen on the validation split where the result
    has answers to ``val`` (:func:`~surveysim_core.selection.mark_choice`);
    answers at temperatures (a language model's) get every readout of
    :func:`~surveysim_core.scoring.readout_rows` (greedy / sample, expected, calibrated).
    """
    sid = system_id(result.settings)
    ev = plan.config.evaluation
    draws: dict[DrawKey, np.ndarray] = {}
    # the same respondent resamples for every system: differences between them are paired
    boot: dict[str, Any] = {"bootstrap": ev.bootstrap, "seed": ev.seed, "draws": draws}
    rows: list[dict[str, Any]] = []
    preds: list[pd.DataFrame] = []
    settings: list[dict[str, Any]] = []
    by_setting: dict[str, dict[float, Any]] = {}
    for ans in result.answers:
        if ans.temperature is None:
            rows += baseline_rows(result.system, ans, test, plan, plan.segments, **boot)
            # where the answer options were shown in another order: answers by position
            shown = position_rows(
                result.system, ans.setting, None, test.items, ans.distribution.probs,
                plan.answer_types, option_orders(plan), plan.config.decoding.seed,
            )  # fmt: skip
            rows += [{**r, "readout": "answer"} for r in shown]
        else:
            by_setting.setdefault(ans.setting, {})[ans.temperature] = ans.distribution
            # a language model saw the options in their shown order: its mass by position
            shown = position_rows(
                result.system, ans.setting, ans.temperature, test.items, ans.distribution.probs,
                plan.answer_types, option_orders(plan), plan.config.decoding.seed,
            )  # fmt: skip
            readout = "greedy" if ans.temperature == 0 else "sample"
            rows += [{**r, "readout": readout} for r in shown]
        preds.append(prediction_frame(test, result.system, ans))
        if ans.setting not in {s["setting"] for s in settings}:
            settings.append(
                {
                    "system": result.system,
                    "system_id": sid,
                    "setting": ans.setting,
                    "params": json.dumps(ans.params, sort_keys=True, default=str),
                    "settings": json.dumps(result.settings, sort_keys=True, default=str),
                }
            )
    for setting, dists in by_setting.items():
        rows += readout_rows(
            result.system, setting, test.items, test.respondents, dists, plan.answer_types,
            plan.metrics, plan.segments, calibrated=result.calibrated_temperature, **boot,
        )  # fmt: skip
    metrics = pd.DataFrame(rows, columns=METRIC_COLUMNS).assign(system_id=sid)
    if any(a.temperature is None for a in result.answers):
        metrics = mark_choice(
            metrics, _validation_rows(result, plan, val), higher_is_better(plan.metrics),
            result.system,
        )  # fmt: skip
        choice = choice_summary(metrics)
        for row in settings:
            row["validation"] = json.dumps(choice.get(str(row["setting"]), {}), sort_keys=True)
    metrics = metrics.reindex(columns=SCORED_COLUMNS)
    predictions = pd.concat(preds, ignore_index=True) if preds else None
    return Scored(metrics, settings, predictions, draws=draws)


def _validation_rows(result: SystemResult, plan: Plan, val: ItemSet | None) -> pd.DataFrame | None:
    """Overall metric rows of the result's answers to the validation items (no bootstrap, no
    segments); None when there are none."""
    if val is None or not len(val) or not result.validation:
        return None
    rows: list[dict[str, Any]] = []
    for ans in result.validation:
        if ans.temperature is None:
            rows += baseline_rows(result.system, ans, val, plan, [])
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)


def baseline_rows(
    system: str, ans: SystemAnswers, items: ItemSet, plan: Plan, segments: list[str], **boot: Any
) -> list[dict[str, Any]]:
    """Metric rows of a baseline setting's answers as given (readout ``answer``) and, for a
    sampling baseline, of its distribution's mean as the point prediction (``expected``), as a
    language model's E[a] is scored."""

    def score(**readout: Any) -> list[dict[str, Any]]:
        return score_system(
            system, ans.setting, None, items.items, items.respondents, ans.distribution,
            plan.answer_types, plan.metrics, segments, **readout, **boot,
        )  # fmt: skip

    rows = score()
    if ans.expected is not None:
        rows += score(readout="expected", points=ans.expected)
    return rows


def write_draws(rd: RunDir, name: str, draws: dict[DrawKey, np.ndarray]) -> None:
    """A system's bootstrap draws as ``draws.npz`` (one row per key, no pickles) and their keys
    as ``draws.json``."""
    keys = list(draws)
    width = max((len(v) for v in draws.values()), default=0)
    table = np.full((len(keys), width), np.nan)
    for i, k in enumerate(keys):
        table[i, : len(draws[k])] = draws[k]
    folder = rd.path / f"systems/{name}"
    if rd.main:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "draws.tmp.npz"
        np.savez(tmp, draws=table)
        tmp.replace(folder / "draws.npz")
    rd.write_text(f"systems/{name}/draws.json", json.dumps([list(k) for k in keys]))


def read_draws(rd: RunDir, name: str) -> dict[DrawKey, np.ndarray]:
    """The draws :func:`write_draws` kept; empty when there are none (a run from before they
    were kept: its differences get no intervals)."""
    folder = rd.path / f"systems/{name}"
    try:
        keys = json.loads((folder / "draws.json").read_text(encoding="utf-8"))
        with np.load(folder / "draws.npz", allow_pickle=False) as arrays:
            table = arrays["draws"]
    except (OSError, ValueError, KeyError):
        return {}
    if len(keys) != len(table):
        return {}
    return {
        (str(k[0]), str(k[1]), str(k[2]), str(k[3]), float(k[4]), str(k[5])): row[np.isfinite(row)]
        for k, row in zip(keys, table, strict=True)
    }


def option_orders(plan: Plan) -> dict[str, str]:
    """Each question's answer option order (its own, else the run's ``decoding.option_order``)."""
    order = plan.config.decoding.option_order
    return {q.id: q.option_order or order for q in plan.survey.spec.questions}


def distribution_frame(test: ItemSet, plan: Plan, answers: list[SystemAnswers]) -> pd.DataFrame:
    """Per-respondent answer distributions, one row per item and temperature: the probability
    of each answer as a list aligned with ``answers``."""
    frames = []
    widths = test.items["question"].map({q: len(a.support) for q, a in plan.answer_types.items()})
    for ans in answers:
        frame = test.items[["subject_id", "question", "seq", "answer"]].rename(
            columns={"answer": "true_answer"}
        )
        frame.insert(0, "temperature", ans.temperature)
        frame["answers"] = [list(plan.answer_types[q].support) for q in frame["question"]]
        frame["probs"] = [
            row[:w].tolist() for row, w in zip(ans.distribution.probs, widths, strict=True)
        ]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def prediction_frame(test: ItemSet, system: str, ans: SystemAnswers) -> pd.DataFrame:
    """Per-item answers beside the true ones, with the item's context columns."""
    frame = test.items[["subject_id", "question", "seq", "answer"]].copy()
    for col in test.items.columns:
        if col not in {"subject_id", "question", "seq", "answer", "answer_text"}:
            frame[col] = test.items[col]
    frame = frame.rename(columns={"answer": "true_answer"})
    frame.insert(0, "temperature", np.nan if ans.temperature is None else ans.temperature)
    frame.insert(0, "setting", ans.setting)
    frame.insert(0, "system", system)
    codes = np.full(len(test), np.nan) if ans.codes is None else np.asarray(ans.codes, float)
    frame["answer"] = codes
    frame["ok"] = np.isfinite(codes)
    if ans.texts is not None:
        frame["text"] = ans.texts
    return frame


def run_and_score(
    systems: list[System],
    plan: Plan,
    rd: RunDir,
    train: ItemSet,
    val: ItemSet,
    test: ItemSet,
    resume: bool,
    progress: Progress,
) -> list[Scored]:
    """Run each system and score it, keeping on resume the systems a run already scored."""
    fmt = plan.config.output.predictions_format
    out = []
    for system in systems:
        folder = f"systems/{system.name}"
        if resume and rd.done(f"{folder}/metrics.csv") and rd.done(f"{folder}/settings.csv"):
            progress(f"{system.name}: done earlier, kept")
            out.append(
                Scored(
                    pd.read_csv(rd.path / f"{folder}/metrics.csv"),
                    pd.read_csv(rd.path / f"{folder}/settings.csv").to_dict("records"),
                    draws=read_draws(rd, system.name),
                )
            )
            continue
        tick = time.time()
        progress(f"{system.name}: running")
        result = system.run(train, val, test)
        scored = score_result(result, plan, test, val)
        if scored.predictions is not None:
            rd.write_frame(f"{folder}/predictions.{fmt}", scored.predictions)
        at_temperatures = [a for a in result.answers if a.temperature is not None]
        if at_temperatures and _has_parquet():
            # Parquet needs the core's [parquet] extra; predictions.* still hold the answers
            frame = distribution_frame(test, plan, at_temperatures)
            rd.write_frame(f"{folder}/distributions.parquet", frame)
        rd.write_frame(
            f"{folder}/settings.csv", pd.DataFrame(scored.settings, columns=SETTINGS_COLUMNS)
        )
        write_draws(rd, system.name, scored.draws)
        throughput = getattr(system, "throughput", None)
        if throughput:
            rd.write_text(f"{folder}/throughput.json", json.dumps(throughput, indent=1))
        # last: its presence marks the system as done for a resumed run
        rd.write_frame(f"{folder}/metrics.csv", scored.metrics)
        scored.timings[f"system:{system.name}"] = time.time() - tick
        for key, value in getattr(system, "timings", {}).items():
            scored.timings[f"system:{system.name}:{key}"] = value
        progress(f"{system.name}: {len(scored.settings)} setting(s) in {time.time() - tick:.1f}s")
        progress(system_headline(scored.metrics))
        out.append(scored)
    return out


def _has_parquet() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True
