"""Question conditions (``when:``): whom a question is asked, as an expression over the
respondent's demographic fields and answers to earlier questions.

Expressions are Jinja expressions compiled in Jinja's sandbox (no Python ``eval``), e.g.
``vote == 'Clinton' and age in ['18-29', '30-39']`` or ``satisfaction >= 4``. A demographic field
is its option label (a list of labels for a multi-select field); an earlier question is the
respondent's answer, as its option label for a categorical question and as a number for an
integer one, or ``none`` where the respondent has no answer to it.

A respondent whose data hold an answer to a question whose condition is false for them
contradicts the survey: :class:`~surveysim_core.errors.ConditionError`. Questions not asked have
no rows in the data, so they are neither trained nor scored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment

_ENV = SandboxedEnvironment(undefined=StrictUndefined)


@dataclass(frozen=True)
class Condition:
    """A compiled ``when:`` expression and the names it reads."""

    expression: str
    names: frozenset[str]

    def holds(self, values: Mapping[str, Any]) -> bool:
        """Whether the condition is true for these values (every name must be given)."""
        return bool(_compiled(self.expression)(**{n: values.get(n) for n in self.names}))


@lru_cache(maxsize=256)
def _compiled(expression: str) -> Any:
    return _ENV.compile_expression(expression, undefined_to_none=False)


def compile_condition(expression: str) -> Condition:
    """Parse a ``when:`` expression; raises ``ValueError`` with Jinja's message if it is not one."""
    try:
        names = meta.find_undeclared_variables(_ENV.parse("{{ (" + expression + ") }}"))
        _compiled(expression)
    except TemplateSyntaxError as exc:
        raise ValueError(f"when: {expression!r} is not a valid expression: {exc.message}") from None
    return Condition(expression, frozenset(names))


def check_condition_names(spec: Any) -> None:
    """Each condition reads only demographic fields, context columns and earlier questions."""
    earlier: list[str] = []
    for q in spec.questions:
        if q.when is not None:
            condition = compile_condition(q.when)
            allowed = set(spec.demographics) | set(q.context) | set(earlier)
            unknown = sorted(condition.names - allowed)
            if unknown:
                raise ValueError(
                    f"question {q.id}: when: {q.when!r} reads {', '.join(unknown)}, which is not a"
                    f" demographic field, context column or earlier question"
                )
        earlier.append(q.id)


def answer_value(answer_type: Any, code: float) -> Any:
    """An answer as conditions see it: the option label, or a number for a numeric scale."""
    import numpy as np

    label = answer_type.labels[int(answer_type.index_of(np.array([code], dtype=float))[0])]
    try:
        return int(label)
    except ValueError:
        return label


def contradictions(
    spec: Any,
    respondents: Mapping[str, Mapping[str, Any]],
    rows: list[dict[str, Any]],
    row_numbers: list[int],
    answer_types: Mapping[str, Any],
) -> list[str]:
    """Rows that answer a question whose condition is false for their respondent.

    A condition that reads a question this run leaves out (not in ``answer_types``) cannot be
    evaluated and is not checked. Where a respondent answered a question several times (one
    row per context), a condition sees the answer with the highest ``seq``.
    """
    conditions = {
        q.id: compile_condition(q.when)
        for q in spec.questions
        if q.when is not None and q.id in answer_types
    }
    if not conditions:
        return []
    answers: dict[str, dict[str, tuple[int, Any]]] = {}
    for row in rows:
        held = answers.setdefault(row["subject_id"], {})
        previous = held.get(row["question"])
        if previous is None or row["seq"] >= previous[0]:
            value = answer_value(answer_types[row["question"]], row["answer"])
            held[row["question"]] = (row["seq"], value)
    questions = {q.id for q in spec.questions}
    problems = []
    for row, number in zip(rows, row_numbers, strict=True):
        condition = conditions.get(row["question"])
        if condition is None:
            continue
        if any(n in questions and n not in answer_types for n in condition.names):
            continue
        sid = row["subject_id"]
        # a multi-select field's labels as a list, so that `'x' in field` reads naturally
        values = {n: list(v) if isinstance(v, tuple) else v for n, v in respondents[sid].items()}
        values.update({q: v for q, (_, v) in answers.get(sid, {}).items()})
        values.update({c: row[c] for c in condition.names if c in row})
        try:
            holds = condition.holds(values)
        except Exception as exc:  # e.g. comparing a missing answer (none) with a number
            problems.append(
                f"row {number}: the condition of {row['question']} (when: {condition.expression})"
                f" cannot be evaluated for subject {sid}: {type(exc).__name__}: {exc}"
            )
            continue
        if not holds:
            shown = ", ".join(f"{n}={values.get(n)!r}" for n in sorted(condition.names))
            problems.append(
                f"row {number}: subject {sid} answered {row['question']}, but its condition"
                f" (when: {condition.expression}) is false for them ({shown})"
            )
    return problems
