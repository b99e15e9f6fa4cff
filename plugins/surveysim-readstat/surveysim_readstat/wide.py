"""One row per respondent (a "wide" SPSS, Stata or CSV file) to surveysim's long format.

A mapping file (YAML) says which column holds the respondent id, which columns are the survey's
demographic fields, and which are its questions::

    subject_id: caseid            # default: the row number, 1-based
    weight: WT                    # survey weights, written as the long format's "weight" column
    missing: [-9, -8]             # codes that mean "no answer" in every column
    demographics:
      region: REGION              # long-format column <- wide column (value labels decoded)
    questions:
      trust: Q1                   # answers are the value labels where the column has them
      age_years: {column: AGE, values: codes}   # the numeric codes, for integer questions
      income: {column: INC, missing: [98, 99]}  # codes that mean missing in this column only

A question whose value is missing (a missing-value code of the file, or a code listed under
``missing``) was not answered: it gets no row. Demographic fields are copied as they are; the run
checks them against the survey.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from surveysim_core.config import format_validation_error, read_yaml
from surveysim_core.errors import ConfigError, DataError
from surveysim_readstat.readers import LabelledTable, label_of, plain_value


class ColumnMapping(BaseModel):
    model_config = ConfigDict(extra="forbid")
    column: str = Field(description="Column of the wide file.")
    values: Literal["labels", "codes"] = Field(
        "labels", description="Write value labels (categorical) or numeric codes (integer)."
    )
    missing: list[float] = Field(
        default_factory=list, description="Codes that mean no answer, in this column only."
    )


class WideMapping(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subject_id: str | None = Field(None, description="Respondent id column; default: row number.")
    weight: str | None = Field(None, description="Column of survey weights, if any.")
    missing: list[float] = Field(
        default_factory=list, description="Codes that mean no answer, in every column."
    )
    demographics: dict[str, str | ColumnMapping] = Field(
        default_factory=dict, description="Demographic field <- wide column."
    )
    questions: dict[str, str | ColumnMapping] = Field(
        min_length=1, description="Question id <- wide column."
    )

    def column(self, value: str | ColumnMapping) -> ColumnMapping:
        return ColumnMapping(column=value) if isinstance(value, str) else value


def load_mapping(path: str | Path) -> WideMapping:
    try:
        return WideMapping.model_validate(read_yaml(path))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path))) from None


def wide_to_long(
    table: LabelledTable, mapping: WideMapping, mapping_source: str = "mapping"
) -> pd.DataFrame:
    """The long-format table of a wide one; raises naming the mapping key of a missing column."""
    frame = table.codes
    wanted = [("subject_id", mapping.subject_id)] if mapping.subject_id else []
    wanted += [("weight", mapping.weight)] if mapping.weight else []
    wanted += [
        (f"demographics.{k}", mapping.column(v).column) for k, v in mapping.demographics.items()
    ]
    wanted += [(f"questions.{k}", mapping.column(v).column) for k, v in mapping.questions.items()]
    absent = [f"{key}: {col!r}" for key, col in wanted if col not in frame.columns]
    if absent:
        raise DataError(
            f"{mapping_source}: columns not in {table.source}: {'; '.join(absent)}"
            f" (the file has: {', '.join(map(str, frame.columns[:20]))})"
        )
    shared_missing = set(mapping.missing)

    def value(row: dict[str, Any], spec: ColumnMapping) -> Any:
        code = plain_value(row[spec.column])
        if code is None or (isinstance(code, str) and not code.strip()):
            return None  # CSV readers give "" for an empty cell
        if _number(code) in shared_missing | set(spec.missing):
            return None
        if spec.values == "codes":
            return code
        return label_of(code, table.value_labels.get(spec.column, {}))

    demographics = {k: mapping.column(v) for k, v in mapping.demographics.items()}
    questions = {k: mapping.column(v) for k, v in mapping.questions.items()}
    rows = []
    for number, row in enumerate(frame.to_dict("records"), start=1):
        sid = plain_value(row[mapping.subject_id]) if mapping.subject_id else number
        if sid is None:
            raise DataError(f"{table.source}: row {number}: {mapping.subject_id} is empty")
        demo = {k: value(row, spec) for k, spec in demographics.items()}
        if mapping.weight:  # copied as it is: the run checks it is a positive number
            demo["weight"] = plain_value(row[mapping.weight])
        for seq, (qid, spec) in enumerate(questions.items()):
            answer = value(row, spec)
            if answer is None:
                continue  # not answered: no row
            rows.append({"subject_id": sid, **demo, "question": qid, "seq": seq, "answer": answer})
    weight = ["weight"] if mapping.weight else []
    columns = ["subject_id", *demographics, *weight, "question", "seq", "answer"]
    return pd.DataFrame(rows, columns=columns)


def _number(code: Any) -> float | None:
    """A code as a number, also from text ("-9" in a CSV file); None if it is not one."""
    try:
        return float(code)
    except (TypeError, ValueError):
        return None
