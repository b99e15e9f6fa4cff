"""What the SVR and CatBoost baselines share: a grid of settings, one model per question each.

Every setting is fitted on every question and yielded as one
:class:`~surveysim_core.protocols.BaselinePrediction` whose codes cover all test rows. Fits are
planned as *tasks* keyed by what actually changes the model, so that a parameter that does not
apply to a question (epsilon for a classifier) does not cause a second identical fit.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from surveysim_core.protocols import BaselinePrediction

from .features import QuestionData

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Task:
    """One model to fit: a question (by position) and the parameters that matter for it."""

    question: int
    params_json: str

    @property
    def params(self) -> dict[str, Any]:
        return json.loads(self.params_json)


def plan(
    settings: list[tuple[str, dict[str, Any]]],
    questions: list[QuestionData],
    effective: Callable[[dict[str, Any], QuestionData], dict[str, Any]],
) -> tuple[list[Task], list[list[Task]]]:
    """Unique tasks in order of first need, and the tasks each setting needs (one per question)."""
    unique: dict[Task, None] = {}
    needs = []
    for _, params in settings:
        row = []
        for qi, qd in enumerate(questions):
            task = Task(qi, json.dumps(effective(params, qd), sort_keys=True))
            unique.setdefault(task, None)
            row.append(task)
        needs.append(row)
    return list(unique), needs


def assemble(
    settings: list[tuple[str, dict[str, Any]]],
    questions: list[QuestionData],
    needs: list[list[Task]],
    results: Iterable[tuple[Task, np.ndarray]],
    n_test: int,
    label: str = "",
) -> Iterator[BaselinePrediction]:
    """Yield each setting's prediction as soon as all its tasks are done, in grid order.

    ``results`` must arrive in the order of the unique task list from :func:`plan`, so that each
    setting completes no later than the settings after it.
    """
    from surveysim_core.logs import Ticker

    done: dict[Task, np.ndarray] = {}
    next_setting = 0
    total = len({t for tasks in needs for t in tasks})
    # a grid can fit for minutes: a line with an ETA at least every 10 s
    ticker = Ticker(f"{label} fits" if label else "fits", total, logger=log)
    for task, codes in results:
        done[task] = codes
        ticker.step()
        while next_setting < len(settings) and all(t in done for t in needs[next_setting]):
            setting, params = settings[next_setting]
            out = np.full(n_test, np.nan)
            for qd, t in zip(questions, needs[next_setting], strict=True):
                out[qd.test_rows] = done[t]
            yield BaselinePrediction(setting=setting, params=dict(params), codes=out)
            next_setting += 1
    for setting, params in settings[next_setting:]:  # no questions at all
        yield BaselinePrediction(
            setting=setting, params=dict(params), codes=np.full(n_test, np.nan)
        )
