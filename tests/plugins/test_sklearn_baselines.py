"""SVR and CatBoost baselines on synthetic data with a strong demographic signal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from surveysim_core.answers import AnswerType
from surveysim_core.protocols import ItemSet

pytest.importorskip("sklearn")
pytest.importorskip("catboost")

from surveysim_sklearn.catboost_baseline import CatBoostBaseline
from surveysim_sklearn.features import (
    PREVIOUS,
    FeatureLayout,
    previous_answers,
    question_data,
    to_codes,
    to_unit,
)
from surveysim_sklearn.grids import CatBoostOptions, SVROptions
from surveysim_sklearn.svr import SVRBaseline


class IntScale(AnswerType):
    """Integers from ``low`` to ``high`` (a stand-in for surveysim_std's integer type)."""

    ordered = True

    def __init__(self, low: int, high: int):
        super().__init__(None)
        self.support = np.arange(low, high + 1, dtype=float)
        self.labels = [str(v) for v in range(low, high + 1)]


class Choice(AnswerType):
    """Unordered choice coded 0..k-1."""

    ordered = False

    def __init__(self, labels: list[str]):
        super().__init__(None)
        self.support = np.arange(len(labels), dtype=float)
        self.labels = labels


REGIONS = ["North", "South", "East"]
AGES = ["18-35", "36-65", "66+"]
HOUSEHOLD = ["alone", "spouse", "children"]


def population(n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Respondents and items: ``level`` (0-100) set by region, age and household; ``after``
    (0-100, with an intervention) adds +25 for statement "a" and -25 for "b"; ``vote`` is the
    region's party."""
    rng = np.random.default_rng(seed)
    ids = [f"s{seed}-{i:03d}" for i in range(n)]
    region = rng.choice(REGIONS, n)
    age = rng.choice(AGES, n)
    household = [tuple(h for h in HOUSEHOLD if rng.random() < 0.5) or ("alone",) for _ in range(n)]
    respondents = pd.DataFrame(
        {"region": region, "age": age, "household": household},
        index=pd.Index(ids, name="subject_id"),
    )
    base = (
        15
        + 50 * (region == "North")
        + 25 * (region == "East")
        + 10 * (age == "66+")
        + np.array([8.0 * ("children" in h) for h in household])
    )
    rows = []
    for i, sid in enumerate(ids):
        level = np.clip(np.rint(base[i] + rng.normal(0, 4)), 0, 100)
        rows.append((sid, "level", "", 0, level))
        for seq, statement in enumerate(rng.choice(["a", "b"], 2), start=1):
            shift = 25 if statement == "a" else -25
            after = np.clip(np.rint(base[i] + shift + rng.normal(0, 4)), 0, 100)
            rows.append((sid, "after", statement, seq, after))
        vote = float(REGIONS.index(region[i])) if rng.random() < 0.9 else float(rng.integers(3))
        rows.append((sid, "vote", "", 9, vote))
    items = pd.DataFrame(rows, columns=["subject_id", "question", "intervention", "seq", "answer"])
    items["answer_text"] = items["answer"].map(lambda v: str(int(v)))
    return respondents, items


TYPES = {"level": IntScale(0, 100), "after": IntScale(0, 100), "vote": Choice(REGIONS)}


def itemset(n: int, seed: int) -> ItemSet:
    respondents, items = population(n, seed)
    return ItemSet(items, respondents, [], TYPES)


@pytest.fixture(scope="module")
def split() -> tuple[ItemSet, ItemSet]:
    return itemset(240, seed=1), itemset(80, seed=2)


def uniform_random_rmse(test: ItemSet, question: str) -> float:
    """RMSE of uniform random answers over the scale, averaged over 20 draws."""
    truth = test.items.loc[test.items["question"] == question, "answer"].to_numpy()
    rng = np.random.default_rng(0)
    draws = rng.integers(0, 101, size=(20, len(truth)))
    return float(np.mean(np.sqrt(np.mean((draws - truth) ** 2, axis=1))))


def rmse(codes: np.ndarray, test: ItemSet, question: str) -> float:
    mask = (test.items["question"] == question).to_numpy()
    truth = test.items["answer"].to_numpy()[mask]
    return float(np.sqrt(np.mean((codes[mask] - truth) ** 2)))


SMALL_SVR = SVROptions(kernel=["linear", "rbf"], C=[2.0**3], epsilon=[2.0**-6], gamma=[2.0**-2])
SMALL_CATBOOST = CatBoostOptions(
    learning_rate=[0.1], random_strength=[1.0], one_hot_max_size=[25], l2_leaf_reg=[3.0],
    bagging_temperature=[1.0], iterations=150, n_jobs=1,
)  # fmt: skip


@pytest.mark.parametrize(
    "baseline",
    [SVRBaseline(SMALL_SVR), CatBoostBaseline(SMALL_CATBOOST)],
    ids=["svr", "catboost"],
)
def test_baseline_beats_uniform_random_answers(baseline, split):
    train, test = split
    predictions = list(baseline.predict(train, test, seed=0))
    assert [p.setting for p in predictions] == [s for s, _ in baseline.settings()]
    for pred in predictions:
        assert pred.codes.shape == (len(test.items),)
        assert np.isfinite(pred.codes).all()
        for question in ("level", "after"):
            mask = (test.items["question"] == question).to_numpy()
            assert np.isin(pred.codes[mask], np.arange(101)).all()  # valid codes only
            random_rmse = uniform_random_rmse(test, question)  # about 40 on this data
            # the signal explains all but noise sd 4; a fitted model lands far below random
            assert rmse(pred.codes, test, question) < 0.25 * random_rmse, (pred.params, question)
        # the intervention is a feature of "after": +25 for "a", -25 for "b"
        after = test.items["question"] == "after"
        gap = (
            pred.codes[(after & (test.items["intervention"] == "a")).to_numpy()].mean()
            - pred.codes[(after & (test.items["intervention"] == "b")).to_numpy()].mean()
        )
        assert gap > 30
        # the unordered question is classified: valid codes, mostly the region's party
        vote = (test.items["question"] == "vote").to_numpy()
        assert np.isin(pred.codes[vote], [0.0, 1.0, 2.0]).all()
        assert np.mean(pred.codes[vote] == test.items["answer"].to_numpy()[vote]) > 0.75


def test_question_without_training_answers_gets_no_answers(split):
    train, test = split
    train_items = train.items[train.items["question"] != "vote"].reset_index(drop=True)
    train = ItemSet(train_items, train.respondents, [], TYPES)
    options = SVROptions(kernel=["rbf"], C=[1.0], epsilon=[0.1], gamma=[0.1], n_jobs=1)
    (pred,) = SVRBaseline(options).predict(train, test, seed=0)
    vote = (test.items["question"] == "vote").to_numpy()
    assert np.isnan(pred.codes[vote]).all()
    assert np.isfinite(pred.codes[~vote]).all()


def test_unit_scale_and_rounding_to_nearest_code():
    scale = IntScale(1, 7)
    np.testing.assert_allclose(to_unit(np.array([1, 4, 7]), scale), [0.0, 0.5, 1.0])
    # 1 + u * 6: -0.2 -> clipped to 1; 0.41 -> 3.46 -> 3; 0.43 -> 3.58 -> 4; 1.3 -> clipped to 7
    np.testing.assert_array_equal(to_codes(np.array([-0.2, 0.41, 0.43, 1.3]), scale), [1, 3, 4, 7])
    uneven = IntScale(0, 1)
    uneven.support = np.array([0.0, 10.0, 50.0, 100.0])
    # 0.29 -> 29: nearer 10 than 50; 0.31 -> 31: nearer 50; 0.8 -> 80: nearer 100
    np.testing.assert_array_equal(to_codes(np.array([0.29, 0.31, 0.8]), uneven), [10, 50, 100])


def test_one_hot_layout_with_multi_select_and_unseen_categories():
    train = pd.DataFrame(
        {"region": ["North", "South", None], "household": [("alone",), ("spouse", "children"), ()]}
    )
    layout = FeatureLayout.fit(train, ["region", "household"])
    assert layout.multi == {"household": ["alone", "children", "spouse"]}
    test = pd.DataFrame({"region": ["South", "West"], "household": [("children", "pets"), ()]})
    # columns: region <missing>, North, South | household alone, children, spouse
    expected = np.array([[0, 0, 1, 0, 1, 0], [0, 0, 0, 0, 0, 0]], dtype=float)
    np.testing.assert_array_equal(layout.one_hot(test), expected)
    table, cats = layout.categorical(test)
    assert cats == [0]
    assert list(table.columns) == [
        "region", "household=alone", "household=children", "household=spouse"
    ]  # fmt: skip
    assert table["region"].tolist() == ["South", "West"]


# -- history: the respondent's previous answer as a feature -----------------------------------
def test_previous_answers_follow_seq_within_each_respondent():
    items = pd.DataFrame(
        {  # rows deliberately out of answer order
            "subject_id": ["p", "q", "p", "p", "q", "p"],
            "question": ["after", "level", "level", "after", "vote", "after"],
            "seq": [2, 0, 0, 1, 1, 3],
            "answer": [30.0, 40.0, 50.0, 20.0, 1.0, 999.0],
        }
    )
    previous = previous_answers(ItemSet(items, pd.DataFrame(), [], TYPES))
    # p: level 50 (seq 0) -> after 20 (1) -> after 30 (2) -> after 999 (3, invalid);
    # q: level 40 (0) -> vote (1, unordered)
    np.testing.assert_allclose(previous, [0.2, np.nan, np.nan, 0.5, 0.4, 0.3])
    # an invalid answer or an unordered question gives the next item no previous answer
    items.loc[2, "answer"] = -5.0
    assert np.isnan(previous_answers(ItemSet(items, pd.DataFrame(), [], TYPES))[3])


def anchored(n: int, seed: int) -> ItemSet:
    """Each person's ``after`` answers are their own ``level`` answer + 10, where ``level`` is a
    per-person latent that the demographics do not carry."""
    rng = np.random.default_rng(seed)
    ids = [f"a{seed}-{i:03d}" for i in range(n)]
    respondents = pd.DataFrame(
        {"region": rng.choice(REGIONS, n)}, index=pd.Index(ids, name="subject_id")
    )
    rows = []
    for sid in ids:
        level = float(rng.integers(0, 91))
        rows.append((sid, "level", "", 0, level))
        rows.append(
            (sid, "after", "a", 1, float(np.clip(level + 10 + rng.integers(-2, 3), 0, 100)))
        )
    items = pd.DataFrame(rows, columns=["subject_id", "question", "intervention", "seq", "answer"])
    items["answer_text"] = items["answer"].map(lambda v: str(int(v)))
    return ItemSet(items, respondents, [], TYPES)


@pytest.mark.parametrize(
    "make",
    [
        lambda history: SVRBaseline(SMALL_SVR.model_copy(update={"history": history})),
        lambda history: CatBoostBaseline(SMALL_CATBOOST.model_copy(update={"history": history})),
    ],
    ids=["svr", "catboost"],
)
def test_history_lets_a_baseline_use_the_previous_answer(make):
    train, test = anchored(200, seed=3), anchored(60, seed=4)
    after = (test.items["question"] == "after").to_numpy()
    spread = float(test.items["answer"][after].std())  # about 26: the latent's spread
    with_history = list(make(True).predict(train, test, seed=0))
    without = list(make(False).predict(train, test, seed=0))
    for pred in with_history:
        assert rmse(pred.codes, test, "after") < 0.3 * spread, pred.params
    for pred in without:  # demographics alone cannot see the latent
        assert rmse(pred.codes, test, "after") > 0.8 * spread, pred.params
    # the first item has no previous answer: "level" is predicted from demographics alone
    for pred in with_history:
        assert rmse(pred.codes, test, "level") > 0.8 * spread, pred.params


def test_a_data_column_named_like_the_history_feature_stays_context_without_history():
    train, test = anchored(20, seed=5), anchored(5, seed=6)
    for items in (train, test):
        items.items["previous_answer"] = "x"
    (qd,) = [q for q in question_data(train, test) if q.question == "after"]
    assert "previous_answer" in qd.layout.single and qd.layout.numeric == []
    (qd,) = [q for q in question_data(train, test, history=True) if q.question == "after"]
    assert "previous_answer" not in qd.layout.single and qd.layout.numeric == [PREVIOUS]


def test_numeric_columns_in_both_encodings():
    frame = pd.DataFrame({"region": ["North", "South"], PREVIOUS: [0.25, np.nan]})
    layout = FeatureLayout.fit(frame, ["region"], (PREVIOUS,))
    assert layout.n_columns == 4
    np.testing.assert_array_equal(layout.one_hot(frame), [[1, 0, 0.25, 0], [0, 1, 0, 1]])
    table, cats = layout.categorical(frame)
    assert cats == [0] and list(table.columns) == ["region", PREVIOUS]
    np.testing.assert_array_equal(table[PREVIOUS].to_numpy(), [0.25, np.nan])
