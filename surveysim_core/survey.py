"""Surveys as data: a questionnaire's questions, answer types, demographic fields and templates.

A survey plugin registers a :class:`Survey`, usually built from a YAML file with
:meth:`Survey.from_yaml`. Python code sits beside it only for what data cannot express: a loader
for a special file format, or a synthetic population generator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from surveysim_core.conditions import check_condition_names
from surveysim_core.config import format_validation_error, read_yaml
from surveysim_core.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DemographicField(_Strict):
    options: list[str] = Field(description="Allowed values, verbatim.")
    multi: bool = Field(False, description="Several options can be selected at once.")
    label: str | None = Field(None, description="Name shown in the persona prompt.")
    exclusive: list[str] = Field(
        default_factory=list, description="Options that cannot be combined with others (multi)."
    )


class QuestionSpec(_Strict):
    id: str
    text: str = Field("", description="Question wording, available to templates.")
    answer: dict[str, Any] = Field(description="Answer type name under 'type', plus its options.")
    template: str = Field("question", description="Name of the survey prompt template.")
    context: list[str] = Field(
        default_factory=list, description="Data columns that feed the template (e.g. intervention)."
    )
    parsers: list[str] | None = Field(None, description="Parser chain; default: the survey's.")
    when: str | None = Field(
        None, description="Condition: whom the question is asked (surveysim_core.conditions)."
    )
    option_order: Literal["fixed", "reversed", "shuffled", "forward_reversed"] | None = Field(
        None, description="Order of this question's options; default: decoding.option_order."
    )


class SurveySpec(_Strict):
    name: str
    description: str = ""
    demographics: dict[str, DemographicField]
    questions: list[QuestionSpec]
    templates: dict[str, str] = Field(
        default_factory=dict, description="Templates overriding registered ones, by name."
    )
    context_values: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="Text shown for coded context values (e.g. statements)."
    )
    parsers: list[str] = Field(default_factory=lambda: ["first_integer"])
    metrics: list[str] | None = None
    segments: list[str] = Field(default_factory=list, description="Default metric segments.")
    synthetic_subjects: int | None = Field(None, description="Default synthetic population size.")
    weight: str | None = Field(
        None, description="Long-format column of each respondent's survey weight, if any."
    )

    @model_validator(mode="after")
    def _unique(self) -> SurveySpec:
        ids = [q.id for q in self.questions]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"question ids repeated: {', '.join(dupes)}")
        for q in self.questions:
            for ctx in q.context:
                if ctx in self.demographics:
                    raise ValueError(f"question {q.id}: context {ctx!r} is a demographic field")
        check_condition_names(self)
        return self

    def question(self, qid: str) -> QuestionSpec:
        for q in self.questions:
            if q.id == qid:
                return q
        raise ConfigError(f"survey {self.name}: no question {qid!r}")

    @property
    def context_columns(self) -> list[str]:
        seen: list[str] = []
        for q in self.questions:
            seen += [c for c in q.context if c not in seen]
        return seen


@dataclass
class Survey:
    """A registered questionnaire: its spec, and optional loader and synthesiser.

    ``load(path) -> DataFrame`` reads a special file format into the long format (default: the
    core's CSV/Parquet/JSONL readers). ``synthesize(out_dir, subjects, seed) -> Path`` writes a
    synthetic long-format file and returns its path. A survey that takes options from the run
    configuration's ``survey_options`` declares their pydantic model as ``Options`` and a
    ``configure(options) -> Survey`` that returns the survey so configured.
    """

    spec: SurveySpec
    source: str = "<memory>"
    load: Callable[[Path], pd.DataFrame] | None = None
    synthesize: Callable[[Path, int | None, int], Path] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    Options: type | None = None
    configure: Callable[[Any], Survey] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @classmethod
    def from_yaml(cls, path: str | Path, **kwargs: Any) -> Survey:
        data = read_yaml(path)
        base = Path(path).parent
        # a template given as a file name is read from beside the YAML
        for name, value in list(data.get("templates", {}).items()):
            if isinstance(value, str) and value.endswith(".j2") and "\n" not in value:
                try:
                    data["templates"][name] = (base / value).read_text(encoding="utf-8")
                except OSError as exc:
                    raise ConfigError(
                        f"{path}: templates.{name}: cannot read {base / value}: {exc.strerror}"
                    ) from None
        try:
            spec = SurveySpec.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, str(path))) from None
        return cls(spec=spec, source=str(path), **kwargs)
