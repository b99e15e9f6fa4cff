"""The statsmodels ANES 1996 sample, its codes decoded into the survey's words, in long format.

``statsmodels.datasets.anes96`` holds one row per respondent with numeric codes (documented in
its ``NOTE``). This module maps each code to an option of the survey's demographic fields
(``survey.yaml``) and each answer column to a question, and writes surveysim's long format:
one row per respondent-question with ``subject_id`` (the row index of the statsmodels frame),
the five demographic fields in words, ``question`` and ``answer`` (the scale point, or the
candidate's name for the vote).

The words live in ``survey.yaml`` only; here are the rules that pick one by position:

* coded fields: code ``c`` is option ``c - first`` (``educ`` 1 is the first education option);
* bracketed fields: value ``v`` is option ``i`` where ``lower[i] <= v < lower[i + 1]``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from surveysim_core.errors import DataError
from surveysim_core.survey import DemographicField, SurveySpec

SOURCE = "statsmodels.datasets.anes96"

#: demographic field -> (statsmodels column, code of the field's first option)
CODED_FIELDS: dict[str, tuple[str, int]] = {
    "education": ("educ", 1),
    "income": ("income", 1),
    "tv_news": ("TVnews", 0),
}

#: demographic field -> (statsmodels column, lower bound of each option's bracket)
BRACKETED_FIELDS: dict[str, tuple[str, tuple[float, ...]]] = {
    "age": ("age", (18, 30, 40, 50, 60, 70, 80)),
    # popul is in thousands of people: 0 means fewer than 1,000
    "place": ("popul", (0, 1, 10, 50, 250, 1000)),
}

#: question id -> statsmodels column holding its answer
QUESTION_COLUMNS: dict[str, str] = {
    "self_placement": "selfLR",
    "party_id": "PID",
    "clinton_placement": "ClinLR",
    "dole_placement": "DoleLR",
    "vote": "vote",
}


def load_raw() -> pd.DataFrame:
    """The statsmodels frame (944 rows, numeric codes); it ships with statsmodels, no network."""
    from statsmodels.datasets import anes96  # heavy (scipy): only when data is needed

    return anes96.load_pandas().data


def check_codebook(spec: SurveySpec) -> None:
    """Raise ``ValueError`` if the rules above do not fit the survey's fields and questions."""
    mapped = set(CODED_FIELDS) | set(BRACKETED_FIELDS)
    if mapped != set(spec.demographics):
        raise ValueError(
            f"codebook maps fields {sorted(mapped)}, survey has {sorted(spec.demographics)}"
        )
    if set(QUESTION_COLUMNS) != {q.id for q in spec.questions}:
        raise ValueError("codebook questions differ from the survey's questions")
    for name, (_, lower) in BRACKETED_FIELDS.items():
        if len(lower) != len(spec.demographics[name].options):
            raise ValueError(f"{name}: {len(lower)} brackets for a field with other options")
        if list(lower) != sorted(lower):
            raise ValueError(f"{name}: bracket bounds must increase")


def _decode_coded(values: pd.Series, first: int, field: DemographicField, name: str) -> pd.Series:
    codes = values.to_numpy(float)
    index = codes - first
    bad = ~np.isfinite(index) | (index % 1 != 0) | (index < 0) | (index >= len(field.options))
    if bad.any():
        rows = list(values.index[bad][:5])
        raise DataError(f"{SOURCE}: {name}: undocumented code(s) at rows {rows}")
    return pd.Series(np.asarray(field.options, dtype=object)[index.astype(int)], values.index)


def _decode_bracketed(
    values: pd.Series, lower: tuple[float, ...], field: DemographicField, name: str
) -> pd.Series:
    numbers = values.to_numpy(float)
    bad = ~np.isfinite(numbers) | (numbers < lower[0])
    if bad.any():
        rows = list(values.index[bad][:5])
        raise DataError(f"{SOURCE}: {name}: value(s) below {lower[0]} at rows {rows}")
    index = np.searchsorted(np.asarray(lower, float), numbers, side="right") - 1
    return pd.Series(np.asarray(field.options, dtype=object)[index], values.index)


def decode_respondents(raw: pd.DataFrame, spec: SurveySpec) -> pd.DataFrame:
    """One row per respondent (index: the statsmodels row index), demographics in words."""
    fields: Mapping[str, DemographicField] = spec.demographics
    out = {}
    for name, field in fields.items():
        if name in CODED_FIELDS:
            column, first = CODED_FIELDS[name]
            out[name] = _decode_coded(raw[column], first, field, column)
        else:
            column, lower = BRACKETED_FIELDS[name]
            out[name] = _decode_bracketed(raw[column], lower, field, column)
    return pd.DataFrame(out, index=raw.index)[list(fields)]


def answers(raw: pd.DataFrame, spec: SurveySpec) -> pd.DataFrame:
    """One column per question: the scale point as an int, or a categorical answer's label."""
    out = {}
    for q in spec.questions:
        column = raw[QUESTION_COLUMNS[q.id]]
        codes = column.to_numpy(float)
        if np.any(~np.isfinite(codes) | (codes % 1 != 0)):
            raise DataError(f"{SOURCE}: {column.name}: answers that are not whole numbers")
        if q.answer.get("type") == "categorical":
            labels = list(q.answer["options"])
            if codes.min() < 0 or codes.max() >= len(labels):
                raise DataError(f"{SOURCE}: {column.name}: codes outside 0..{len(labels) - 1}")
            out[q.id] = pd.Series(np.asarray(labels, dtype=object)[codes.astype(int)], raw.index)
        else:
            out[q.id] = column.astype(int)
    return pd.DataFrame(out, index=raw.index)


def long_table(raw: pd.DataFrame, spec: SurveySpec) -> pd.DataFrame:
    """surveysim's long format: one row per respondent-question, respondents in row order."""
    respondents = decode_respondents(raw, spec)
    wide = answers(raw, spec)
    questions = [q.id for q in spec.questions]
    long = (
        wide.rename_axis("subject_id")
        .reset_index()
        .melt(id_vars="subject_id", value_vars=questions, var_name="question", value_name="answer")
    )
    order = {q: i for i, q in enumerate(questions)}
    long = long.sort_values(
        ["subject_id", "question"], key=lambda s: s.map(order) if s.name == "question" else s
    )
    long = long.join(respondents, on="subject_id")
    return long[["subject_id", *spec.demographics, "question", "answer"]].reset_index(drop=True)
