"""Question conditions (``when:``): safe evaluation, survey checks, contradictions in data, and
items not asked left out of training and scoring."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from jinja2.exceptions import SecurityError, UndefinedError
from pydantic import ValidationError

from surveysim_core.conditions import compile_condition
from surveysim_core.config import RunConfig
from surveysim_core.data import validate_long
from surveysim_core.errors import ConditionError, ConfigError
from surveysim_core.protocols import Progress
from surveysim_core.run import execute, plan_run
from surveysim_core.survey import Survey, SurveySpec

QUIET = Progress(lambda message: None)

SURVEY = {
    "name": "cars",
    "demographics": {
        "region": {"options": ["North", "South"]},
        "household": {"options": ["partner", "children"], "multi": True},
    },
    "questions": [
        {"id": "owns_car", "answer": {"type": "categorical", "options": ["yes", "no"]}},
        {
            "id": "car_brand",
            "answer": {"type": "categorical", "options": ["Ford", "Fiat"]},
            "when": "owns_car == 'yes'",
        },
        {
            "id": "minutes",
            "answer": {"type": "integer", "min": 0, "max": 9},
            "when": "region == 'North' or 'children' in household",
        },
        {
            "id": "happy",
            "answer": {"type": "integer", "min": 1, "max": 5},
            "when": "minutes is none or minutes < 5",
        },
    ],
    "parsers": ["choice"],
}


def test_conditions_read_labels_and_numbers():
    c = compile_condition("vote == 'Clinton' and age in ['18-29', '30-39'] and score >= 4")
    assert c.names == {"vote", "age", "score"}
    assert c.holds({"vote": "Clinton", "age": "30-39", "score": 4})
    assert not c.holds({"vote": "Clinton", "age": "40-49", "score": 4})
    assert not c.holds({"vote": "Dole", "age": "30-39", "score": 9})


def test_conditions_run_in_a_sandbox():
    escape = compile_condition("().__class__.__base__.__subclasses__()")
    with pytest.raises((SecurityError, UndefinedError)):
        escape.holds({})


def test_a_condition_on_a_later_or_unknown_question_is_a_survey_error():
    bad = {
        **SURVEY,
        "questions": [*SURVEY["questions"][:1], {**SURVEY["questions"][1], "when": "happy > 2"}],
    }
    with pytest.raises(ValidationError, match=r"car_brand: when: 'happy > 2' reads happy"):
        SurveySpec.model_validate(bad)
    broken = {
        **SURVEY,
        "questions": [*SURVEY["questions"][:1], {**SURVEY["questions"][1], "when": "owns_car =="}],
    }
    with pytest.raises(ValidationError, match=r"when: 'owns_car ==' is not a valid expression"):
        SurveySpec.model_validate(broken)


def test_survey_yaml_with_a_bad_condition_names_the_file(tmp_path):
    bad = {**SURVEY, "questions": [{**SURVEY["questions"][0], "when": "nobody"}]}
    path = tmp_path / "survey.yaml"
    path.write_text(yaml.safe_dump(bad), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"survey\.yaml: .*owns_car: when: 'nobody' reads nobody"):
        Survey.from_yaml(path)


def rows(*entries):
    out = []
    for sid, region, household, question, answer in entries:
        out.append(
            {"subject_id": sid, "region": region, "household": household, "question": question,
             "answer": answer}
        )  # fmt: skip
    return pd.DataFrame(out)


def checked(plugins, table):
    plan = plan_run(RunConfig(survey="cars"), "run.yaml", plugins)
    return validate_long(table, plan.survey.spec, plan.answer_types, "answers.csv")


@pytest.fixture
def cars_plugins(plugins):
    from surveysim_core import hookimpl

    class CarsPlugin:
        @hookimpl
        def register_surveys(self, register):
            register("cars", Survey(spec=SurveySpec.model_validate(SURVEY)))

    plugins.register(CarsPlugin(), "cars-plugin")
    yield plugins
    plugins.unregister("cars-plugin")


def test_data_that_follow_the_conditions_are_accepted(cars_plugins):
    table = rows(
        ("a", "North", "partner", "owns_car", "yes"),
        ("a", "North", "partner", "car_brand", "Fiat"),
        ("a", "North", "partner", "minutes", 7),  # North: asked; 7 minutes: happy not asked
        ("b", "South", "partner", "owns_car", "no"),  # no car: no brand; South, no children
        ("b", "South", "partner", "happy", 2),  # minutes not asked (none): happy asked
        ("c", "South", "children", "owns_car", "no"),
        ("c", "South", "children", "minutes", 3),  # children: asked
        ("c", "South", "children", "happy", 5),  # 3 < 5: asked
    )
    data = checked(cars_plugins, table)
    assert len(data.responses) == 8


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            ("b", "South", "partner", "car_brand", "Ford"),
            r"row 3: subject b answered car_brand, but its condition \(when: owns_car == 'yes'\) is false for them \(owns_car='no'\)",
        ),
        (
            ("b", "South", "partner", "minutes", 2),
            r"row 3: subject b answered minutes, .*household=\['partner'\], region='South'",
        ),
        (
            ("a", "North", "partner", "happy", 4),
            r"row 3: subject a answered happy, .*\(minutes=7\)",
        ),
    ],
)
def test_an_answer_the_conditions_exclude_is_a_condition_error(cars_plugins, entry, expected):
    table = rows(
        ("a", "North", "partner", "minutes", 7),
        ("b", "South", "partner", "owns_car", "no"),
        entry,
    )
    with pytest.raises(ConditionError, match=r"answers\.csv: " + expected):
        checked(cars_plugins, table)


def test_items_not_asked_are_neither_trained_nor_scored(tmp_path, cars_plugins):
    entries = []
    for i in range(40):
        owns = "yes" if i % 2 else "no"
        entries.append((f"s{i}", "South", "partner", "owns_car", owns))
        if owns == "yes":  # car_brand asked of half the respondents only
            entries.append((f"s{i}", "South", "partner", "car_brand", ["Ford", "Fiat"][i % 4 // 2]))
    path = tmp_path / "answers.csv"
    rows(*entries).to_csv(path, index=False)
    config = RunConfig.model_validate(
        {
            "survey": "cars",
            "data": {"source": "file", "path": str(path)},
            "questions": ["owns_car", "car_brand"],
            "baselines": [{"name": "marginal"}],
            "evaluation": {"bootstrap": 5},
            "output": {"dir": str(tmp_path / "runs")},
        }
    )
    run = execute(config, "run.yaml", cars_plugins, run_dir=str(tmp_path / "r"), progress=QUIET)
    splits = pd.read_csv(run.dir / "splits.csv", dtype=str)
    test_ids = set(splits.loc[splits["split"] == "test", "subject_id"])
    preds = pd.read_csv(run.dir / "systems" / "marginal" / "predictions.csv", dtype=str)
    # one prediction per asked item: every test respondent's owns_car, car_brand of owners only
    owners = {f"s{i}" for i in range(40) if i % 2}
    expected = sorted(
        [(s, "owns_car") for s in test_ids] + [(s, "car_brand") for s in test_ids & owners]
    )
    assert sorted(zip(preds["subject_id"], preds["question"], strict=True)) == expected
