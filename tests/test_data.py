"""Loading and validating long-format survey data (CSV, JSONL, Parquet)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from surveysim_std.answer_types import (
    CategoricalAnswer,
    CategoricalOptions,
    IntegerAnswer,
    IntegerOptions,
)

from surveysim_core.data import read_table, validate_long
from surveysim_core.errors import DataError, PluginError
from surveysim_core.survey import SurveySpec

SPEC = SurveySpec.model_validate(
    {
        "name": "tiny",
        "demographics": {
            "age": {"options": ["18-25", "26-35", "36-45"]},
            "household": {
                "options": ["I live alone", "My spouse", "My children"],
                "multi": True,
                "exclusive": ["I live alone"],
            },
        },
        "questions": [
            {"id": "rating", "answer": {"type": "integer", "min": 0, "max": 100}},
            {
                "id": "after",
                "answer": {"type": "integer", "min": 0, "max": 100},
                "context": ["intervention"],
            },
            {
                "id": "colour",
                "answer": {"type": "categorical", "options": ["red", "green", "blue"]},
            },
        ],
    }
)
ANSWERS = {
    "rating": IntegerAnswer(IntegerOptions(min=0, max=100)),
    "after": IntegerAnswer(IntegerOptions(min=0, max=100)),
    "colour": CategoricalAnswer(CategoricalOptions(options=["red", "green", "blue"])),
}
COLUMNS = ["subject_id", "age", "household", "question", "intervention", "seq", "answer"]
# household as a list of labels; CSV joins them with "|"
ROWS = [
    ["s1", "18-25", ["My children", "My spouse"], "rating", None, 0, 50],
    ["s1", "18-25", ["My children", "My spouse"], "after", 3, 1, 70],
    ["s2", "26-35", ["I live alone"], "rating", None, 0, 0],
    ["s2", "26-35", ["I live alone"], "after", 7, 1, 100],
    ["s2", "26-35", ["I live alone"], "colour", None, 2, "green"],
]


def write_csv(path, rows, columns=COLUMNS):
    table = pd.DataFrame([list(r) for r in rows], columns=columns)
    if "household" in table:
        table["household"] = ["|".join(v) if isinstance(v, list) else v for v in table["household"]]
    table.to_csv(path, index=False)
    return path


def write_jsonl(path, rows, columns=COLUMNS):
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            record = {k: v for k, v in zip(columns, row, strict=True) if v is not None}
            handle.write(json.dumps(record) + "\n")
    return path


def write_parquet(path, rows, columns=COLUMNS):
    table = pd.DataFrame([list(r) for r in rows], columns=columns)
    table["answer"] = table["answer"].astype(str)  # mixed numbers and labels in one column
    table.to_parquet(path, index=False)
    return path


def load(path, plugins):
    return validate_long(read_table(path, plugins.data_formats), SPEC, ANSWERS, str(path))


def problems(tmp_path, plugins, rows, columns=COLUMNS) -> str:
    path = write_csv(tmp_path / "answers.csv", rows, columns)
    with pytest.raises(DataError) as err:
        load(path, plugins)
    message = str(err.value)
    assert str(path) in message  # every error names the file
    return message


def changed(row_index: int, column: str, value):
    rows = [list(r) for r in ROWS]
    rows[row_index][COLUMNS.index(column)] = value
    return rows


def test_valid_file_loads(tmp_path, plugins):
    data = load(write_csv(tmp_path / "ok.csv", ROWS), plugins)
    assert list(data.respondents.index) == ["s1", "s2"]
    assert data.respondents.loc["s1", "age"] == "18-25"
    # multi-select kept in the survey's option order, whatever order the file gives
    assert data.respondents.loc["s1", "household"] == ("My spouse", "My children")
    assert data.respondents.loc["s2", "household"] == ("I live alone",)
    answers = data.responses.set_index(["subject_id", "question"])["answer"]
    assert answers["s1", "rating"] == 50.0
    assert answers["s2", "after"] == 100.0
    assert answers["s2", "colour"] == 1.0  # "green" is option 1
    interventions = data.responses.set_index(["subject_id", "question"])["intervention"]
    assert interventions["s1", "after"] == "3"
    assert interventions["s1", "rating"] == ""


def test_csv_jsonl_and_parquet_load_identically(tmp_path, plugins):
    csv = load(write_csv(tmp_path / "a.csv", ROWS), plugins)
    jsonl = load(write_jsonl(tmp_path / "a.jsonl", ROWS), plugins)
    parquet = load(write_parquet(tmp_path / "a.parquet", ROWS), plugins)
    for other in (jsonl, parquet):
        pd.testing.assert_frame_equal(other.respondents, csv.respondents)
        pd.testing.assert_frame_equal(other.responses, csv.responses)
    assert csv.respondents.loc["s1", "household"] == ("My spouse", "My children")


def test_missing_column(tmp_path, plugins):
    columns = [c for c in COLUMNS if c != "age"]
    rows = [[v for c, v in zip(COLUMNS, r, strict=True) if c != "age"] for r in ROWS]
    assert "missing columns: age" in problems(tmp_path, plugins, rows, columns)


def test_unknown_extra_column(tmp_path, plugins):
    rows = [[*r, "x"] for r in ROWS]
    message = problems(tmp_path, plugins, rows, [*COLUMNS, "agee"])
    assert "unknown columns: agee" in message


def test_unknown_demographic_option(tmp_path, plugins):
    message = problems(tmp_path, plugins, changed(2, "age", "17"))
    assert "row 3, column age: unknown option '17'" in message


def test_unknown_multi_select_option(tmp_path, plugins):
    message = problems(tmp_path, plugins, changed(0, "household", ["My spouse", "My dog"]))
    assert "row 1, column household: unknown option(s) ['My dog']" in message


def test_exclusive_option_cannot_be_combined(tmp_path, plugins):
    message = problems(tmp_path, plugins, changed(3, "household", ["I live alone", "My spouse"]))
    assert "row 4, column household" in message
    assert "combines an exclusive option" in message


@pytest.mark.parametrize("value", ["101", "-1", "fifty", "50.5", ""])
def test_invalid_answers(tmp_path, plugins, value):
    message = problems(tmp_path, plugins, changed(2, "answer", value))
    assert "row 3, column answer" in message
    if value:
        assert f"{value!r} is not a valid answer to rating (an integer from 0 to 100)" in message


def test_unknown_categorical_label(tmp_path, plugins):
    message = problems(tmp_path, plugins, changed(4, "answer", "purple"))
    assert "row 5, column answer: 'purple' is not a valid answer to colour" in message


def test_duplicate_row(tmp_path, plugins):
    message = problems(tmp_path, plugins, [*ROWS, ROWS[1]])
    assert "row 6: duplicates row 2" in message


def test_demographics_that_differ_within_a_subject(tmp_path, plugins):
    message = problems(tmp_path, plugins, changed(1, "age", "36-45"))
    assert "row 2: subject s1 has demographics that differ from row 1 in column(s) age" in message


def test_unknown_question(tmp_path, plugins):
    message = problems(tmp_path, plugins, changed(2, "question", "ratng"))
    assert "row 3: unknown question 'ratng'" in message


def test_missing_context_for_a_question_that_needs_it(tmp_path, plugins):
    message = problems(tmp_path, plugins, changed(1, "intervention", None))
    assert "row 2, column intervention: empty, but question after needs it" in message


def test_all_problems_reported_at_once_up_to_a_limit(tmp_path, plugins):
    rows = [["s9", "99", ["My spouse"], "rating", None, i, 50] for i in range(13)]
    message = problems(tmp_path, plugins, ROWS + rows)
    assert message.count("unknown option '99'") == 10
    assert "... and 3 more problems" in message
    assert "row 6, column age" in message  # the first bad row, after five good ones


def test_jsonl_syntax_error_names_file_and_line(tmp_path, plugins):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"subject_id": "s1"}\n{"subject_id": \n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl: line 2: not valid JSON"):
        read_table(path, plugins.data_formats)


def test_unknown_suffix_and_missing_file(tmp_path, plugins):
    path = tmp_path / "answers.xlsx"
    path.write_text("x", encoding="utf-8")
    with pytest.raises(PluginError, match=r"answers\.xlsx.*unknown data_format 'xlsx'"):
        read_table(path, plugins.data_formats)
    with pytest.raises(DataError, match="no such file"):
        read_table(tmp_path / "nope.csv", plugins.data_formats)


def test_numbers_written_by_pandas_as_floats_are_the_same_keys(tmp_path, plugins):
    # pandas writes 3 as "3.0" in a column that also has empty cells (intervention, seq)
    header = ",".join(COLUMNS)
    plain = tmp_path / "plain.csv"
    plain.write_text(
        f"{header}\ns1,18-25,My spouse,rating,,0,50\ns1,18-25,My spouse,after,3,1,70\n",
        encoding="utf-8",
    )
    floats = tmp_path / "floats.csv"
    floats.write_text(
        f"{header}\ns1,18-25,My spouse,rating,,0.0,50\ns1,18-25,My spouse,after,3.0,1.0,70\n",
        encoding="utf-8",
    )
    a, b = load(plain, plugins), load(floats, plugins)
    pd.testing.assert_frame_equal(a.responses, b.responses)
    assert list(b.responses["intervention"]) == ["", "3"]
    assert list(b.responses["seq"]) == [0, 1]


def test_seq_must_be_a_whole_number(tmp_path, plugins):
    message = problems(tmp_path, plugins, changed(1, "seq", "first"))
    assert "row 2, column seq: 'first' is not a whole number" in message
