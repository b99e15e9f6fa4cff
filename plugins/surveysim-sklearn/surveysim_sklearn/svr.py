"""Support vector baseline: one scikit-learn SVR per question on one-hot demographics.

Ordered answers are regression targets on [0, 1] (see :mod:`.features`); unordered (categorical)
answers are fitted with the classifier of the same family, SVC, on the same features, where
``epsilon`` does not apply (one fit serves every epsilon).

Exact equivalences used where libsvm is impractically slow:

* linear kernel: :class:`sklearn.svm.LinearSVR` (liblinear, the same epsilon-insensitive L1 loss
  and L2 penalty, ``dual=True``), fitted to targets centred on their training mean, because
  liblinear penalises the intercept and libsvm does not; for classifiers :class:`LinearSVC`.
* every solver is capped at ``max_iter`` iterations (option, default 1,000,000); a fit that hits
  the cap (poly or sigmoid kernels with large C and gamma) is logged, and its predictions are kept.

Settings are fitted in parallel processes with joblib (``n_jobs``, default all cores); libsvm
itself is single-threaded.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
from joblib import Parallel, delayed
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import SVC, SVR, LinearSVC, LinearSVR

from surveysim_core.protocols import Baseline, BaselinePrediction, ItemSet

from .features import QuestionData, question_data, sample_weights, to_codes
from .grid_baseline import assemble, plan
from .grids import SVROptions, svr_settings

log = logging.getLogger(__name__)


def _effective(params: dict[str, Any], qd: QuestionData) -> dict[str, Any]:
    if qd.ordered:
        return dict(params)
    return {k: v for k, v in params.items() if k != "epsilon"}


def _model(params: dict[str, Any], ordered: bool, options: SVROptions, seed: int):
    kernel = params["kernel"]
    if kernel == "linear":
        common = {"C": params["C"], "max_iter": options.max_iter, "random_state": seed}
        if ordered:
            return LinearSVR(
                epsilon=params["epsilon"], loss="epsilon_insensitive", dual=True, **common
            )
        return LinearSVC(dual=True, **common)
    common = {
        "kernel": kernel,
        "C": params["C"],
        "gamma": params["gamma"],
        "max_iter": options.max_iter,
        "cache_size": options.cache_size_mb,
    }
    if ordered:
        return SVR(epsilon=params["epsilon"], **common)
    return SVC(**common)


def fit_predict(
    params: dict[str, Any],
    x_train: np.ndarray,
    target: np.ndarray,
    x_test: np.ndarray,
    ordered: bool,
    options: SVROptions,
    seed: int,
    sample_weight: np.ndarray | None = None,
) -> np.ndarray:
    """Fit one model; the test rows' predictions on the [0, 1] scale (ordered) or codes.
    ``sample_weight``: survey weights of the training rows (weighted fit), or None."""
    from surveysim_core.interrupts import ignore_interrupts_in_worker

    ignore_interrupts_in_worker()  # Ctrl-C is reported once, by the main process
    if len(np.unique(target)) == 1:
        return np.full(len(x_test), float(target[0]))
    model = _model(params, ordered, options, seed)
    centre = (
        float(np.average(target, weights=sample_weight))
        if ordered and params["kernel"] == "linear"
        else 0.0
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(x_train, target - centre if ordered else target, sample_weight=sample_weight)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        log.info("svr %s: stopped at max_iter=%d", params, options.max_iter)
    return np.asarray(model.predict(x_test), dtype=float) + centre


class SVRBaseline(Baseline):
    """SVR per question on one-hot demographics (+ intervention), over a hyper-parameter grid."""

    Options: ClassVar[type[SVROptions]] = SVROptions

    def __init__(self, options: SVROptions | None = None):
        super().__init__(options if options is not None else SVROptions())

    def settings(self) -> list[tuple[str, dict[str, Any]]]:
        return svr_settings(self.options)

    def predict(self, train: ItemSet, test: ItemSet, seed: int) -> Iterator[BaselinePrediction]:
        options: SVROptions = self.options
        settings = self.settings()
        questions = question_data(train, test, options.history)
        matrices = [
            (qd.layout.one_hot(qd.train), qd.target, qd.layout.one_hot(qd.test)) for qd in questions
        ]
        tasks, needs = plan(settings, questions, _effective)
        log.info(
            "svr: %d settings x %d questions = %d fits", len(settings), len(questions), len(tasks)
        )

        jobs = Parallel(n_jobs=options.n_jobs, return_as="generator")(
            delayed(fit_predict)(
                task.params,
                *matrices[task.question],
                questions[task.question].ordered,
                options,
                seed,
                sample_weights(questions[task.question]),
            )
            for task in tasks
        )
        results = (
            (task, _codes(raw, questions[task.question]))
            for task, raw in zip(tasks, jobs, strict=True)
        )
        yield from assemble(settings, questions, needs, results, len(test.items), "svr")


def _codes(raw: np.ndarray, qd: QuestionData) -> np.ndarray:
    return to_codes(raw, qd.answer) if qd.ordered else raw
