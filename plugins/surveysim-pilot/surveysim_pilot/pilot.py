"""``surveysim pilot``: the shift each intervention statement causes, per segment, and rankings.

Without respondent memory a persona's answer after a statement is asked afresh, not after its
own earlier answer, so the shift is a difference of population means:
``mean over personas of E[answer | statement] - E[answer | pre-intervention question]``. The share
whose answer rises treats the two answers of a persona as independent draws:
``sum_a P_pre(a) * P_post(answer > a)``.

With respondent memory (a system trained with ``prompts.memory``) the shift is within-person:
each persona's pre-intervention answer ``a_i`` is drawn from its exact distribution (seeded) and
kept in the conversation before every statement, so the shift is ``E[answer | statement, a_i] -
a_i`` and the share rising is ``P(answer > a_i)``, averaged over personas. The report and
``shifts.csv`` (``basis``) say which.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from surveysim_core.errors import ConfigError
from surveysim_core.files import atomic_directory
from surveysim_core.plugins import Plugins
from surveysim_core.protocols import Progress
from surveysim_core.scoring import bootstrap_intervals, percentile_interval, weighted_mean_draws
from surveysim_pilot.config import PilotConfig
from surveysim_pilot.simulate import (
    Prepared,
    answer,
    answer_and_write,
    check_summary,
    item_prompts,
    normalised,
    persona_segments,
    prepare,
)

SHIFT_BASIS = (
    "difference of population means (no respondent memory): each persona answers the"
    " pre-intervention question and each statement independently"
)
WITHIN_PERSON_BASIS = (
    "within-person (respondent memory): each persona's pre-intervention answer is drawn from"
    " its exact distribution (seeded) and kept in the conversation; the shift is the answer"
    " after the statement minus that answer"
)
#: the item-id key under which the drawn pre-intervention answers (answer indices) travel
PRE_DRAWN = "__pre_answer_drawn__"


def within_person_answerer(pre_question: str, seed: int):
    """An ``answerer`` for :func:`answer_and_write` with respondent memory: the pre-intervention
    question first; each persona's answer to it drawn from its exact distribution; then every
    statement with that (question, answer) turn before it in the conversation."""

    def answer_within(prepared: Prepared, model, progress: Progress) -> dict[str, np.ndarray]:
        pre_items = [i for i in prepared.items if i.statement is None]
        rest = [i for i in prepared.items if i.statement is not None]
        pre_item = next(i for i in pre_items if i.question == pre_question)
        probs = answer(dataclasses.replace(prepared, items=pre_items), model, progress)
        labels = list(prepared.plan.answer_types[pre_question].labels)
        p, mass = normalised(probs[pre_item.id])
        rng = np.random.default_rng(seed)
        drawn = np.array(
            [
                rng.choice(len(labels), p=row) if m > 0 else -1
                for row, m in zip(p, mass, strict=True)
            ]
        )
        pre_prompts = item_prompts(prepared, [pre_item])
        history = [
            ((prompt.user, labels[a]),) if a >= 0 else ()
            for prompt, a in zip(pre_prompts, drawn, strict=True)
        ]
        if rest:
            probs |= answer(dataclasses.replace(prepared, items=rest), model, progress, history)
        probs[PRE_DRAWN] = drawn
        return probs

    return answer_within


def prepare_pilot(
    config: PilotConfig, source: str, plugins: Plugins, progress: Progress | None = None
) -> Prepared:
    """Check a pilot configuration: the pre-intervention question is asked first."""
    questions = [config.pre_question, *(q for q in config.questions if q != config.pre_question)]
    prepared = prepare(
        config.model_copy(update={"questions": questions}), source, plugins, progress
    )
    answer_types = prepared.plan.answer_types
    pre = answer_types[config.pre_question]
    for item in prepared.items:
        at = answer_types[item.question]
        if item.statement is not None and (list(at.labels) != list(pre.labels) or not at.ordered):
            raise ConfigError(
                f"{source}: statements.question: {item.question} must have the same ordered"
                f" answers as pre_question {config.pre_question} to compute a shift"
            )
    return prepared


def check_pilot(
    config: PilotConfig, source: str, plugins: Plugins, progress: Progress | None = None
) -> list[str]:
    """:func:`check_summary` of a pilot, with the shift's basis; loads no model, writes nothing."""
    prepared = prepare_pilot(config, source, plugins, progress)
    memory = bool(prepared.plan.config.prompts.memory)
    deferred = frozenset(i.id for i in prepared.items if memory and i.statement is not None)
    return [
        *check_summary(prepared, deferred),
        f"shift: {WITHIN_PERSON_BASIS if memory else SHIFT_BASIS}",
    ]


def rise_probability(pre: np.ndarray, post: np.ndarray) -> np.ndarray:
    """Per row, ``P(post > pre)`` for independent draws from two distributions over the same
    ordered answers: ``sum_a pre(a) * sum_{b > a} post(b)``."""
    above = 1.0 - np.cumsum(post, axis=1)  # above[:, a] = P(post > a)
    return (pre * np.clip(above, 0.0, 1.0)).sum(axis=1)


def _ranks(values: np.ndarray) -> np.ndarray:
    """Rank along the last axis, 1 = largest (ties broken by order)."""
    order = np.argsort(-values, axis=-1, kind="stable")
    return np.argsort(order, axis=-1, kind="stable") + 1


def shift_frame(
    prepared: Prepared, probs: dict[str, np.ndarray], counts: np.ndarray, pre_question: str
) -> pd.DataFrame:
    """Per statement and segment: mean shift and share rising with 95% bootstrap CIs, and the
    statement's rank in its segment (1 = largest shift) with its 95% bootstrap range."""
    at = prepared.plan.answer_types[pre_question]
    pre_p, pre_mass = normalised(probs[pre_question])
    drawn = probs.get(PRE_DRAWN)
    if drawn is not None:
        # within-person: the persona's own pre answer, as a point mass
        pre_p = np.zeros_like(pre_p)
        ok = drawn >= 0
        pre_p[np.nonzero(ok)[0], drawn[ok]] = 1.0
        pre_mass = ok.astype(float)
    pre_mean = pre_p @ at.support
    statements = [i for i in prepared.items if i.statement is not None]
    w = prepared.population.weights
    rows = []
    for seg, option, mask in persona_segments(prepared):
        boots, ests = [], []
        for item in statements:
            post_p, post_mass = normalised(probs[item.id])
            ws = np.where(mask & (pre_mass > 0) & (post_mass > 0), w, 0.0)
            shift = post_p @ at.support - pre_mean
            est, boot = weighted_mean_draws(shift, ws, counts)
            lo, hi = bootstrap_intervals(est, boot)
            rise, rise_boot = weighted_mean_draws(rise_probability(pre_p, post_p), ws, counts)
            rise_lo, rise_hi = bootstrap_intervals(rise, rise_boot)
            pre_est, _ = weighted_mean_draws(pre_mean, ws, counts)
            rows.append(
                {
                    "statement": item.statement, "text": item.text, "group": item.group or "",
                    "new": item.new, "segment": seg, "value": option,
                    "n_personas": int(mask.sum()), "weight": float(w[mask].sum()),
                    "pre_mean": pre_est, "post_mean": pre_est + est,
                    "mean_shift": est, "mean_shift_low": lo, "mean_shift_high": hi,
                    "share_rises": rise, "share_rises_low": rise_lo, "share_rises_high": rise_hi,
                }
            )  # fmt: skip
            boots.append(boot)
            ests.append(est)
        boot_matrix = np.column_stack(boots)  # (draws, statements)
        complete = ~np.isnan(boot_matrix).any(axis=1)
        boot_ranks = _ranks(boot_matrix[complete])
        point = _ranks(np.asarray(ests))
        for k in range(len(statements)):
            row = rows[len(rows) - len(statements) + k]
            row["rank"] = int(point[k])
            if complete.any():
                # a rank's range, not an estimate's interval: the plain percentiles
                lo, hi = percentile_interval(boot_ranks[:, k])
                row["rank_low"], row["rank_high"] = int(np.floor(lo)), int(np.ceil(hi))
                row["p_top"] = float((boot_ranks[:, k] == 1).mean())
            else:
                row["rank_low"] = row["rank_high"] = -1
                row["p_top"] = float("nan")
            row["of"] = len(statements)
    frame = pd.DataFrame(rows)
    frame["basis"] = WITHIN_PERSON_BASIS if drawn is not None else SHIFT_BASIS
    return frame


def pilot(
    config: PilotConfig, source: str, plugins: Plugins, progress: Progress | None = None
) -> Path:
    """Simulate, then write shifts.csv and the report page; return the output folder."""
    from surveysim_pilot.report import write_pilot_report

    progress = progress or Progress()
    prepared = prepare_pilot(config, source, plugins, progress)

    def write(folder: Path) -> None:
        memory = bool(prepared.plan.config.prompts.memory)
        answerer = within_person_answerer(config.pre_question, config.seed) if memory else None
        probs, counts = answer_and_write(
            prepared, folder, plugins, progress, config.bootstrap, config.seed, answerer
        )
        shifts = shift_frame(prepared, probs, counts, config.pre_question)
        shifts.to_csv(folder / "shifts.csv", index=False)
        write_pilot_report(prepared, shifts, folder)

    return atomic_directory(prepared.output, write)
