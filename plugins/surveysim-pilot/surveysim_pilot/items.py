"""Items a population answers: survey questions as they are, and intervention statements (the
survey's own or new ones) shown through a question's context field."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from surveysim_core.errors import ConfigError, DataError
from surveysim_core.survey import SurveySpec
from surveysim_pilot.config import Statement, StatementsSection


@dataclass(frozen=True)
class Item:
    """One thing asked: ``question``, and for a statement its context field, id, text and group."""

    id: str
    question: str
    field: str | None = None
    statement: str | None = None
    text: str | None = None
    group: str | None = None
    new: bool = False


def read_statement_file(path: str | Path) -> list[Statement]:
    """New statements from CSV (columns id, text, group) or YAML (a list of mappings)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.suffix.lower() in (".yaml", ".yml"):
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or []
        if isinstance(raw, dict) and "statements" in raw:
            raw = raw["statements"]
        if not isinstance(raw, list):
            raise DataError(f"{path}: expected a list of statements (id, text, group)")
        records = raw
    else:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        missing = [c for c in ("id", "text") if c not in table.columns]
        if missing:
            raise DataError(f"{path}: missing column(s): {', '.join(missing)}")
        unknown = [c for c in table.columns if c not in ("id", "text", "group")]
        if unknown:
            raise DataError(f"{path}: unknown column(s): {', '.join(unknown)} (id, text, group)")
        records = [
            {k: (v if v != "" else None) for k, v in r.items()} for r in table.to_dict("records")
        ]
    out = []
    for row, rec in enumerate(records, start=1):
        try:
            out.append(Statement.model_validate(rec))
        except Exception as exc:
            raise DataError(f"{path}: statement {row}: {exc}") from None
    ids = [s.id for s in out]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise DataError(f"{path}: duplicate statement id(s): {', '.join(dupes)}")
    return out


def build_items(
    spec: SurveySpec,
    questions: list[str],
    statements: StatementsSection | None,
    source: str,
) -> list[Item]:
    """The items to answer, checked against the survey; errors name ``source`` and the key."""
    known = {q.id: q for q in spec.questions}
    items: list[Item] = []
    for qid in questions:
        q = known.get(qid)
        if q is None:
            raise ConfigError(f"{source}: questions: survey {spec.name} has no question {qid!r}")
        if q.context:
            raise ConfigError(
                f"{source}: questions: {qid} shows a {q.context[0]}; ask it through statements"
            )
        items.append(Item(qid, qid))
    if statements is None:
        return items
    q = known.get(statements.question)
    if q is None:
        raise ConfigError(
            f"{source}: statements.question: survey {spec.name} has no question"
            f" {statements.question!r}"
        )
    if len(q.context) != 1:
        raise ConfigError(
            f"{source}: statements.question: {q.id} must show exactly one context field"
            f" (it has {len(q.context)})"
        )
    field = q.context[0]
    existing = spec.context_values.get(field, {})
    wanted = list(existing) if statements.survey == "all" else list(statements.survey)
    unknown = [s for s in wanted if s not in existing]
    if unknown:
        raise ConfigError(
            f"{source}: statements.survey: survey {spec.name} has no {field} {unknown}"
        )
    group_of: dict[str, str] = {}
    for group, ids in statements.survey_groups.items():
        for sid in ids:
            if sid not in existing:
                raise ConfigError(
                    f"{source}: statements.survey_groups.{group}: survey {spec.name} has no"
                    f" {field} {sid!r}"
                )
            group_of[sid] = group
    seen: dict[str, str] = {}
    for sid in wanted:
        items.append(Item(f"{field}={sid}", q.id, field, sid, existing[sid], group_of.get(sid)))
        seen[sid] = "statements.survey"
    new = [(s, "statements.new") for s in statements.new]
    if statements.file:
        new += [(s, statements.file) for s in read_statement_file(statements.file)]
    for s, where in new:
        if s.id in existing:
            raise ConfigError(
                f"{source}: {where}: statement id {s.id!r} is already the survey's {field}"
                f" {s.id}; give new statements new ids"
            )
        if s.id in seen:
            raise ConfigError(
                f"{source}: {where}: statement id {s.id!r} given twice (also in {seen[s.id]})"
            )
        seen[s.id] = where
        items.append(Item(f"{field}={s.id}", q.id, field, s.id, s.text, s.group, new=True))
    if len(items) == len(questions):
        raise ConfigError(f"{source}: statements: no statements given (survey, new or file)")
    return items
