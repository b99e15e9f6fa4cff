"""``surveysim import qsf``: mappings, conditions from display and skip logic, the report of
everything not imported, and an imported survey that validates and runs.

Fixtures (tests/fixtures/qsf/README.md): ``small_logic.qsf``, written for these tests from the
documented .qsf structure, and ``sp_test_survey.qsf``, a real Qualtrics export (MIT licence)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from surveysim_core.config import load_config
from surveysim_core.errors import ConditionError, ConfigError
from surveysim_core.protocols import Progress
from surveysim_core.run import execute
from surveysim_core.survey import Survey

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "qsf"
QUIET = Progress(lambda message: None)


def import_qsf(runner, cli, name, out, *extra):
    result = runner.invoke(cli, ["import", "qsf", str(FIXTURES / name), "--out", str(out), *extra])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def test_small_survey_mappings_and_conditions(tmp_path, runner, cli):
    out = tmp_path / "small"
    result = import_qsf(runner, cli, "small_logic.qsf", out, "--demographic", "gender")
    assert "7 questions, 1 demographic fields; 2 items not imported or changed" in result.output
    survey = Survey.from_yaml(out / "survey.yaml")
    spec = survey.spec
    assert spec.demographics["gender"].options == ["Woman", "Man"]
    assert spec.demographics["gender"].label == "What is your gender?"
    questions = {q.id: q for q in spec.questions}
    assert list(questions) == ["car", "brand", "minutes", "trust_1", "trust_2", "nps", "panel"]
    assert questions["car"].answer == {
        "type": "categorical",
        "options": ["Yes", "No", "Don't know"],
    }
    assert questions["minutes"].answer == {"type": "integer", "min": 0, "max": 60}
    # the matrix: one question per row, HTML stripped, whole-number scale points -> integer 1-5
    assert questions["trust_1"].answer == {"type": "integer", "min": 1, "max": 5}
    assert questions["trust_2"].text == "How much do you trust each of these?\nPress"
    assert questions["nps"].answer == {
        "type": "integer", "min": 0, "max": 10,
        "labels": {0: "Not at all likely", 10: "Extremely likely"},
    }  # fmt: skip
    # skip logic on car ("No" skips to the end of the block) and display logic, by hand
    assert questions["car"].when is None
    assert questions["brand"].when == "car != 'No'"
    assert questions["minutes"].when == "car != 'No'"
    trust = "car == 'Don\\'t know' or (minutes is not none and minutes > 30)"
    assert questions["trust_1"].when == trust and questions["trust_2"].when == trust
    assert questions["nps"].when == "gender == 'Woman'"
    assert questions["panel"].when is None
    # Qualtrics shuffles the brands: so does surveysim, for that question only
    assert questions["brand"].option_order == "shuffled"
    assert [q.option_order for q in spec.questions].count(None) == 6
    report = (out / "import-report.md").read_text(encoding="utf-8")
    assert (
        "- QID7 (comments): text entry: surveysim has no free-text answer type: left out" in report
    )
    assert "- QID8 (panel): display logic not translated (EmbeddedField logic)" in report
    assert {"choice.j2", "scale.j2", "run.yaml"} <= {p.name for p in out.iterdir()}


def small_answers() -> pd.DataFrame:
    """Answers that follow the small survey's conditions (worked out per respondent)."""
    rows = []
    for i in range(60):
        gender = ["Woman", "Man"][i % 2]
        car = ["Yes", "No", "Don't know"][i % 3]
        answers = {"car": car}
        minutes = None
        if car != "No":
            answers["brand"] = ["Ford", "Fiat", "Volvo"][i % 3]
            minutes = answers["minutes"] = (i * 7) % 61
        if car == "Don't know" or (minutes is not None and minutes > 30):
            answers["trust_1"], answers["trust_2"] = i % 5 + 1, (i + 2) % 5 + 1
        if gender == "Woman":
            answers["nps"] = i % 11
        answers["panel"] = ["Yes", "No"][i % 4 // 2]
        for question, answer in answers.items():
            rows.append(
                {"subject_id": f"r{i}", "gender": gender, "question": question, "answer": answer}
            )
    return pd.DataFrame(rows)


def test_an_imported_survey_validates_and_runs(tmp_path, runner, cli, global_plugins):
    out = tmp_path / "small"
    import_qsf(runner, cli, "small_logic.qsf", out, "--demographic", "gender")
    answers = small_answers()
    answers.to_csv(out / "answers.csv", index=False)
    result = runner.invoke(cli, ["validate", str(out / "run.yaml")])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "valid (survey small_logic_test: car, brand, minutes, trust_1" in result.output

    overrides = [f"output.dir={tmp_path / 'runs'}", f"data.path={out / 'answers.csv'}"]
    config = load_config(out / "run.yaml", overrides)
    run = execute(config, str(out / "run.yaml"), global_plugins, progress=QUIET)
    metrics = pd.read_csv(run.dir / "metrics.csv")
    assert {"random", "marginal"} <= set(metrics["system"])
    assert set(answers["question"]) <= set(metrics["question"])

    # an answer the display logic excludes: respondent r1 is a man, so nps was not shown
    bad = pd.concat(
        [
            answers,
            pd.DataFrame([{"subject_id": "r1", "gender": "Man", "question": "nps", "answer": 3}]),
        ]
    )
    bad.to_csv(out / "answers.csv", index=False)
    with pytest.raises(
        ConditionError,
        match=r"subject r1 answered nps, but its condition \(when: gender == 'Woman'\)",
    ):
        execute(
            load_config(out / "run.yaml", overrides),
            str(out / "run.yaml"),
            global_plugins,
            progress=QUIET,
        )


def test_a_real_export_is_imported_with_every_question_accounted_for(tmp_path, runner, cli):
    out = tmp_path / "sp"
    import_qsf(runner, cli, "sp_test_survey.qsf", out)
    spec = Survey.from_yaml(out / "survey.yaml").spec
    types = {q.id: q.answer["type"] for q in spec.questions}
    assert types == {
        "Q1": "categorical", "Q18": "categorical", "Q3": "categorical", "Q11": "categorical",
        "Q5_statement1": "categorical", "Q5_statement2": "categorical",
        "Q5_statement3": "categorical", "Q5_other": "categorical", "Q15": "integer",
        "Q20": "categorical",
    }  # fmt: skip
    # ChoiceOrder is the order shown: "Choice 2 (ordered 1st)" first
    assert spec.question("Q18").answer["options"][0] == "Click to write Choice 2 (ordered 1st)"
    # the Likert scale loses its "n/a" point (AnalyzeChoices: No) and stays ordered
    q5 = spec.question("Q5_statement1").answer
    assert q5["ordered"] is True and "n/a" not in q5["options"] and len(q5["options"]) == 3
    # never dropped silently: every question element of the file is imported or reported
    data = json.loads((FIXTURES / "sp_test_survey.qsf").read_text(encoding="utf-8"))
    qids = {e["PrimaryAttribute"] for e in data["SurveyElements"] if e["Element"] == "SQ"}
    report = (out / "import-report.md").read_text(encoding="utf-8")
    imported = {"QID1", "QID18", "QID3", "QID11", "QID5", "QID15", "QID20"}
    reported = {q for q in qids if f"\n- {q}:" in report or f"\n- {q} (" in report}
    assert qids - imported == reported - imported
    assert qids == imported | reported
    for qid, reason in [("QID7", "text entry"), ("QID4", "multiple answers"), ("QID10", "rank order"),
                        ("QID2", "trash block"), ("QID21", "carried forward"), ("QID6", "MaxDiff")]:  # fmt: skip
        assert any(
            line.startswith(f"- {qid}") and reason in line for line in report.splitlines()
        ), qid
    result = runner.invoke(cli, ["validate", str(out / "run.yaml")])
    assert result.exit_code == 0, (result.output, result.exception)


def test_bad_input_is_an_error_and_nothing_is_overwritten(tmp_path, runner, cli):
    bad = tmp_path / "bad.qsf"
    bad.write_text("{not json", encoding="utf-8")
    result = runner.invoke(cli, ["import", "qsf", str(bad), "--out", str(tmp_path / "o")])
    assert isinstance(result.exception, ConfigError)
    assert "bad.qsf: not a Qualtrics survey file" in str(result.exception)

    out = tmp_path / "taken"
    out.mkdir()
    (out / "survey.yaml").write_text("mine\n", encoding="utf-8")
    result = runner.invoke(
        cli, ["import", "qsf", str(FIXTURES / "small_logic.qsf"), "--out", str(out)]
    )
    assert isinstance(result.exception, ConfigError) and "not empty" in str(result.exception)
    assert (out / "survey.yaml").read_text(encoding="utf-8") == "mine\n"


def test_in_page_display_logic_is_translated_too():
    from surveysim_qsf.convert import convert

    data = json.loads((FIXTURES / "small_logic.qsf").read_text(encoding="utf-8"))
    for element in data["SurveyElements"]:
        if element.get("PrimaryAttribute") == "QID6":  # nps: shown to women
            element["Payload"]["InPageDisplayLogic"] = element["Payload"].pop("DisplayLogic")
    conversion = convert(data, ["gender"], "small_logic.qsf")
    nps = next(q for q in conversion.survey["questions"] if q["id"] == "nps")
    assert nps["when"] == "gender == 'Woman'"


def test_loops_and_piped_text_are_reported():
    from surveysim_qsf.convert import convert

    data = json.loads((FIXTURES / "small_logic.qsf").read_text(encoding="utf-8"))
    blocks = next(e for e in data["SurveyElements"] if e["Element"] == "BL")["Payload"]
    blocks[2]["Options"] = {"Looping": "Static"}  # the Opinions block
    for element in data["SurveyElements"]:
        if element.get("PrimaryAttribute") == "QID3":
            element["Payload"]["QuestionText"] = (
                "Which brand is your ${q://QID2/ChoiceGroup/SelectedChoices} car?"
            )
    report = [f"{r.where}: {r.what}" for r in convert(data, [], "small_logic.qsf").report]
    assert (
        "block 'Opinions': loop and merge: its questions are imported once, not per loop" in report
    )
    assert "QID3 (brand): piped text (${...}) in the question: left as written" in report
