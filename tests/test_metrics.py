"""Metrics against numbers worked out by hand (or by an explicit loop), not by the code itself."""

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
from surveysim_std.metrics import (
    KL,
    RMSE,
    Accuracy,
    NegativeLogLikelihood,
    Representativeness,
    SuccessRate,
    Wasserstein,
)

from surveysim_core.answers import AnswerDistribution
from surveysim_core.scoring import applicable, floor_rows, score_system

NAN = float("nan")


@pytest.fixture
def percent():
    """The EV-shift scale: 0-100 in bins of width 10, 100 joining the last bin."""
    return IntegerAnswer(IntegerOptions(min=0, max=100, bin_width=10))


@pytest.fixture
def five():
    return IntegerAnswer(IntegerOptions(min=1, max=5))


def sampled(codes, answer):
    return AnswerDistribution.from_codes(np.array(codes, dtype=float), answer)


def test_metrics_are_registered_under_their_names(plugins):
    expected = {
        "kl": KL,
        "rmse": RMSE,
        "success_rate": SuccessRate,
        "wasserstein": Wasserstein,
        "representativeness": Representativeness,
        "accuracy": Accuracy,
        "nll": NegativeLogLikelihood,
    }
    for name, cls in expected.items():
        assert plugins.metrics.get(name) is cls


def test_kl_human_given_model_with_half_count_smoothing_by_hand(percent):
    human = [5, 15, 100, 100]  # bins 0, 1, 9, 9 (100 joins the last bin)
    model = [95, 99, 0, NAN]  # bins 9, 9, 0; the failure is left out
    # human counts over 10 bins: bin0 1, bin1 1, bin9 2, others 0; n = 4, so h_k = (c + .5) / 9
    # model counts: bin0 1, bin9 2, others 0 (3 valid answers), rescaled to the human total 4:
    #   bin0 4/3, bin9 8/3, so m_k = (c * 4/3 + .5) / 9
    # KL(h || m) = sum h_k log(h_k / m_k):
    #   bin0:      1.5/9 * log(1.5 / (4/3 + .5)) = 1/6  * log(1.5 / (11/6)) = 1/6 * log(9/11)
    #   bin1:      1.5/9 * log(1.5 / .5)                                    = 1/6 * log(3)
    #   bins 2-8:  7 * 0.5/9 * log(.5 / .5)                                 = 0
    #   bin9:      2.5/9 * log(2.5 / (8/3 + .5)) = 5/18 * log(2.5 / (19/6)) = 5/18 * log(15/19)
    expected = (1 / 6) * math.log(9 / 11) + (1 / 6) * math.log(3) + (5 / 18) * math.log(15 / 19)
    assert expected == pytest.approx(0.083993, abs=1e-6)
    value = KL()(np.array(human, float), sampled(model, percent), percent)
    assert value == pytest.approx(expected, rel=1e-12)

    # the other direction, KL(m || h), is a different number: the direction is fixed
    h = [1.5 / 9, 1.5 / 9, *[0.5 / 9] * 7, 2.5 / 9]
    m = [(4 / 3 + 0.5) / 9, 0.5 / 9, *[0.5 / 9] * 7, (8 / 3 + 0.5) / 9]
    reverse = sum(mk * math.log(mk / hk) for hk, mk in zip(h, m, strict=True))
    assert value != pytest.approx(reverse, rel=1e-3)


def test_kl_of_identical_histograms_is_zero_and_failures_do_not_count(percent):
    human = np.array([10, 20, 20, 55], float)
    model = sampled([10, 20, 20, 55, NAN, NAN, 200], percent)  # 200 is out of range: a failure
    assert KL()(human, model, percent) == pytest.approx(0.0, abs=1e-15)


def test_kl_exact_distribution_uses_expected_counts(five):
    # width-1 bins on 1-5: five bins. Human: 1, 1, 2, 3.
    human = np.array([1, 1, 2, 3], float)
    probs = np.array([[0.5, 0.5, 0, 0, 0], [0, 0, 1.0, 0, 0], [0.2, 0.2, 0.2, 0.2, 0.0]])
    # expected model counts: [0.7, 0.7, 1.2, 0.2, 0.0], total 2.8 (0.2 of row 3 is failure mass),
    # rescaled to the 4 human answers before smoothing
    m = [(c * 4 / 2.8 + 0.5) / (4 + 2.5) for c in [0.7, 0.7, 1.2, 0.2, 0.0]]
    h = [(c + 0.5) / (4 + 2.5) for c in [2, 1, 1, 0, 0]]
    expected = sum(hk * math.log(hk / mk) for hk, mk in zip(h, m, strict=True))
    value = KL()(human, AnswerDistribution(probs, exact=True), five)
    assert value == pytest.approx(expected, rel=1e-12)


def test_rmse_one_hot_explicit_loop_skips_failures(five):
    human = [1, 3, 5, 2]
    model = [2, 3, 3, NAN]
    total, count = 0.0, 0
    for y, a in zip(human, model, strict=True):
        if math.isnan(a):
            continue
        total += (a - y) ** 2
        count += 1
    expected = math.sqrt(total / count)
    assert expected == pytest.approx(math.sqrt(5 / 3))
    assert RMSE()(np.array(human, float), sampled(model, five), five) == pytest.approx(expected)


def test_rmse_full_distribution_explicit_loop(five):
    human = [1, 5, 3]
    probs = [
        [0.5, 0.5, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.2, 0.3, 0.3],  # 0.2 failure mass
        [0.0, 0.0, 0.0, 0.0, 0.0],  # a complete failure
    ]
    num = den = 0.0
    for y, row in zip(human, probs, strict=True):
        for answer, p in zip([1, 2, 3, 4, 5], row, strict=True):
            num += p * (answer - y) ** 2
            den += p
    expected = math.sqrt(num / den)  # sqrt((0.5*1 + 0.2*4 + 0.3*1) / 1.8)
    assert expected == pytest.approx(math.sqrt(1.6 / 1.8))
    value = RMSE()(np.array(human, float), AnswerDistribution(np.array(probs), exact=True), five)
    assert value == pytest.approx(expected)


def test_success_rate_counts_failures(five):
    human = np.array([1, 2, 3, 4, 5], float)
    # two unparsable answers and one out of range (7): 2 of 5 valid
    assert SuccessRate()(human, sampled([1, NAN, 3, NAN, 7], five), five) == pytest.approx(0.4)
    probs = np.array([[1, 0, 0, 0, 0], [0.5, 0.3, 0, 0, 0], [0, 0, 0, 0, 0]], float)
    exact = AnswerDistribution(probs, exact=True)
    assert SuccessRate()(human[:3], exact, five) == pytest.approx((1 + 0.8 + 0) / 3)


def test_wasserstein_normalised_by_hand_and_representativeness(five):
    human = np.array([1, 1, 2, 5], float)  # {1: 1/2, 2: 1/4, 5: 1/4}
    model = sampled([1, 2, 2, NAN], five)  # {1: 1/3, 2: 2/3}; the failure is left out
    # cheapest transport: 1/6 from 1 to 2 (distance 1), 1/4 from 5 to 2 (distance 3)
    distance = 1 / 6 * 1 + 1 / 4 * 3  # = 11/12
    expected = distance / (5 - 1)  # the largest distance on a 1-5 scale is 4
    assert expected == pytest.approx(11 / 48)
    assert Wasserstein()(human, model, five) == pytest.approx(expected)
    assert Representativeness()(human, model, five) == pytest.approx(1 - 11 / 48)


def test_wasserstein_extremes(five):
    human = np.array([1, 1], float)
    assert Wasserstein()(human, sampled([5, 5], five), five) == pytest.approx(1.0)
    assert Representativeness()(human, sampled([1, 1], five), five) == pytest.approx(1.0)


def test_accuracy_sampled_and_exact(five):
    human = np.array([1, 3, 5, 2], float)
    assert Accuracy()(human, sampled([1, 3, 3, NAN], five), five) == pytest.approx(2 / 3)
    probs = np.array([[0.6, 0.4, 0, 0, 0], [0, 0, 0.5, 0, 0], [0, 0, 0, 0, 0], [0, 1, 0, 0, 0]])
    # expected hits 0.6 + 0.5 + 0 + 1 over valid mass 1 + 0.5 + 0 + 1
    value = Accuracy()(human, AnswerDistribution(probs, exact=True), five)
    assert value == pytest.approx(2.1 / 2.5)


def test_nll_mean_negative_log_probability_of_the_true_answer(five):
    human = np.array([1, 4, 2], float)
    probs = np.array(
        [[0.5, 0.25, 0.25, 0, 0], [0.1, 0.2, 0.3, 0.4, 0.0], [1.0, 0.0, 0.0, 0.0, 0.0]], float
    )
    expected = -(math.log(0.5) + math.log(0.4)) / 2
    two = AnswerDistribution(probs[:2], exact=True)
    assert NegativeLogLikelihood()(human[:2], two, five) == pytest.approx(expected)
    # the third respondent's answer (2) has probability 0 (a greedy one-hot row): no finite NLL
    value = NegativeLogLikelihood()(human, AnswerDistribution(probs, exact=True), five)
    assert math.isnan(value)


def test_applicable_skips_distance_metrics_for_unordered_categorical(five):
    colour = CategoricalAnswer(CategoricalOptions(options=["red", "green", "blue"]))
    ordered = CategoricalAnswer(
        CategoricalOptions(options=["disagree", "neutral", "agree"], ordered=True)
    )
    for metric in (RMSE(), Wasserstein(), Representativeness()):
        assert not applicable(metric, colour, exact=True)
        assert applicable(metric, ordered, exact=False)
        assert applicable(metric, five, exact=False)
    for metric in (KL(), Accuracy(), SuccessRate()):
        assert applicable(metric, colour, exact=False)
    assert not applicable(NegativeLogLikelihood(), five, exact=False)
    assert applicable(NegativeLogLikelihood(), five, exact=True)


def test_score_system_rows_per_question_segment_and_metric():
    colour = CategoricalAnswer(CategoricalOptions(options=["red", "green", "blue"]))
    five = IntegerAnswer(IntegerOptions(min=1, max=5))
    items = pd.DataFrame(
        {
            "subject_id": ["a", "b", "c", "a", "b", "c"],
            "question": ["colour"] * 3 + ["score"] * 3,
            "answer": [0, 1, 2, 1, 2, 5],
        }
    )
    respondents = pd.DataFrame({"region": ["N", "S", "S"]}, index=pd.Index(["a", "b", "c"]))
    probs = np.zeros((6, 5))
    probs[0, 0] = probs[1, 2] = probs[2, 2] = 1  # colour: red, blue, blue
    probs[3, 0] = probs[4, 1] = probs[5, 4] = 1  # score: 1, 2, 5
    metrics = {"accuracy": Accuracy(), "rmse": RMSE(), "nll": NegativeLogLikelihood()}
    rows = score_system(
        "sys",
        "s1",
        0.5,
        items,
        respondents,
        AnswerDistribution(probs),
        {"colour": colour, "score": five},
        metrics,
        ["region"],
    )
    table = pd.DataFrame(rows).set_index(["question", "segment", "metric"])["value"]
    # no RMSE for an unordered answer, no NLL for sampled answers
    assert ("colour", "all", "rmse") not in table.index
    assert not any(m == "nll" for _, _, m in table.index)
    assert table["colour", "all", "accuracy"] == pytest.approx(2 / 3)  # a right, b wrong, c right
    assert table["colour", "region=S", "accuracy"] == pytest.approx(1 / 2)
    assert table["colour", "region=N", "accuracy"] == pytest.approx(1.0)
    # score errors: a 1 vs 1, b 2 vs 2, c 5 vs 5 -> 0; then region S alone
    assert table["score", "all", "rmse"] == pytest.approx(0.0)
    assert table["score", "all", "accuracy"] == pytest.approx(1.0)
    assert set(pd.DataFrame(rows)["temperature"]) == {0.5}


def test_floor_rows_uniform_and_training_marginal_by_hand(five):
    test_items = pd.DataFrame({"question": ["q"] * 4, "answer": [1.0, 2.0, 3.0, 4.0]})
    train_items = pd.DataFrame({"question": ["q"] * 3, "answer": [1.0, 1.0, 2.0]})
    metrics = {"accuracy": Accuracy(), "kl": KL(), "rmse": RMSE()}
    rows = pd.DataFrame(floor_rows(test_items, train_items, {"q": five}, metrics, 20, 0))
    by = rows.set_index(["system", "metric"])
    # uniform: every answer 1/5 -> expected accuracy 1/5
    assert by.loc[("floor:uniform", "accuracy"), "value"] == pytest.approx(0.2)
    # training marginal: {1: 2/3, 2: 1/3} -> accuracy (2/3 + 1/3 + 0 + 0) / 4
    assert by.loc[("floor:marginal", "accuracy"), "value"] == pytest.approx(0.25)
    # marginal RMSE: loop over test answers y and marginal answers a
    marginal = {1: 2 / 3, 2: 1 / 3}
    mse = sum(p * (a - y) ** 2 for y in [1, 2, 3, 4] for a, p in marginal.items()) / 4
    assert by.loc[("floor:marginal", "rmse"), "value"] == pytest.approx(math.sqrt(mse))
    # split-half: population metrics only, with a spread over the bootstrap draws
    half = by.loc["floor:split_half"]
    assert list(half.index) == ["kl"]
    assert half.loc["kl", "sd"] >= 0 and not math.isnan(half.loc["kl", "sd"])
    assert set(rows["n"]) == {4}
