"""Tests of the ANES 1996 survey plugin: decoding, answer types, long format, parsers, prompts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import surveysim_anes96.plugin
from surveysim_anes96.codebook import QUESTION_COLUMNS, decode_respondents, load_raw, long_table
from surveysim_anes96.survey import SURVEY, synthesize

from surveysim_core.answers import answer_type_from_spec
from surveysim_core.config import RunConfig, load_config
from surveysim_core.data import validate_long
from surveysim_core.errors import ConfigError
from surveysim_core.plugins import Plugins
from surveysim_core.run import parse_with, plan_run, render_prompts

ROOT = Path(__file__).resolve().parents[2]
QUESTIONS = ["self_placement", "party_id", "clinton_placement", "dole_placement", "vote"]
FIELDS = ["age", "education", "income", "place", "tv_news"]
RAW_COLUMNS = ["popul", "TVnews", "selfLR", "ClinLR", "DoleLR", "PID", "age", "educ", "income", "vote"]  # fmt: skip

# Rows of statsmodels' anes96.csv copied by hand (row index: popul, TVnews, selfLR, ClinLR,
# DoleLR, PID, age, educ, income, vote), and the words each decodes to under the codebook in
# statsmodels.datasets.anes96.NOTE, worked out by hand: (age, education, income, place, tv_news).
HAND_CHECKED = {
    0: (
        (0, 7, 7, 1, 6, 6, 36, 3, 1, 1),
        ("30-39", "high school graduate", "none or less than $2,999",
         "a rural area or a place of fewer than 1,000 people", "every day"),
    ),
    9: (
        (2800, 0, 3, 3, 7, 0, 39, 3, 1, 0),
        ("30-39", "high school graduate", "none or less than $2,999",
         "a city of 1 million people or more", "not at all"),
    ),
    14: (  # popul 1000 (thousands) is exactly one million
        (1000, 7, 5, 7, 4, 0, 74, 1, 1, 0),
        ("70-79", "1-8 grades", "none or less than $2,999",
         "a city of 1 million people or more", "every day"),
    ),
    82: (
        (0, 6, 4, 3, 6, 2, 91, 1, 5, 0),
        ("80 and over", "1-8 grades", "$9,000-$9,999",
         "a rural area or a place of fewer than 1,000 people", "6 days a week"),
    ),
    123: (  # age 30 opens the 30-39 bracket
        (9, 4, 6, 3, 6, 6, 30, 6, 8, 1),
        ("30-39", "master's degree", "$12,000-$12,999", "a town of 1,000 to 9,999 people",
         "4 days a week"),
    ),
    139: (  # income 10, which statsmodels prints as "$14,000-$14.999"
        (9, 5, 5, 4, 5, 5, 73, 4, 10, 1),
        ("70-79", "some college", "$14,000-$14,999", "a town of 1,000 to 9,999 people",
         "5 days a week"),
    ),
    466: (  # age 29 closes the 18-29 bracket
        (1600, 5, 2, 3, 6, 0, 29, 7, 17, 0),
        ("18-29", "PhD", "$35,000-$39,999", "a city of 1 million people or more",
         "5 days a week"),
    ),
    943: (
        (18, 7, 4, 2, 6, 3, 61, 7, 24, 1),
        ("60-69", "PhD", "$105,000 and over", "a town of 10,000 to 49,999 people", "every day"),
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def plugins() -> Plugins:
    found = Plugins()
    if "anes96" not in found.surveys:  # not installed: register the plugin module directly
        found.register(surveysim_anes96.plugin, "anes96")
    return found


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    return load_raw()


@pytest.fixture(scope="module")
def answer_types(plugins):
    return {
        q.id: answer_type_from_spec(q.answer, plugins.answer_types, q.id)
        for q in SURVEY.spec.questions
    }


@pytest.fixture(scope="module")
def plan(plugins):
    config = RunConfig.model_validate({"survey": "anes96", "baselines": [{"name": "random"}]})
    return plan_run(config, "test.yaml", plugins)


# -- the survey and its registration ------------------------------------------------------------
def test_registered_under_its_name(plugins):
    survey = plugins.surveys.get("anes96")
    assert survey.name == "anes96"
    assert [q.id for q in survey.spec.questions] == QUESTIONS
    assert list(survey.spec.demographics) == FIELDS
    assert survey.synthesize is not None


def test_core_never_names_the_survey():
    sources = [
        *(ROOT / "surveysim_core").rglob("*.py"),
        *(ROOT / "templates").glob("*"),
        ROOT / "pyproject.toml",
    ]
    assert len(sources) > 5
    hits = [str(p) for p in sources if p.is_file() and "anes" in p.read_text("utf-8").lower()]
    assert hits == []


# -- decoding -------------------------------------------------------------------------------------
def test_sample_is_the_documented_one(raw):
    assert raw.shape == (944, 11)
    assert list(raw.columns[:10]) == RAW_COLUMNS
    assert raw.isna().sum().sum() == 0


@pytest.mark.parametrize("row", sorted(HAND_CHECKED))
def test_hand_checked_respondents(raw, row):
    codes, words = HAND_CHECKED[row]
    assert tuple(int(v) for v in raw.loc[row, RAW_COLUMNS]) == codes
    decoded = decode_respondents(raw, SURVEY.spec).loc[row]
    assert tuple(decoded[FIELDS]) == words


@pytest.mark.parametrize("row", sorted(HAND_CHECKED))
def test_hand_checked_answers(raw, row):
    codes, _ = HAND_CHECKED[row]
    table = long_table(raw, SURVEY.spec)
    got = table[table["subject_id"] == row].set_index("question")["answer"]
    self_lr, clin_lr, dole_lr, pid, vote = codes[2], codes[3], codes[4], codes[5], codes[9]
    assert got["self_placement"] == self_lr
    assert got["clinton_placement"] == clin_lr
    assert got["dole_placement"] == dole_lr
    assert got["party_id"] == pid
    assert got["vote"] == ["Clinton", "Dole"][vote]


def test_every_option_is_used_and_every_respondent_decoded(raw):
    decoded = decode_respondents(raw, SURVEY.spec)
    assert len(decoded) == 944 and decoded.notna().all().all()
    for name, field in SURVEY.spec.demographics.items():
        assert set(decoded[name]) == set(field.options), name


def test_bracket_counts_match_the_raw_ages_and_places(raw):
    decoded = decode_respondents(raw, SURVEY.spec)
    assert (decoded["age"] == "18-29").sum() == ((raw["age"] >= 18) & (raw["age"] <= 29)).sum()
    assert (decoded["age"] == "80 and over").sum() == (raw["age"] >= 80).sum()
    millions = decoded["place"] == "a city of 1 million people or more"
    assert millions.sum() == (raw["popul"] >= 1000).sum()
    assert (decoded["tv_news"] == "not at all").sum() == (raw["TVnews"] == 0).sum()


def test_undocumented_code_is_an_error(raw):
    from surveysim_core.errors import DataError

    broken = raw.copy()
    broken.loc[5, "educ"] = 8
    with pytest.raises(DataError, match="educ"):
        decode_respondents(broken, SURVEY.spec)


# -- answer types and the long format ---------------------------------------------------------------
def test_answer_types(answer_types):
    for qid in ["self_placement", "clinton_placement", "dole_placement"]:
        at = answer_types[qid]
        assert at.ordered and list(at.support) == [1, 2, 3, 4, 5, 6, 7]
        assert at.options.labels[1] == "extremely liberal"
        assert at.options.labels[7] == "extremely conservative"
    pid = answer_types["party_id"]
    assert pid.ordered and list(pid.support) == [0, 1, 2, 3, 4, 5, 6]
    assert pid.options.labels[0] == "strong Democrat"
    assert pid.options.labels[6] == "strong Republican"
    vote = answer_types["vote"]
    assert not vote.ordered and vote.labels == ["Clinton", "Dole"]
    assert vote.to_code("Dole") == 1.0 and vote.to_code("Perot") is None


def test_long_table_passes_core_validation(raw, answer_types):
    table = long_table(raw, SURVEY.spec)
    assert len(table) == 944 * 5
    assert list(table.columns) == ["subject_id", *FIELDS, "question", "answer"]
    data = validate_long(table, SURVEY.spec, answer_types, "anes96")
    assert len(data.respondents) == 944
    assert data.respondents.loc["466", "education"] == "PhD"
    # answer codes against the raw columns, for every respondent
    for qid, column in QUESTION_COLUMNS.items():
        got = data.responses[data.responses["question"] == qid].set_index("subject_id")["answer"]
        want = raw[column].rename(index=str)
        assert got.sort_index().equals(want.sort_index().astype(float)), qid


def test_synthesize_writes_the_real_sample(tmp_path, raw, answer_types):
    path = synthesize(tmp_path / "all", 944, 0)
    table = pd.read_csv(path)
    assert len(table) == 944 * 5 and table["subject_id"].nunique() == 944
    validate_long(table, SURVEY.spec, answer_types, str(path))
    source = json.loads((path.parent / "source.json").read_text())
    assert source["respondents"] == 944 and source["subsample_seed"] is None


def test_synthesize_subsample_is_seeded(tmp_path, raw):
    a = pd.read_csv(synthesize(tmp_path / "a", 100, 3))
    b = pd.read_csv(synthesize(tmp_path / "b", 100, 3))
    c = pd.read_csv(synthesize(tmp_path / "c", 100, 4))
    assert a.equals(b) and not a.equals(c)
    assert a["subject_id"].nunique() == 100
    # a subsample keeps each respondent's row index and answers
    votes = a[a["question"] == "vote"].set_index("subject_id")["answer"]
    for sid, vote in votes.items():
        assert vote == ["Clinton", "Dole"][int(raw.loc[sid, "vote"])]
    with pytest.raises(ConfigError, match="944"):
        synthesize(tmp_path / "d", 1000, 0)


# -- parsing and prompts ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("Clinton", 0.0),
        (" dole.", 1.0),
        ("I would vote for Bill Clinton", 0.0),
        ("DOLE", 1.0),
        ("Perot", None),
        ("Clintonesque", None),
        ("", None),
    ],
)
def test_vote_parser(plan, text, code):
    assert parse_with(plan, "vote")(text) == code


def test_scale_parser_takes_the_first_integer(plan):
    parse = parse_with(plan, "self_placement")
    assert parse("4") == 4.0
    assert parse("Score: 6 (conservative)") == 6.0
    assert parse("moderate") is None


def test_prompts_show_the_persona_and_the_labelled_scale(plan, raw):
    table = long_table(raw.loc[[466]], SURVEY.spec)
    items = table.drop(columns=FIELDS).assign(subject_id="466", seq=0)
    respondents = decode_respondents(raw.loc[[466]], SURVEY.spec).rename(index=str)
    prompts = dict(zip(items["question"], render_prompts(plan, items, respondents), strict=True))
    system = prompts["vote"].system
    assert (
        "{age: 18-29, education: PhD, household income: $35,000-$39,999, place of residence:"
        " a city of 1 million people or more, watches TV news: 5 days a week}"
    ) in system
    scale = prompts["self_placement"].user
    assert "1 = extremely liberal, 2 = liberal," in scale
    assert "7 = extremely conservative." in scale
    assert scale.endswith(
        "single number from 1 to 7 and no additional words or explanations. Score:"
    )
    assert "0 = strong Democrat" in prompts["party_id"].user
    assert "6 = strong Republican." in prompts["party_id"].user
    assert "place Bob Dole" in prompts["dole_placement"].user
    vote = prompts["vote"].user
    assert "(Clinton or Dole)" in vote and vote.endswith("Vote:")
    assert not re.search(r"\{\{|\}\}|\{%", vote + scale)


def test_run_config_validates(plugins):
    config = load_config(ROOT / "surveys" / "anes96.yaml")
    missing = [b.name for b in config.baselines if b.name not in plugins.baselines]
    if missing:
        pytest.skip(f"baselines {missing} are not installed")
    plan = plan_run(config, "surveys/anes96.yaml", plugins)
    assert list(plan.answer_types) == QUESTIONS
    assert config.evaluation.segments == ["education", "age"]
