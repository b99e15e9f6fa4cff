"""Survey weights reach the SVR baseline's fits (``sample_weight``)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")

from surveysim_sklearn.grids import SVROptions
from surveysim_sklearn.svr import fit_predict


@pytest.mark.parametrize(
    ("params", "ordered"),
    [
        ({"kernel": "rbf", "C": 1.0, "gamma": 1.0, "epsilon": 0.1}, False),
        ({"kernel": "linear", "C": 1.0, "epsilon": 0.0}, True),
    ],
)
def test_weights_decide_between_answers_with_the_same_features(params, ordered):
    # four respondents with identical features: three answered 0, one answered 1. Unweighted the
    # majority wins; with the fourth weighing 10 against 3 the weighted majority (or, for the
    # epsilon-insensitive regression, the weighted median) is 1.
    x = np.ones((4, 1))
    y = np.array([0.0, 0.0, 0.0, 1.0])
    unweighted = fit_predict(params, x, y, np.ones((1, 1)), ordered, SVROptions(), 0)
    weighted = fit_predict(
        params, x, y, np.ones((1, 1)), ordered, SVROptions(), 0, np.array([1, 1, 1, 10.0])
    )
    assert unweighted == pytest.approx([0.0], abs=0.05)
    assert weighted == pytest.approx([1.0], abs=0.05)
