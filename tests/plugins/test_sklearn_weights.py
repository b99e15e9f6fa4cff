"""Survey weights reach the SVR and CatBoost baselines' fits (``sample_weight``, ``Pool(weight=)``)."""

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


def test_catboost_fits_with_the_weight_column():
    """Survey weights reach CatBoost's fits through the items' ``weight`` column. Eight North
    respondents share every feature: six answer 20 (and option 0) with weight 1, two answer 80
    (and option 2) with weight 8. Boosting on one leaf converges to the weighted mean (RMSE)
    and the weighted majority (MultiClass): by hand, (6 * 20 + 16 * 80) / 22 = 63.6 -> 64 and
    option 2 (16 against 6); unweighted, (6 * 20 + 2 * 80) / 8 = 35 and option 0. The eight
    South respondents answer 50 and option 1 with weight 1 either way."""
    pytest.importorskip("catboost")
    import pandas as pd
    from surveysim_sklearn.catboost_baseline import CatBoostBaseline
    from surveysim_sklearn.grids import CatBoostOptions

    from surveysim_core.answers import AnswerType
    from surveysim_core.protocols import ItemSet

    class Codes(AnswerType):
        """Codes 0..k-1 (a stand-in for surveysim_std's answer types)."""

        def __init__(self, k: int, ordered: bool):
            super().__init__(None)
            self.support = np.arange(k, dtype=float)
            self.labels = [str(v) for v in range(k)]
            self.ordered = ordered

    types = {"level": Codes(101, ordered=True), "vote": Codes(3, ordered=False)}

    def itemset(regions, levels, votes, weights):
        ids = [f"s{i}" for i in range(len(regions))]
        respondents = pd.DataFrame({"region": regions}, index=pd.Index(ids, name="subject_id"))
        rows = []
        for sid, level, vote, weight in zip(ids, levels, votes, weights, strict=True):
            rows.append((sid, "level", 1, float(level), weight))
            rows.append((sid, "vote", 2, float(vote), weight))
        items = pd.DataFrame(rows, columns=["subject_id", "question", "seq", "answer", "weight"])
        return ItemSet(items, respondents, [], types)

    regions = ["North"] * 8 + ["South"] * 8
    levels = [20] * 6 + [80] * 2 + [50] * 8
    votes = [0] * 6 + [2] * 2 + [1] * 8
    weights = [1.0] * 6 + [8.0] * 2 + [1.0] * 8
    test = itemset(["North", "South"], [0, 0], [0, 0], [1.0, 1.0])
    options = CatBoostOptions(
        learning_rate=[0.1], random_strength=[1.0], one_hot_max_size=[25], l2_leaf_reg=[3.0],
        bagging_temperature=[0.0], iterations=300, depth=2, n_jobs=1,
    )  # fmt: skip

    def answers(weights):
        (pred,) = CatBoostBaseline(options).predict(
            itemset(regions, levels, votes, weights), test, seed=0
        )
        keys = zip(test.items["subject_id"], test.items["question"], strict=True)
        by = dict(zip(keys, pred.codes, strict=True))
        return by[("s0", "level")], by[("s0", "vote")], by[("s1", "level")], by[("s1", "vote")]

    north_level, north_vote, south_level, south_vote = answers(weights)
    assert north_level == pytest.approx(64, abs=1) and north_vote == 2
    assert south_level == pytest.approx(50, abs=1) and south_vote == 1
    north_level, north_vote, _, _ = answers([1.0] * 16)
    assert north_level == pytest.approx(35, abs=1) and north_vote == 0
