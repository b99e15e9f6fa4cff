"""Configuration of ``surveysim simulate`` and ``surveysim pilot``: pydantic models, extra="forbid"."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from surveysim_core.config import DataSection, PluginRef, format_validation_error, read_yaml
from surveysim_core.errors import ConfigError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SystemSection(Strict):
    """Which language-model system answers."""

    run: str | None = Field(
        None,
        description="A finished run directory: the system called name answers, with its"
        " backend options and adapter as the run trained them.",
    )
    name: str = Field(
        "fine_tuned",
        description="Which of the run's language-model systems answers, by the name its"
        " metrics.csv and settings.csv give it: fine_tuned, zero_shot, or in a sweep run e.g."
        " fine_tuned@lora_r=4. Without a run: zero_shot.",
    )
    kind: Literal["fine_tuned", "zero_shot"] | None = Field(
        None, description="Older spelling of name (fine_tuned or zero_shot); give one of them."
    )
    backend: PluginRef | None = Field(
        None, description="Backend for zero-shot answers without a run (e.g. name: hf)."
    )
    temperature: float = Field(
        1.0, ge=0, description="Temperature of the exact answer distribution."
    )

    @model_validator(mode="after")
    def _one_source(self) -> SystemSection:
        if self.kind is not None:
            if "name" in self.model_fields_set and self.name != self.kind:
                raise ValueError("give name or kind (its older spelling), not both")
            self.name = self.kind
        if self.run is None and self.backend is None:
            raise ValueError("give run (a finished run directory) or backend (zero-shot)")
        if self.run is not None and self.backend is not None:
            raise ValueError("give run or backend, not both (a run names its own backend)")
        if self.run is None and self.name != "zero_shot":
            raise ValueError(
                f"system {self.name!r} needs run: a finished run directory that has it"
                " (without a run, name: zero_shot with a backend)"
            )
        return self


class PopulationSection(Strict):
    """Where the personas come from."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    source: Literal["respondents", "table", "margins", "cross_table", "sampler"] = Field(
        "respondents",
        description="The survey's own respondents; a table of respondents (path); the reference"
        " raked to margins; a cross-table of joint shares (path); or a registered sampler.",
    )
    sampler: PluginRef | None = Field(
        None,
        description="A registered population sampler (test_split, marginals, file, ...) with its"
        " options; it draws from the survey's respondents and the run's splits.csv.",
    )
    path: str | None = Field(
        None, description="CSV: respondents (table) or cells with a share column (cross_table)."
    )
    margins: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="Target share of each option, per field (margins)."
    )
    reference: str | None = Field(
        None,
        description="CSV of respondents to rake or post-stratify; default: the survey's own.",
    )
    n: int | None = Field(
        None, ge=1, description="Draw this many personas in proportion to weight (seeded)."
    )
    seed: int = Field(0, description="Seed of the persona draw.")

    @model_validator(mode="after")
    def _needs(self) -> PopulationSection:
        if self.source in ("table", "cross_table") and not self.path:
            raise ValueError(f"source {self.source!r} needs population.path")
        if self.source == "margins" and not self.margins:
            raise ValueError("source 'margins' needs population.margins")
        if self.source != "margins" and self.margins:
            raise ValueError("margins are only used with source 'margins'")
        if (self.source == "sampler") != (self.sampler is not None):
            raise ValueError("source 'sampler' and population.sampler go together")
        return self


class Statement(Strict):
    """A new intervention statement, never seen in training."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    id: str = Field(description="Short id, unique among the statements.")
    text: str = Field(min_length=1, description="The statement, as shown to the persona.")
    group: str | None = Field(None, description="Optional group label (e.g. cost).")


class StatementsSection(Strict):
    """Intervention statements, asked through a survey question that shows one context value."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    question: str = Field(description="Survey question the statements are asked with.")
    survey: list[str] | Literal["all"] = Field(
        default_factory=list, description="The survey's own statements by id, or 'all'."
    )
    survey_groups: dict[str, list[str]] = Field(
        default_factory=dict, description="Group label of the survey's statements: group -> ids."
    )
    new: list[Statement] = Field(default_factory=list, description="New statements, inline.")
    file: str | None = Field(
        None, description="CSV or YAML of new statements (id, text, optional group)."
    )


class SimulateConfig(Strict):
    """``surveysim simulate``: answer survey items and statements for a virtual population."""

    survey: str = Field(description="Registered survey name, e.g. evshift.")
    survey_options: dict[str, Any] = Field(
        default_factory=dict, description="Options for the survey plugin, if it takes any."
    )
    data: DataSection | None = Field(
        None,
        description="The survey's respondents (the default population and reference); default:"
        " the run's data, else the survey's synthetic population.",
    )
    system: SystemSection
    population: PopulationSection = Field(default_factory=PopulationSection)
    questions: list[str] = Field(
        default_factory=list, description="Survey items asked as they are (no statement)."
    )
    statements: StatementsSection | None = Field(None, description="Intervention statements.")
    segments: list[str] = Field(
        default_factory=list, description="Single-choice demographic fields to break results by."
    )
    bootstrap: int = Field(200, ge=2, description="Bootstrap draws over personas for the CIs.")
    seed: int = Field(0, description="Seed of the bootstrap.")
    output: str = Field(description="Directory to create for the results (must not exist).")

    @model_validator(mode="after")
    def _some_items(self) -> SimulateConfig:
        if not self.questions and self.statements is None:
            raise ValueError("nothing to answer: give questions and/or statements")
        return self


class PilotConfig(SimulateConfig):
    """``surveysim pilot``: the shift each statement causes against a pre-intervention answer."""

    pre_question: str = Field(
        description="Survey question answered before any statement (the pre-intervention answer)."
    )

    @model_validator(mode="after")
    def _statements(self) -> PilotConfig:
        if self.statements is None:
            raise ValueError("pilot needs statements")
        return self


def load(path: str | Path, model: type[SimulateConfig]) -> SimulateConfig:
    """Read and validate a simulate or pilot configuration; errors name the file and key."""
    data = read_yaml(path)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path))) from None
