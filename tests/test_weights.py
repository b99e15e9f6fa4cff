"""Survey weights: the weight column in the long format, weighted metrics and floors (checked
against values worked out by hand), and the weighted marginal baseline."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from surveysim_std.answer_types import (
    CategoricalAnswer,
    CategoricalOptions,
    IntegerAnswer,
    IntegerOptions,
)
from surveysim_std.baselines import MarginalBaseline
from surveysim_std.metrics import KL, RMSE, Accuracy, Wasserstein

from surveysim_core.answers import AnswerDistribution
from surveysim_core.config import RunConfig
from surveysim_core.data import validate_long
from surveysim_core.errors import DataError
from surveysim_core.protocols import ItemSet, Metric, Progress
from surveysim_core.run import execute
from surveysim_core.scoring import floor_rows, score_system
from surveysim_core.survey import SurveySpec

ABC = CategoricalAnswer(CategoricalOptions(options=["a", "b", "c"]))
YES_NO = CategoricalAnswer(CategoricalOptions(options=["yes", "no"]))


def one_hot(codes, answer):
    return AnswerDistribution.from_codes(np.asarray(codes, float), answer)


def test_weighted_kl_by_hand():
    # weights 1,1,2,4 (mean 2) rescale to 0.5,0.5,1,2: human counts a=1, b=1, c=2; the model's
    # answers a,b,b,b with the same weights: a=0.5, b=3.5, c=0. Smoothed with 0.5 per bin over
    # a total of 4 + 1.5: h = (1.5, 1.5, 2.5)/5.5, m = (1.0, 4.0, 0.5)/5.5.
    expected = (
        1.5 / 5.5 * math.log(1.5 / 1.0)
        + 1.5 / 5.5 * math.log(1.5 / 4.0)
        + 2.5 / 5.5 * math.log(2.5 / 0.5)
    )
    human, weights = np.array([0, 0, 1, 2.0]), np.array([1, 1, 2, 4.0])
    value = KL()(human, one_hot([0, 1, 1, 1], ABC), ABC, weights=weights)
    assert value == pytest.approx(expected, abs=1e-12)
    # unweighted, the same data give another value: h = (2.5, 1.5, 1.5)/5.5, m = (1.5, 3.5, .5)/5.5
    unweighted = (
        2.5 / 5.5 * math.log(2.5 / 1.5)
        + 1.5 / 5.5 * math.log(1.5 / 3.5)
        + 1.5 / 5.5 * math.log(3.0)
    )
    assert KL()(human, one_hot([0, 1, 1, 1], ABC), ABC) == pytest.approx(unweighted, abs=1e-12)


def test_weighted_rmse_wasserstein_and_accuracy_by_hand():
    scale5 = IntegerAnswer(IntegerOptions(min=1, max=5))
    # errors 1 and 3 with weights 3 and 1: (3 * 1 + 1 * 9) / 4 = 3
    assert RMSE()(
        np.array([1, 5.0]), one_hot([2, 2], scale5), scale5, weights=np.array([3, 1.0])
    ) == pytest.approx(math.sqrt(3))
    scale3 = IntegerAnswer(IntegerOptions(min=1, max=3))
    # human mass 1/4 at 1, 3/4 at 3; model all at 1: moving 3/4 over a distance 2, over a span 2
    assert Wasserstein()(
        np.array([1, 3.0]), one_hot([1, 1], scale3), scale3, weights=np.array([1, 3.0])
    ) == pytest.approx(0.75)
    # only the first answer (weight 1 of 4) is right
    assert Accuracy()(
        np.array([0, 1.0]), one_hot([0, 0], YES_NO), YES_NO, weights=np.array([1, 3.0])
    ) == pytest.approx(0.25)


def test_score_system_passes_each_segments_weights():
    items = pd.DataFrame(
        {"subject_id": ["s1", "s2", "s3"], "question": "q", "answer": [0.0, 1.0, 1.0],
         "weight": [2.0, 1.0, 1.0]}
    )  # fmt: skip
    respondents = pd.DataFrame({"region": ["N", "N", "S"]}, index=pd.Index(["s1", "s2", "s3"]))
    rows = score_system("sys", "", None, items, respondents, one_hot([0, 0, 0], YES_NO),
                        {"q": YES_NO}, {"accuracy": Accuracy()}, ["region"])  # fmt: skip
    values = {r["segment"]: r["value"] for r in rows}
    # all: right on s1 only, weight 2 of 4; region N: weight 2 of 3; region S: 0
    assert values == pytest.approx({"all": 0.5, "region=N": 2 / 3, "region=S": 0.0})


class Recorder(Metric):
    """A population metric that checks the weights it gets belong to the rows it gets."""

    name = "recorder"
    level = "population"
    weighted = True

    def __init__(self):
        self.calls = 0
        self.sampled = 0

    def __call__(self, human, model, answer, weights=None, model_weights=None):
        # answers 1..4 carry weights 10..40: each row's weight is ten times its answer
        assert np.array_equal(weights, 10 * human)
        model_answers = model.probs.argmax(axis=1) + 1
        if model_weights is not None and not np.all(model_weights == 1):
            # split-half: the other half's own weights
            assert np.array_equal(model_weights, 10 * model_answers)
        elif model_weights is not None:
            # sampling floor: answers drawn in proportion to their weight stand for the
            # population, so they carry unit weights
            self.sampled += 1
        self.calls += 1
        return 0.0


def test_floors_are_weighted():
    # training answers yes (weight 1) and no (weight 3): the weighted marginal is (1/4, 3/4)
    train = pd.DataFrame(
        {"subject_id": ["t1", "t2"], "question": "q", "answer": [0.0, 1.0], "weight": [1.0, 3.0]}
    )
    test = pd.DataFrame({"subject_id": ["u1"], "question": "q", "answer": [1.0], "weight": [5.0]})
    rows = floor_rows(test, train, {"q": YES_NO}, {"accuracy": Accuracy()}, bootstrap=2, seed=0)
    values = {r["system"]: r["value"] for r in rows}
    assert values["floor:marginal"] == pytest.approx(0.75)
    assert values["floor:uniform"] == pytest.approx(0.5)

    scale4 = IntegerAnswer(IntegerOptions(min=1, max=4))
    test4 = pd.DataFrame(
        {
            "subject_id": list("abcd"),
            "question": "q",
            "answer": [1.0, 2, 3, 4],
            "weight": [10.0, 20, 30, 40],
        }
    )
    recorder = Recorder()
    floor_rows(test4, test4, {"q": scale4}, {"recorder": recorder}, bootstrap=5, seed=0)
    # five sampling-floor draws, five split halves, the uniform and the marginal floor
    assert recorder.calls == 5 + 5 + 2
    assert recorder.sampled == 5


SPEC = {
    "name": "w",
    "demographics": {"region": {"options": ["N", "S"]}},
    "questions": [{"id": "q", "answer": {"type": "categorical", "options": ["yes", "no"]}},
                  {"id": "r", "answer": {"type": "categorical", "options": ["yes", "no"]}}],
    "weight": "wt",
}  # fmt: skip


def long_table(weights):
    return pd.DataFrame(
        {"subject_id": ["s1", "s1", "s2"], "region": ["N", "N", "S"], "question": ["q", "r", "q"],
         "answer": ["yes", "no", "no"], "wt": weights}
    )  # fmt: skip


def test_the_weight_column_is_validated_and_kept():
    spec = SurveySpec.model_validate(SPEC)
    types = {"q": YES_NO, "r": YES_NO}
    data = validate_long(long_table(["1.5", "1.5", "0.5"]), spec, types, "w.csv")
    assert data.responses["weight"].tolist() == [1.5, 1.5, 0.5]
    with pytest.raises(
        DataError, match=r"w\.csv: row 2, column wt: subject s1 has weight 2 here but 1\.5 in row 1"
    ):
        validate_long(long_table(["1.5", "2", "0.5"]), spec, types, "w.csv")
    with pytest.raises(DataError, match=r"w\.csv: row 3, column wt: '-1' is not a positive number"):
        validate_long(long_table(["1", "1", "-1"]), spec, types, "w.csv")
    with pytest.raises(DataError, match=r"w\.csv: missing columns: wt"):
        validate_long(long_table(["1", "1", "1"]).drop(columns="wt"), spec, types, "w.csv")
    # a run can name another column than the survey's
    renamed = long_table(["1", "1", "3"]).rename(columns={"wt": "pw"})
    assert validate_long(renamed, spec, types, "w.csv", weight="pw").responses[
        "weight"
    ].tolist() == [1.0, 1.0, 3.0]


def test_the_marginal_baseline_draws_by_weight():
    train = ItemSet(
        pd.DataFrame({"subject_id": ["a", "b"], "question": "q", "answer": [0.0, 1.0], "weight": [1.0, 999.0]}),
        pd.DataFrame(index=pd.Index(["a", "b"])), [], {"q": YES_NO},
    )  # fmt: skip
    test = ItemSet(
        pd.DataFrame({"subject_id": [f"t{i}" for i in range(1000)], "question": "q", "answer": 0.0}),
        pd.DataFrame(index=pd.Index([f"t{i}" for i in range(1000)])), [], {"q": YES_NO},
    )  # fmt: skip
    (prediction,) = MarginalBaseline().predict(train, test, seed=0)
    # P(yes) = 1/1000: the expected number of yes in 1000 draws is 1 (unweighted it would be 500)
    assert (prediction.codes == 0).sum() <= 5


def test_a_weighted_run(tmp_path, satisfaction_plugins):
    table = pd.DataFrame(
        {"subject_id": [f"x{i}" for i in range(40)], "region": ["North", "South"] * 20,
         "question": "satisfaction", "answer": [1, 2, 3, 4, 5] * 8, "pw": [1.0, 2.0, 0.5, 4.0] * 10}
    )  # fmt: skip
    path = tmp_path / "answers.csv"
    table.to_csv(path, index=False)
    config = RunConfig.model_validate(
        {"survey": "satisfaction", "data": {"source": "file", "path": str(path), "weight": "pw"},
         "baselines": [{"name": "marginal"}], "evaluation": {"bootstrap": 5},
         "output": {"dir": str(tmp_path / "runs")}}
    )  # fmt: skip
    run = execute(
        config,
        "s.yaml",
        satisfaction_plugins,
        run_dir=str(tmp_path / "r"),
        progress=Progress(lambda m: None),
    )
    preds = pd.read_csv(run.dir / "systems" / "marginal" / "predictions.csv")
    weights = dict(zip(table["subject_id"], table["pw"], strict=True))
    assert (preds["weight"] == preds["subject_id"].map(weights)).all()
    metrics = pd.read_csv(run.dir / "metrics.csv")
    # floor:uniform RMSE on 1-5 for the weighted test answers, by an explicit loop
    test = table[table["subject_id"].isin(preds["subject_id"])]
    num = sum(
        w * sum((a - y) ** 2 for a in range(1, 6)) / 5
        for y, w in zip(test["answer"], test["pw"], strict=True)
    )
    expected = math.sqrt(num / test["pw"].sum())
    got = metrics[(metrics["system"] == "floor:uniform") & (metrics["metric"] == "rmse")][
        "value"
    ].iloc[0]
    assert got == pytest.approx(expected)
