"""Survey data: respondents with demographics, and their answers in long format.

The long format has one row per answer with the columns ``subject_id``, ``question``, ``answer``,
one column per demographic field of the survey (repeated on each of a subject's rows), the
questions' context columns (e.g. ``intervention``), and optionally ``seq`` (order of a subject's
answers). A multi-select field holds its labels joined by ``|`` in CSV, or a list in JSONL and
Parquet. Readers for each file format are plugins (``register_data_formats``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from surveysim_core.answers import AnswerType
from surveysim_core.conditions import contradictions
from surveysim_core.errors import ConditionError, DataError
from surveysim_core.survey import SurveySpec
from surveysim_core.weights import WEIGHT_COLUMN, parse_weight

MULTI_SEPARATOR = "|"
MAX_REPORTED = 10


@dataclass
class SurveyData:
    """Validated survey data.

    ``respondents``: one row per subject, indexed by ``subject_id`` (str), one column per
    demographic field; multi-select values are tuples of labels.
    ``responses``: one row per answer: ``subject_id``, ``question``, context columns, ``seq``,
    ``answer`` (the answer type's numeric code).
    """

    respondents: pd.DataFrame
    responses: pd.DataFrame
    source: str

    def subset(self, subject_ids: Any) -> SurveyData:
        ids = pd.Index(subject_ids)
        return SurveyData(
            self.respondents.loc[self.respondents.index.intersection(ids, sort=False)],
            self.responses[self.responses["subject_id"].isin(ids)].reset_index(drop=True),
            self.source,
        )


class _Problems:
    def __init__(self, source: str):
        self.source = source
        self.items: list[str] = []
        self.count = 0

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.items) < MAX_REPORTED:
            self.items.append(f"{self.source}: {message}")

    @staticmethod
    def joined(source: str, messages: list[str]) -> str:
        """Messages as one error text: the first MAX_REPORTED, then how many more."""
        head = [f"{source}: {m}" for m in messages[:MAX_REPORTED]]
        more = len(messages) - len(head)
        return "\n".join(head + ([f"... and {more} more problems"] if more else []))

    def raise_if_any(self) -> None:
        if self.count:
            more = self.count - len(self.items)
            tail = [f"... and {more} more problems"] if more else []
            raise DataError("\n".join(self.items + tail))


def read_table(path: str | Path, readers: Any) -> pd.DataFrame:
    """Read a long-format file with the reader registered for its suffix."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower().lstrip(".")
    reader = readers.get(suffix, where=f"{path} (file suffix)")
    try:
        return reader(path)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: could not be read as {suffix}: {exc}") from exc


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and np.isnan(value):
        return True
    return value is pd.NA or (isinstance(value, str) and value.strip() == "")


def _multi_labels(value: Any) -> tuple[str, ...]:
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(str(v) for v in value)
    return tuple(part.strip() for part in str(value).split(MULTI_SEPARATOR) if part.strip())


_WHOLE_NUMBER_TEXT = re.compile(r"-?\d+\.0+")


def _context_key(value: Any) -> str:
    """Context values (e.g. an intervention id) as canonical strings: 7, 7.0 and '7' agree."""
    if _is_missing(value):
        return ""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    text = str(value).strip()
    # '7.0' is what pandas writes to CSV for 7 in a column with empty cells (a float column)
    return text.split(".")[0] if _WHOLE_NUMBER_TEXT.fullmatch(text) else text


def validate_long(
    table: pd.DataFrame,
    spec: SurveySpec,
    answer_types: dict[str, AnswerType],
    source: str,
    weight: str | None = None,
) -> SurveyData:
    """Check a long-format table against a survey and return :class:`SurveyData`.

    Rows of survey questions missing from ``answer_types`` (left out of the run) are skipped.
    ``weight`` (default: the survey's ``weight``) names the column of survey weights: a positive
    number per row, the same on every row of a subject, kept as ``responses["weight"]``.

    Raises :class:`DataError` naming the file, row (1-based data row) and column of every
    problem: missing columns, unknown questions or options, answers out of range or not numeric,
    inconsistent demographics within a subject, duplicate rows.
    """
    problems = _Problems(source)
    fields = spec.demographics
    questions = {q.id: q for q in spec.questions}
    present_questions = set(table["question"].astype(str)) if "question" in table else set()
    context_cols = [c for q in spec.questions if q.id in present_questions for c in q.context]
    weight = weight or spec.weight
    required = ["subject_id", "question", "answer", *fields, *dict.fromkeys(context_cols)]
    required += [weight] if weight else []
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise DataError(f"{source}: missing columns: {', '.join(missing)}")
    known = set(required) | {"seq"} | set(spec.context_columns)
    unknown = [c for c in table.columns if c not in known]
    if unknown:
        raise DataError(
            f"{source}: unknown columns: {', '.join(map(str, unknown))} (not a demographic"
            f" field, question context, or one of subject_id, question, seq, answer)"
        )

    records = table.to_dict("records")
    respondents: dict[str, dict[str, Any]] = {}
    first_row: dict[str, int] = {}
    rows = []
    row_numbers: list[int] = []  # the file row of each entry of rows
    weights: dict[str, tuple[float, int]] = {}  # subject -> (weight, first row)
    seen: dict[tuple, int] = {}
    id_spelling: dict[str, tuple[str, int]] = {}
    for i, rec in enumerate(records, start=1):
        if _is_missing(rec["subject_id"]):
            problems.add(f"row {i}: subject_id is empty")
            continue
        sid = _context_key(rec["subject_id"])
        written = str(rec["subject_id"]).strip()
        if sid in id_spelling and id_spelling[sid][0] != written:
            # '1' and '1.0' (or ' 7' and '7') would silently become one person
            other, other_row = id_spelling[sid]
            problems.add(
                f"row {i}, column subject_id: {written!r} and {other!r} (row {other_row}) are the"
                " same id written two ways; write each id one way"
            )
            continue
        id_spelling.setdefault(sid, (written, i))
        qid = str(rec["question"]).strip()
        if qid not in questions:
            problems.add(f"row {i}: unknown question {qid!r}; known: {', '.join(questions)}")
            continue
        if qid not in answer_types:  # a survey question this run leaves out (``questions:``)
            continue
        demo: dict[str, Any] = {}
        for name, fld in fields.items():
            value = rec[name]
            if _is_missing(value):
                problems.add(f"row {i}, column {name}: empty")
                continue
            if fld.multi:
                labels = _multi_labels(value)
                bad = [lab for lab in labels if lab not in fld.options]
                if bad or not labels:
                    problems.add(f"row {i}, column {name}: unknown option(s) {bad or [value]!r}")
                    continue
                if len(labels) > 1 and any(lab in fld.exclusive for lab in labels):
                    problems.add(f"row {i}, column {name}: {value!r} combines an exclusive option")
                    continue
                order = {opt: k for k, opt in enumerate(fld.options)}
                demo[name] = tuple(sorted(set(labels), key=order.__getitem__))
            else:
                label = _context_key(value)
                if label not in fld.options:
                    problems.add(
                        f"row {i}, column {name}: unknown option {value!r}"
                        f" (allowed: {', '.join(fld.options[:8])}{', ...' if len(fld.options) > 8 else ''})"
                    )
                    continue
                demo[name] = label
        if sid in respondents:
            prev = respondents[sid]
            diff = [k for k in demo if k in prev and prev[k] != demo[k]]
            if diff:
                problems.add(
                    f"row {i}: subject {sid} has demographics that differ from row"
                    f" {first_row[sid]} in column(s) {', '.join(diff)}"
                )
        else:
            respondents[sid] = demo
            first_row[sid] = i
        answer_type = answer_types[qid]
        raw = rec["answer"]
        code = None if _is_missing(raw) else answer_type.to_code(raw)
        if code is None:
            problems.add(
                f"row {i}, column answer: {raw!r} is not a valid answer to {qid}"
                f" ({answer_type.describe()})"
            )
            continue
        context = {c: _context_key(rec.get(c)) for c in questions[qid].context}
        for c, v in context.items():
            if v == "":
                problems.add(f"row {i}, column {c}: empty, but question {qid} needs it")
            elif spec.context_values.get(c) and v not in spec.context_values[c]:
                # an unknown id would otherwise become the prompt text itself
                allowed = list(spec.context_values[c])
                problems.add(
                    f"row {i}, column {c}: {v!r} is not one of the survey's {c} values"
                    f" ({', '.join(allowed[:8])}{', ...' if len(allowed) > 8 else ''})"
                )
        raw_seq = _context_key(rec.get("seq"))
        if raw_seq and not raw_seq.lstrip("-").isdigit():
            problems.add(f"row {i}, column seq: {rec.get('seq')!r} is not a whole number")
            continue
        seq = int(raw_seq) if raw_seq else 0
        key = (sid, qid, seq, *sorted(context.items()))
        if key in seen:
            problems.add(
                f"row {i}: duplicates row {seen[key]} (same subject, question, context, seq)"
            )
            continue
        seen[key] = i
        row = {"subject_id": sid, "question": qid, **context, "seq": seq, "answer": code}
        if weight:
            row[WEIGHT_COLUMN] = w = parse_weight(rec[weight])
            if w is None:
                problems.add(f"row {i}, column {weight}: {rec[weight]!r} is not a positive number")
                continue
            if weights.setdefault(sid, (w, i))[0] != w:
                problems.add(
                    f"row {i}, column {weight}: subject {sid} has weight {w:g} here but"
                    f" {weights[sid][0]:g} in row {weights[sid][1]} (one weight per respondent)"
                )
                continue
        rows.append(row)
        row_numbers.append(i)
    problems.raise_if_any()
    contradicted = contradictions(spec, respondents, rows, row_numbers, answer_types)
    if contradicted:
        raise ConditionError(_Problems.joined(source, contradicted))
    if not rows:
        raise DataError(f"{source}: no answers")

    resp = pd.DataFrame.from_dict(respondents, orient="index")
    resp.index.name = "subject_id"
    resp = resp[list(fields)]
    responses = pd.DataFrame(rows)
    for c in spec.context_columns:
        if c not in responses:
            responses[c] = ""
        responses[c] = responses[c].fillna("").astype(str)
    responses["answer"] = responses["answer"].astype(float)
    return SurveyData(resp, responses, source)
