"""CatBoost baseline: one gradient-boosted model per question on the demographics.

Single-select demographics and the intervention are CatBoost categorical features (CatBoost's own
encodings: one-hot up to ``one_hot_max_size`` categories, target statistics above); a
multi-select field is one 0/1 column per label, since a categorical feature holds one value.
Ordered answers are regression targets on [0, 1] (RMSE loss); unordered answers use
CatBoostClassifier (MultiClass loss) with the same parameters.

``bagging_temperature`` only acts with Bayesian bootstrap, so ``bootstrap_type="Bayesian"`` is
set (CatBoost's CPU default, MVS, would silently ignore it). The paper does not give the number
of trees or their depth: CatBoost's defaults are used (1000 and 6), both options. Each fit uses
every core (``thread_count=-1`` unless ``n_jobs`` says otherwise); fits run one after another.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from catboost import CatBoostClassifier, CatBoostRegressor, Pool

from surveysim_core.protocols import Baseline, BaselinePrediction, ItemSet

from .features import QuestionData, question_data, sample_weights, to_codes
from .grid_baseline import assemble, plan
from .grids import CatBoostOptions, catboost_settings

log = logging.getLogger(__name__)


def fit_predict(
    params: dict[str, Any],
    train: tuple[pd.DataFrame, list[int]],
    target: np.ndarray,
    test: tuple[pd.DataFrame, list[int]],
    qd: QuestionData,
    options: CatBoostOptions,
    seed: int,
) -> np.ndarray:
    """Fit one model and return the answer codes of the question's test rows."""
    (x_train, cat_features), (x_test, _) = train, test
    if len(np.unique(target)) == 1:
        value = float(target[0])
        return np.full(len(x_test), to_codes([value], qd.answer)[0] if qd.ordered else value)
    common = {
        **params,
        "iterations": options.iterations,
        "depth": options.depth,
        "bootstrap_type": "Bayesian",
        "thread_count": options.n_jobs,
        "random_seed": seed,
        "verbose": False,
        "allow_writing_files": False,
    }
    if qd.ordered:
        model = CatBoostRegressor(loss_function="RMSE", **common)
        model.fit(Pool(x_train, target, cat_features=cat_features, weight=sample_weights(qd)))
        predicted = model.predict(Pool(x_test, cat_features=cat_features))
        return to_codes(predicted, qd.answer)
    support = np.asarray(qd.answer.support, dtype=float)
    labels = qd.answer.index_of(target)  # class = position in support, valid by construction
    model = CatBoostClassifier(loss_function="MultiClass", **common)
    model.fit(Pool(x_train, labels, cat_features=cat_features, weight=sample_weights(qd)))
    predicted = np.asarray(model.predict(Pool(x_test, cat_features=cat_features))).reshape(-1)
    return support[predicted.astype(int)]


class CatBoostBaseline(Baseline):
    """CatBoost per question on categorical demographics (+ intervention), over a grid."""

    Options: ClassVar[type[CatBoostOptions]] = CatBoostOptions

    def __init__(self, options: CatBoostOptions | None = None):
        super().__init__(options if options is not None else CatBoostOptions())

    def settings(self) -> list[tuple[str, dict[str, Any]]]:
        return catboost_settings(self.options)

    def predict(self, train: ItemSet, test: ItemSet, seed: int) -> Iterator[BaselinePrediction]:
        options: CatBoostOptions = self.options
        settings = self.settings()
        questions = question_data(train, test, options.history)
        tables = [
            (qd.layout.categorical(qd.train), qd.layout.categorical(qd.test)) for qd in questions
        ]
        tasks, needs = plan(settings, questions, lambda params, qd: dict(params))
        log.info(
            "catboost: %d settings x %d questions = %d fits",
            len(settings),
            len(questions),
            len(tasks),
        )
        results = (
            (
                task,
                fit_predict(
                    task.params,
                    tables[task.question][0],
                    questions[task.question].target,
                    tables[task.question][1],
                    questions[task.question],
                    options,
                    seed,
                ),
            )
            for task in tasks
        )
        yield from assemble(settings, questions, needs, results, len(test.items), "catboost")
