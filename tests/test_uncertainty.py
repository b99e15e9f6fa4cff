"""Bootstrap intervals, paired differences and floors, against explicit loops written here."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from surveysim_std.answer_types import IntegerAnswer, IntegerOptions
from surveysim_std.metrics import KL, RMSE, Accuracy

from surveysim_core.answers import AnswerDistribution
from surveysim_core.scoring import (
    bootstrap_interval,
    difference_rows,
    floor_rows,
    percentile_interval,
    respondent_resamples,
    score_system,
)


@pytest.fixture
def five():
    return IntegerAnswer(IntegerOptions(min=1, max=5))


def tiny():
    """Three respondents, two items each on one question; the model always answers 3."""
    items = pd.DataFrame(
        {
            "subject_id": ["a", "a", "b", "b", "c", "c"],
            "question": ["q"] * 6,
            "answer": [1.0, 3.0, 3.0, 3.0, 5.0, 4.0],
        }
    )
    respondents = pd.DataFrame({"group": ["x", "y", "y"]}, index=pd.Index(["a", "b", "c"]))
    probs = np.zeros((6, 5))
    probs[:, 2] = 1.0
    return items, respondents, AnswerDistribution(probs)


def test_percentile_interval_matches_a_sorted_list_by_hand():
    values = np.arange(1, 42, dtype=float)  # 1..41: 2.5% and 97.5% at positions 1 and 39
    low, high = percentile_interval(values)
    assert low == pytest.approx(2.0) and high == pytest.approx(40.0)
    assert all(math.isnan(x) for x in percentile_interval(np.array([np.nan, np.nan])))


def test_bootstrap_interval_is_recentred_on_an_upward_biased_estimate():
    # a KL-like estimate of 0.1 whose draws all lie above it: 0.2, 0.3, ..., 1.0 (median 0.6)
    draws = np.linspace(0.2, 1.0, 9)
    low, high = bootstrap_interval(0.1, draws)
    # percentiles at positions 0.2 and 7.8 of the sorted draws: 0.22 and 0.98; shifted by -0.5
    assert high == pytest.approx(0.98 - 0.5)
    assert low == 0.0  # 0.22 - 0.5 < 0, and a non-negative metric keeps its bound at 0
    assert low <= 0.1 <= high
    # a signed quantity (a difference) is not clipped
    low, high = bootstrap_interval(-0.3, np.linspace(-0.5, -0.1, 5))
    assert low == pytest.approx(-0.49 - 0.0) and high == pytest.approx(-0.11)


def test_resamples_draw_whole_respondents_with_replacement_and_are_seeded():
    subjects = np.array(["a", "a", "b", "b", "c", "c"])
    draws = respondent_resamples(subjects, 50, 3, "q")
    for idx in draws:
        picked = subjects[idx]
        assert len(idx) == 6
        # each respondent comes with both of its items, as often as it was drawn
        for s in set(picked):
            both = {i for i in idx if subjects[i] == s}
            assert both == set(np.nonzero(subjects == s)[0])
    again = respondent_resamples(subjects, 50, 3, "q")
    assert all((x == y).all() for x, y in zip(draws, again, strict=True))
    other = respondent_resamples(subjects, 50, 4, "q")
    assert any(len(x) != len(y) or (x != y).any() for x, y in zip(draws, other, strict=True))


def test_rmse_interval_is_the_percentile_bootstrap_over_respondents(five):
    items, respondents, model = tiny()
    rows = score_system(
        "sys", "", None, items, respondents, model, {"q": five}, {"rmse": RMSE()}, ["group"],
        bootstrap=400, seed=7,
    )  # fmt: skip
    row = next(r for r in rows if r["segment"] == "all")
    # squared errors of the constant answer 3: a -> 4, 0; b -> 0, 0; c -> 4, 1
    sq = {"a": [4.0, 0.0], "b": [0.0, 0.0], "c": [4.0, 1.0]}
    assert row["value"] == pytest.approx(math.sqrt(9 / 6))
    # the same draws, recomputed with an explicit loop over the picked respondents
    subjects = items["subject_id"].to_numpy()
    values = []
    for idx in respondent_resamples(subjects, 400, 7, "q", "all"):
        picked = [subjects[i] for i in idx]
        errors = [
            sq[s][list(np.nonzero(subjects == s)[0]).index(i)]
            for s, i in zip(picked, idx, strict=True)
        ]
        values.append(math.sqrt(sum(errors) / len(errors)))
    values.sort()

    # numpy's default percentile: linear between order statistics at (n - 1) * q
    def pct(q):
        pos = (len(values) - 1) * q
        lo = math.floor(pos)
        return values[lo] + (values[min(lo + 1, len(values) - 1)] - values[lo]) * (pos - lo)

    # the percentile interval, shifted by the median bias of the draws (lower bound kept >= 0)
    n = len(values)
    median = (values[(n - 1) // 2] + values[n // 2]) / 2
    bias = median - row["value"]
    assert row["ci_low"] == pytest.approx(max(0.0, pct(0.025) - bias))
    assert row["ci_high"] == pytest.approx(pct(0.975) - bias)
    assert row["ci_low"] <= row["value"] <= row["ci_high"]
    # the smallest possible resample RMSE is 0 (only b drawn), the largest sqrt(5/2) (only c)
    assert 0.0 <= row["ci_low"] < row["ci_high"] <= math.sqrt(2.5) + abs(bias) + 1e-12
    # segment rows carry their own interval; group y = {b, c}
    seg = next(r for r in rows if r["segment"] == "group=y")
    assert seg["n"] == 4 and seg["ci_low"] <= seg["value"] <= seg["ci_high"]
    # a segment of one respondent: every draw is that respondent, so the interval is a point
    single = next(r for r in rows if r["segment"] == "group=x")
    assert single["ci_low"] == pytest.approx(single["value"]) == pytest.approx(single["ci_high"])


def test_paired_difference_uses_the_same_respondents_for_both_systems(five):
    items, respondents, model = tiny()
    draws: dict = {}
    rows = []
    for system, probs in [("marginal", model.probs), ("other", np.roll(model.probs, 1, axis=1))]:
        rows += score_system(
            system, "", None, items, respondents, AnswerDistribution(probs), {"q": five},
            {"rmse": RMSE(), "accuracy": Accuracy()}, [], bootstrap=300, seed=1, draws=draws,
        )  # fmt: skip
    # a model that answers 4 instead of 3: squared errors a 9,1; b 1,1; c 1,0
    frame = pd.DataFrame(rows)
    diffs = pd.DataFrame(difference_rows(frame, draws))
    d = diffs[(diffs["metric"] == "rmse") & (diffs["against"] == "marginal baseline")].iloc[0]
    assert d["system"] == "other"
    assert d["difference"] == pytest.approx(math.sqrt(13 / 6) - math.sqrt(9 / 6))
    subjects = items["subject_id"].to_numpy()
    sq3 = np.array([4.0, 0.0, 0.0, 0.0, 4.0, 1.0])
    sq4 = np.array([9.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    paired = sorted(
        math.sqrt(sq4[i].mean()) - math.sqrt(sq3[i].mean())
        for i in respondent_resamples(subjects, 300, 1, "q", "all")
    )
    bias = np.median(paired) - d["difference"]
    assert d["ci_low"] == pytest.approx(np.percentile(paired, 2.5) - bias)
    assert d["ci_high"] == pytest.approx(np.percentile(paired, 97.5) - bias)
    assert d["ci_low"] <= d["difference"] <= d["ci_high"]
    # the best baseline by accuracy: marginal hits 2/6 (two 3s), other hits 1/6 (one 4)
    best = diffs[(diffs["metric"] == "accuracy") & (diffs["against"] == "best baseline")]
    assert set(best["reference"]) == {"marginal"}


def test_sampling_floor_at_the_test_size_and_per_segment(five):
    items, respondents, _ = tiny()
    train = pd.DataFrame(
        {"subject_id": ["d", "d", "e", "e"], "question": ["q"] * 4, "answer": [1.0, 2.0, 5.0, 5.0]}
    )
    train_resp = pd.DataFrame({"group": ["x", "y"]}, index=pd.Index(["d", "e"]))
    rows = pd.DataFrame(
        floor_rows(items, train, {"q": five}, {"kl": KL(), "rmse": RMSE()}, 200, 0,
                   respondents, train_resp, ["group"])
    )  # fmt: skip
    sampling = rows[rows["system"] == "floor:sampling"].set_index("segment")
    assert list(sampling["metric"].unique()) == ["kl"]  # population metrics only
    assert set(sampling.index) == {"all", "group=x", "group=y"}
    assert sampling.loc["all", "n"] == 6 and sampling.loc["group=y", "n"] == 4
    # group x pools a's test answers {1, 3} with d's training answers {1, 2}
    pool = np.array([1.0, 3.0, 1.0, 2.0])
    human = np.array([1.0, 3.0])
    kl = KL()
    # expected KL over all 16 equally likely same-size (n=2) draws from the pool
    expect = np.mean(
        [
            kl(human, AnswerDistribution.from_codes(np.array([x, y]), five), five)
            for x in pool
            for y in pool
        ]
    )
    x_row = sampling.loc["group=x"]
    assert x_row["value"] == pytest.approx(expect, abs=4 * x_row["sd"] / math.sqrt(200))
    assert x_row["ci_low"] <= x_row["value"] <= x_row["ci_high"]
    # uniform and marginal floors are there per segment too; split-half overall only
    for system in ("floor:uniform", "floor:marginal"):
        assert set(rows.loc[rows["system"] == system, "segment"]) == {"all", "group=x", "group=y"}
    assert set(rows.loc[rows["system"] == "floor:split_half", "segment"]) == {"all"}
