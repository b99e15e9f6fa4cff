"""Survey weights: one positive weight per respondent, carried on each of their answers.

A survey names its weight column (``weight:`` in the survey YAML) or a run names it
(``data.weight``); the long format then has that column, the same number on every row of a
respondent. Validated answers carry it as :data:`WEIGHT_COLUMN` in ``SurveyData.responses`` and
``ItemSet.items``. Metrics that declare ``weighted = True`` receive the weights of the rows they
compare and weigh each respondent-item by them; weights are rescaled to mean 1 within each
compared group, so that weighted counts sum to the number of answers and histogram smoothing
weighs as much as without weights.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

#: the column holding each answer's respondent weight, once validated
WEIGHT_COLUMN = "weight"

_warned: set[str] = set()


def parse_weight(value: Any) -> float | None:
    """A weight as a float, or None if it is not a positive finite number."""
    try:
        number = float(str(value).strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def item_weights(items: pd.DataFrame) -> np.ndarray | None:
    """The weights of ``items`` (aligned), or None when the data have none."""
    if WEIGHT_COLUMN not in items.columns:
        return None
    return items[WEIGHT_COLUMN].to_numpy(float)


def normalised(weights: np.ndarray | None, n: int) -> np.ndarray:
    """Weights rescaled to mean 1 (all ones when there are none)."""
    if weights is None:
        return np.ones(n)
    weights = np.asarray(weights, float)
    total = weights.sum()
    return weights * (len(weights) / total) if total > 0 else np.ones(n)


def call_metric(
    metric: Any,
    human: np.ndarray,
    model: Any,
    answer: Any,
    weights: np.ndarray | None = None,
    model_weights: np.ndarray | None = None,
) -> float:
    """``metric(human, model, answer)``, with the rows' weights if there are any and the metric
    takes them. ``model_weights`` are the model rows' weights where they are other respondents
    than the human rows (the split-half floor); by default the human rows' weights."""
    if weights is None:
        return metric(human, model, answer)
    if getattr(metric, "weighted", False):
        return metric(human, model, answer, weights=weights, model_weights=model_weights)
    if metric.name not in _warned:  # once per metric, not once per question and segment
        _warned.add(metric.name)
        log.warning("metric %s takes no survey weights; it is computed unweighted", metric.name)
    return metric(human, model, answer)
