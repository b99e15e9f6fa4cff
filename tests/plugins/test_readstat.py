"""SPSS (.sav) and Stata (.dta) files: value labels decoded, missing-value codes missing, and
``surveysim import wide`` from one row per respondent to the long format. Every file here is
written by the test itself (pyreadstat.write_sav, pandas.DataFrame.to_stata)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import yaml

pyreadstat = pytest.importorskip("pyreadstat")

from surveysim_core.config import RunConfig  # noqa: E402
from surveysim_core.data import read_table, validate_long  # noqa: E402
from surveysim_core.errors import ConfigError, DataError  # noqa: E402
from surveysim_core.run import plan_run  # noqa: E402

SURVEY_YAML = """\
name: commute
demographics:
  region: {options: [North, South]}
questions:
  - id: mode
    answer: {type: categorical, options: [car, bus, bike]}
  - id: satisfaction
    answer: {type: integer, min: 1, max: 5}
parsers: [choice]
"""


def test_a_long_sav_file_reads_with_labels_decoded_and_missing_codes_missing(tmp_path, plugins):
    frame = pd.DataFrame(
        {
            "subject_id": ["a", "a", "b", "b"],
            "region": [1.0, 1.0, 2.0, 2.0],
            "question": ["mode", "satisfaction", "mode", "satisfaction"],
            "answer": [2.0, 4.0, -9.0, 5.0],
        }
    )
    path = tmp_path / "long.sav"
    pyreadstat.write_sav(
        frame,
        str(path),
        variable_value_labels={"region": {1: "North", 2: "South"}},
        missing_ranges={"answer": [-9]},  # SPSS user-missing: "refused"
    )
    table = read_table(path, plugins.data_formats)
    assert list(table["region"]) == ["North", "North", "South", "South"]
    # no value labels on the answer column: codes stay numbers, 4.0 written as 4; -9 is missing
    assert table["answer"].tolist()[:2] == [2, 4]
    assert table["answer"][2] is None or math.isnan(table["answer"][2])
    assert table["answer"][3] == 5


def test_a_long_dta_file_with_value_labels_validates_against_the_survey(tmp_path, plugins):
    frame = pd.DataFrame(
        {
            "subject_id": ["a", "b", "c"],
            "region": [1, 2, 1],
            "question": ["mode", "mode", "mode"],
            "answer": [3, 1, 2],
        }
    )
    path = tmp_path / "long.dta"
    frame.to_stata(
        path,
        write_index=False,
        value_labels={
            "region": {1: "North", 2: "South"},
            "answer": {1: "car", 2: "bus", 3: "bike"},
        },
    )
    table = read_table(path, plugins.data_formats)
    assert table["answer"].tolist() == ["bike", "car", "bus"]
    survey_file = tmp_path / "survey.yaml"
    survey_file.write_text(SURVEY_YAML, encoding="utf-8")
    plan = plan_run(RunConfig(survey=str(survey_file)), "run.yaml", plugins)
    data = validate_long(table, plan.survey.spec, plan.answer_types, str(path))
    # categorical codes are option positions: bike 2, car 0, bus 1
    assert data.responses["answer"].tolist() == [2.0, 0.0, 1.0]
    assert data.respondents.loc["b", "region"] == "South"


def test_an_unreadable_file_is_a_data_error_naming_it(tmp_path, plugins):
    path = tmp_path / "broken.sav"
    path.write_bytes(b"not an spss file")
    with pytest.raises(DataError, match=r"broken\.sav: could not be read as sav"):
        read_table(path, plugins.data_formats)


# -- wide files -------------------------------------------------------------------------------
def write_wide_dta(path):
    # one row per respondent; -8 is this study's "don't know" code, NaN is Stata's "." (missing)
    frame = pd.DataFrame(
        {
            "caseid": [101, 102, 103, 104],
            "REGION": [1, 2, 2, 1],
            "Q_MODE": [1.0, 3.0, float("nan"), -8.0],
            "Q_SAT": [5, 2, 4, 1],
            "WT": [0.5, 1.5, 1.0, 2.0],
        }
    )
    labels = {
        "REGION": {1: "North", 2: "South"},
        "Q_MODE": {1: "car", 2: "bus", 3: "bike", -8: "don't know"},
        "Q_SAT": {1: "very unhappy", 5: "very happy"},
    }
    frame.to_stata(path, write_index=False, value_labels=labels)


MAPPING = {
    "subject_id": "caseid",
    "weight": "WT",
    "missing": [-8],
    "demographics": {"region": "REGION"},
    "questions": {"mode": "Q_MODE", "satisfaction": {"column": "Q_SAT", "values": "codes"}},
}


def test_import_wide_writes_the_long_format(tmp_path, runner, cli, plugins):
    data = tmp_path / "study.dta"
    write_wide_dta(data)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(yaml.safe_dump(MAPPING), encoding="utf-8")
    out = tmp_path / "long.csv"
    args = ["import", "wide", str(data), "--mapping", str(mapping), "--out", str(out)]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, (result.output, result.exception)
    assert "6 answers of 4 respondents" in result.output
    long = pd.read_csv(out, dtype=str)
    # worked by hand from the rows above: 103's mode is Stata-missing, 104's is -8 (missing)
    expected = [
        ("101", "North", "mode", "car"),
        ("101", "North", "satisfaction", "5"),
        ("102", "South", "mode", "bike"),
        ("102", "South", "satisfaction", "2"),
        ("103", "South", "satisfaction", "4"),
        ("104", "North", "satisfaction", "1"),
    ]
    got = list(long[["subject_id", "region", "question", "answer"]].itertuples(index=False))
    assert [tuple(r) for r in got] == expected

    survey_file = tmp_path / "survey.yaml"
    survey_file.write_text(SURVEY_YAML, encoding="utf-8")
    plan = plan_run(RunConfig(survey=str(survey_file)), "run.yaml", plugins)
    assert long["weight"].tolist() == ["0.5", "0.5", "1.5", "1.5", "1.0", "2.0"]
    checked = validate_long(long, plan.survey.spec, plan.answer_types, str(out), weight="weight")
    assert len(checked.responses) == 6 and len(checked.respondents) == 4
    assert checked.responses["weight"].tolist() == [0.5, 0.5, 1.5, 1.5, 1.0, 2.0]

    # an existing --out is never overwritten without --force
    before = out.read_bytes()
    again = runner.invoke(cli, args)
    assert again.exit_code != 0 and "exists" in str(again.exception)
    assert out.read_bytes() == before


def test_import_wide_names_the_mapping_key_of_an_absent_column(tmp_path, runner, cli):
    data = tmp_path / "study.dta"
    write_wide_dta(data)
    mapping = tmp_path / "mapping.yaml"
    bad = {**MAPPING, "questions": {"mode": "Q_MODEE"}}
    mapping.write_text(yaml.safe_dump(bad), encoding="utf-8")
    args = [
        "import",
        "wide",
        str(data),
        "--mapping",
        str(mapping),
        "--out",
        str(tmp_path / "o.csv"),
    ]
    result = runner.invoke(cli, args)
    assert isinstance(result.exception, DataError)
    assert "mapping.yaml: columns not in" in str(result.exception)
    assert "questions.mode: 'Q_MODEE'" in str(result.exception)
    assert not (tmp_path / "o.csv").exists()


def test_a_misspelt_mapping_key_is_a_config_error(tmp_path, runner, cli):
    data = tmp_path / "study.dta"
    write_wide_dta(data)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(yaml.safe_dump({**MAPPING, "demographic": {}}), encoding="utf-8")
    args = [
        "import",
        "wide",
        str(data),
        "--mapping",
        str(mapping),
        "--out",
        str(tmp_path / "o.csv"),
    ]
    result = runner.invoke(cli, args)
    assert isinstance(result.exception, ConfigError)
    assert "mapping.yaml: demographic: unknown key" in str(result.exception)


def test_import_wide_from_csv_applies_missing_codes_to_text(tmp_path, runner, cli):
    data = tmp_path / "study.csv"
    pd.DataFrame(
        {"caseid": [1, 2, 3], "REGION": ["North", "South", "North"], "Q_MODE": ["car", "", "bus"],
         "Q_SAT": ["5", "-9", "3"]}
    ).to_csv(data, index=False)  # fmt: skip
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(
        yaml.safe_dump(
            {"subject_id": "caseid", "missing": [-9], "demographics": {"region": "REGION"},
             "questions": {"mode": "Q_MODE", "satisfaction": "Q_SAT"}}
        ),
        encoding="utf-8",
    )  # fmt: skip
    out = tmp_path / "long.csv"
    args = ["import", "wide", str(data), "--mapping", str(mapping), "--out", str(out)]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, (result.output, result.exception)
    long = pd.read_csv(out, dtype=str)
    # subject 2: mode empty, satisfaction -9: no rows at all
    got = [tuple(r) for r in long[["subject_id", "question", "answer"]].itertuples(index=False)]
    assert got == [("1", "mode", "car"), ("1", "satisfaction", "5"), ("3", "mode", "bus"),
                   ("3", "satisfaction", "3")]  # fmt: skip
