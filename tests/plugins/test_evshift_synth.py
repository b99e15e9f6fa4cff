"""Tests of the seeded synthetic EV-shift population (surveysim_evshift.synth)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from surveysim_evshift.synth import synthesize_population, write_population

QUESTIONNAIRE = (
    Path(__file__).resolve().parents[2]
    / "plugins"
    / "surveysim-evshift"
    / "surveysim_evshift"
    / "questionnaire.yaml"
)
FIELDS = [
    "living_state",
    "living_area",
    "age",
    "gender",
    "race",
    "highest_education",
    "marital_status",
    "number_of_children",
    "household",
    "employment_status",
    "income",
    "political",
    "religion",
    "religious_participation",
]
COLUMNS = ["subject_id", *FIELDS, "question", "intervention", "seq", "answer"]
COST = [8, 10, 11, 12, 13, 14, 16, 19, 20]
ENV = [21, 22]
CHARGING = [1, 2, 3, 4, 5, 6, 9]


@pytest.fixture(scope="module")
def options() -> dict[str, list[str]]:
    q = yaml.safe_load(QUESTIONNAIRE.read_text(encoding="utf-8"))
    return {f: [str(o) for o in q["demographics"][f]["options"]] for f in FIELDS}


@pytest.fixture(scope="module")
def population() -> tuple[pd.DataFrame, dict, float]:
    t0 = time.perf_counter()
    df, truth = synthesize_population()
    return df, truth, time.perf_counter() - t0


@pytest.fixture(scope="module")
def pop(population) -> pd.DataFrame:
    return population[0]


@pytest.fixture(scope="module")
def truth(population) -> dict:
    return population[1]


@pytest.fixture(scope="module")
def initial(pop) -> pd.DataFrame:
    return pop[pop["seq"] == 0].set_index("subject_id")


@pytest.fixture(scope="module")
def shifts(pop) -> pd.DataFrame:
    """Post answers with the shift from the same subject's previous answer."""
    df = pop.sort_values(["subject_id", "seq"])
    prev = df.groupby("subject_id")["answer"].shift(1)
    out = df.assign(shift=df["answer"] - prev)
    return out[out["seq"] > 0]


# --- determinism -------------------------------------------------------------


def test_same_seed_is_identical_and_different_seed_differs(tmp_path):
    a, ta = synthesize_population(300, seed=7)
    b, tb = synthesize_population(300, seed=7)
    pd.testing.assert_frame_equal(a, b)
    assert ta == tb
    c, tc = synthesize_population(300, seed=8)
    assert not a["answer"].equals(c["answer"]) or not a["political"].equals(c["political"])
    assert tc["seed"] == 8 and ta["seed"] == 7
    p1 = write_population(tmp_path / "one", 300, seed=7)
    p2 = write_population(tmp_path / "two", 300, seed=7)
    assert p1.read_bytes() == p2.read_bytes()
    assert (p1.parent / "truth.json").read_bytes() == (p2.parent / "truth.json").read_bytes()
    p3 = write_population(tmp_path / "three", 300, seed=8)
    assert p3.read_bytes() != p1.read_bytes()


def test_default_size_is_fast(population):
    assert population[2] < 5.0


# --- shape -------------------------------------------------------------------


def test_columns_and_dtypes(pop):
    assert list(pop.columns) == COLUMNS
    assert str(pop["intervention"].dtype) == "Int64"
    assert pd.api.types.is_integer_dtype(pop["seq"])
    assert pd.api.types.is_integer_dtype(pop["answer"])


def test_shape_of_default_population(pop, truth):
    ids = pop["subject_id"].unique()
    assert len(ids) == 4045
    assert ids[0] == "s0001" and ids[-1] == "s4045"
    init = pop[pop["question"] == "initial_preference"]
    assert init["subject_id"].is_unique and len(init) == 4045
    assert (init["seq"] == 0).all() and init["intervention"].isna().all()
    post = pop[pop["question"] == "post_intervention_preference"]
    assert set(pop["question"]) == {"initial_preference", "post_intervention_preference"}
    assert abs(len(post) - 20217) <= 0.01 * 20217
    assert truth["n_post_answers"] == len(post)
    assert post["intervention"].notna().all()
    assert post["intervention"].between(1, 35).all()
    assert (post["seq"] >= 1).all()
    per_subject = post.groupby("subject_id").size()
    assert per_subject.max() == 5 and per_subject.min() >= 1
    assert (per_subject == 5).mean() > 0.95
    # seq contiguous 0..k in row order; statements distinct within a subject.
    for sid, g in pop.groupby("subject_id", sort=False):
        assert list(g["seq"]) == list(range(len(g))), sid
    assert not post.duplicated(["subject_id", "intervention"]).any()
    # all 35 statements are used, roughly uniformly
    counts = post["intervention"].value_counts()
    assert len(counts) == 35 and counts.min() > 0.7 * counts.mean()


def test_smaller_population_has_requested_size():
    df, truth = synthesize_population(200, seed=3)
    assert df["subject_id"].nunique() == 200
    assert truth["n_subjects"] == 200
    post = df[df["seq"] > 0]
    assert abs(len(post) / 200 - 5.0) < 0.1


# --- demographics ------------------------------------------------------------


def test_demographic_values_are_verbatim_options(pop, options):
    for field in FIELDS:
        if field == "household":
            continue
        assert set(pop[field].unique()) <= set(options[field]), field
    # constant within a subject
    assert (pop.groupby("subject_id")[FIELDS].nunique() == 1).all().all()


def test_household_multiselect_rules(initial, options):
    opts = options["household"]
    exclusive = {"I live alone", "Prefer not to answer"}
    for value in initial["household"].unique():
        parts = value.split("|")
        assert parts and all(p in opts for p in parts), value
        assert len(set(parts)) == len(parts), value
        assert [opts.index(p) for p in parts] == sorted(opts.index(p) for p in parts), value
        if exclusive & set(parts):
            assert len(parts) == 1, value
    hh = initial["household"]
    assert (hh.str.contains("|", regex=False)).mean() > 0.1  # multi-selects occur
    assert (hh == "I live alone").mean() > 0.05
    assert (hh == "Prefer not to answer").any()


def test_prefer_not_to_answer_occurs_in_every_field(initial, options):
    for field in FIELDS:
        if field == "living_state":
            share = (initial[field] == "I do not reside within the United States").mean()
            assert 0 < share < 0.03
            continue
        pna = [o for o in options[field] if o.lower() == "prefer not to answer"]
        assert len(pna) == 1, field
        share = (initial[field] == pna[0]).mean()
        assert 0 < share < 0.08, field


def test_demographic_marginals_are_plausible(initial):
    states = initial["living_state"].value_counts(normalize=True)
    assert states.index[0] == "california"
    assert states["california"] > states["texas"] > states["wyoming"]
    area = initial["living_area"].value_counts(normalize=True)
    assert 0.6 < area["Urban"] < 0.9 and 0.1 < area["Rural"] < 0.35

    # a rural state has a higher rural share than an urban one
    def rural(state_list):
        sub = initial[initial["living_state"].isin(state_list)]
        return (sub["living_area"] == "Rural").mean()

    assert rural(["vermont", "maine", "west virginia", "mississippi"]) > rural(
        ["california", "new jersey", "nevada"]
    )
    gender = initial["gender"].value_counts(normalize=True)
    assert 0.4 < gender["Woman"] < 0.6 and 0.4 < gender["Man"] < 0.6


def test_demographic_correlations(initial):
    young = initial[initial["age"] == "18-25"]
    old = initial[initial["age"] == "66 or older"]
    emp = "employment_status"
    assert (old[emp] == "Retired").mean() > 0.5 > (young[emp] == "Retired").mean()
    assert (young[emp] == "Student").mean() > 0.15 > (old[emp] == "Student").mean()
    assert (young["marital_status"] == "Never married").mean() > 0.6
    assert (old["marital_status"] == "Widowed").mean() > (
        young["marital_status"] == "Widowed"
    ).mean()
    married = initial[initial["marital_status"] == "Married"]
    never = initial[initial["marital_status"] == "Never married"]
    has_spouse = lambda d: d["household"].str.contains("My spouse", regex=False).mean()  # noqa: E731
    assert has_spouse(married) > 0.8 and has_spouse(never) < 0.05
    assert (never["number_of_children"] == "0").mean() > (
        married["number_of_children"] == "0"
    ).mean()
    no_kids = initial[initial["number_of_children"] == "0"]
    assert no_kids["household"].str.contains("My children", regex=False).mean() < 0.05
    income_rank = {
        "less than $10,000": 0,
        "$10,001 to $40,000": 1,
        "$40,001 to $80,000": 2,
        "$80,001 to $160,000": 3,
        "More than $160,000": 4,
    }
    inc = initial["income"].map(income_rank)
    grad = initial["highest_education"].isin(
        ["Master's degree", "Professional degree", "Doctorate degree"]
    )
    hs = initial["highest_education"].isin(["Less than 8th grade", "8th grade", "High School"])
    assert inc[grad].mean() > inc[hs].mean() + 0.7


# --- answers and answer style ------------------------------------------------


def test_answers_are_integers_in_range(pop):
    a = pop["answer"]
    assert pd.api.types.is_integer_dtype(a)
    assert a.between(0, 100).all()


def test_heaping_and_endpoints(pop):
    a = pop["answer"]
    share10 = (a % 10 == 0).mean()
    assert share10 > 0.4  # uniform would give ~0.1
    counts = a.value_counts(normalize=True)
    assert counts[50] > 1.3 * max(counts[40], counts[60])
    assert counts[50] > 0.08
    assert counts[0] > 0.005 and counts[100] > 0.01
    assert (a % 5 == 0).mean() > share10  # some heaping on 5 as well
    assert ((a % 5) != 0).mean() > 0.1  # but not only heaped values


def test_most_shifts_small(shifts):
    d = shifts["shift"].abs()
    assert d.median() <= 6
    assert (d <= 10).mean() > 0.7


# --- structural effects recoverable from the data ---------------------------


def test_initial_preference_by_political(initial, truth):
    m = initial.groupby("political")["answer"].mean()
    assert (
        m["Strongly liberal"]
        > m["Somewhat liberal"]
        > m["Somewhat conservative"]
        > m["Strongly conservative"]
    )
    assert m["Strongly liberal"] - m["Strongly conservative"] > 25
    for label, value in truth["initial_mean_by_political"].items():
        assert value == pytest.approx(m[label], abs=1e-5)


def test_initial_preference_by_age_area_income(initial):
    by_age = initial.groupby("age")["answer"].mean()
    assert by_age["18-25"] > by_age["46-55"] > by_age["66 or older"]
    assert by_age["26-35"] > by_age["56-65"]
    by_area = initial.groupby("living_area")["answer"].mean()
    assert by_area["Urban"] > by_area["Rural"] + 5
    by_inc = initial.groupby("income")["answer"].mean()
    assert by_inc["More than $160,000"] > by_inc["less than $10,000"]


def test_environmental_statements_split_by_politics(shifts):
    env = shifts[shifts["intervention"].isin(ENV)]
    m = env.groupby("political")["shift"].mean()
    assert m["Strongly liberal"] > 1 and m["Somewhat liberal"] > 1
    assert m["Strongly conservative"] < 0
    # the backfire is specific to the environmental statements
    other = shifts[~shifts["intervention"].isin(ENV)]
    assert other[other["political"] == "Strongly conservative"]["shift"].mean() > 0


def test_cost_statements_move_lower_incomes_more(shifts):
    cost = shifts[shifts["intervention"].isin(COST)]
    low = cost["income"].isin(["less than $10,000", "$10,001 to $40,000"])
    high = cost["income"].isin(["$80,001 to $160,000", "More than $160,000"])
    assert cost[low]["shift"].mean() > cost[high]["shift"].mean() + 1.0


def test_charging_statements_move_rural_more(shifts):
    ch = shifts[shifts["intervention"].isin(CHARGING)]
    m = ch.groupby("living_area")["shift"].mean()
    assert m["Rural"] > m["Urban"] + 1.0


def test_observed_mean_shift_tracks_truth(shifts, truth):
    obs = shifts.groupby("intervention")["shift"].mean()
    exp = pd.Series({int(k): v for k, v in truth["expected_mean_shift_by_intervention"].items()})
    assert sorted(exp.index) == list(range(1, 36))
    r = np.corrcoef(obs.sort_index().to_numpy(float), exp.sort_index().to_numpy(float))[0, 1]
    assert r > 0.8
    realised = pd.Series(
        {int(k): v for k, v in truth["realised_mean_shift_by_intervention"].items()}
    )
    assert np.allclose(realised.sort_index(), obs.sort_index().to_numpy(float), atol=1e-5)


def test_truth_holds_parameters(truth):
    for key in (
        "seed",
        "n_subjects",
        "initial_coef",
        "attitude_sd",
        "initial_noise_sd",
        "intervention_base_effect",
        "intervention_groups",
        "segment_effects",
        "shift_noise_sd",
        "susceptibility_log_sd",
        "answer_style",
        "age_marginal",
        "marital_by_age",
        "employment_by_age",
        "income_coef",
        "household",
        "expected_mean_shift_by_intervention",
        "initial_mean_by_political",
    ):
        assert key in truth, key
    assert truth["seed"] == 0 and truth["n_subjects"] == 4045
    base = truth["intervention_base_effect"]
    assert len(base) == 35
    assert sum(v > 0.5 for v in base.values()) >= 25
    assert min(base.values()) <= 0
    coef = truth["initial_coef"]
    ranges = {
        f: max(coef[f].values()) - min(coef[f].values())
        for f in ("political", "age", "living_area")
    }
    assert ranges["political"] > ranges["age"] > ranges["living_area"]
    assert truth["intervention_groups"]["environmental"] == ENV


# --- files -------------------------------------------------------------------


def test_write_population_roundtrip_and_refuses_overwrite(tmp_path):
    out = tmp_path / "evshift" / "synthetic"
    csv_path = write_population(out, n_subjects=150, seed=5)
    assert csv_path == out / "responses.csv"
    assert csv_path.exists() and (out / "truth.json").exists()
    truth = json.loads((out / "truth.json").read_text(encoding="utf-8"))
    df, expected_truth = synthesize_population(150, seed=5)
    assert truth == expected_truth
    back = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    assert list(back.columns) == COLUMNS
    assert len(back) == len(df)
    for col in [*FIELDS, "subject_id", "question"]:
        assert back[col].tolist() == df[col].tolist(), col
    assert back["answer"].astype(int).tolist() == df["answer"].tolist()
    assert (back.loc[df["seq"].to_numpy() == 0, "intervention"] == "").all()

    before = csv_path.read_bytes()
    with pytest.raises(FileExistsError, match=r"responses\.csv"):
        write_population(out, n_subjects=150, seed=6)
    assert csv_path.read_bytes() == before
    write_population(out, n_subjects=150, seed=6, overwrite=True)
    assert csv_path.read_bytes() != before
    assert json.loads((out / "truth.json").read_text(encoding="utf-8"))["seed"] == 6
