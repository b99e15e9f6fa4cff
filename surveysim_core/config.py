"""The run configuration: pydantic models, YAML loading, ``--set`` overrides and errors that
name the file and the dotted key.

The core validates its own sections; each plugin validates the ``options`` mapping routed to it
with its own ``Options`` model (see :func:`validate_options`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from surveysim_core.errors import ConfigError

#: the largest seed every random generator the toolkit uses accepts (numpy's legacy RandomState)
SEED_MAX = 2**32 - 1


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PluginRef(Strict):
    """A plugin chosen by name, with the options that plugin validates itself."""

    name: str = Field(description="Registered name of the plugin object.")
    options: dict[str, Any] = Field(default_factory=dict, description="Options for that plugin.")


class DataSection(Strict):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    source: Literal["synthetic", "file"] = Field(
        "synthetic", description="Generate the survey's synthetic population, or read a file."
    )
    path: str | None = Field(
        None, description="Long-format file (.csv, .parquet, .jsonl) when source is 'file'."
    )
    subjects: int | None = Field(
        None, ge=10, description="Synthetic population size (default: the survey's own)."
    )
    seed: int = Field(0, ge=0, le=SEED_MAX, description="Seed of the synthetic population.")
    weight: str | None = Field(
        None, description="Column of survey weights in the data file (default: the survey's)."
    )

    @model_validator(mode="after")
    def _path_for_file(self) -> DataSection:
        if self.source == "file" and not self.path:
            raise ValueError("source 'file' needs data.path")
        return self


class SplitSection(Strict):
    train: float = Field(0.8, gt=0, description="Share of subjects for training.")
    val: float = Field(0.1, ge=0, description="Share of subjects for validation.")
    test: float = Field(0.1, gt=0, description="Share of subjects for testing.")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="Seed of the subject-level split.")
    max_train_subjects: int | None = Field(
        None, ge=1, description="Use at most this many training subjects (seeded subsample)."
    )
    max_val_subjects: int | None = Field(None, ge=1, description="Cap on validation subjects.")
    max_test_subjects: int | None = Field(None, ge=1, description="Cap on test subjects.")

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitSection:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must be 1, got {total:g}")
        return self


class BackendSection(PluginRef):
    systems: list[str] | None = Field(
        None,
        description="Which of the backend's system kinds to evaluate (the backend declares"
        " them, e.g. zero_shot, fine_tuned); default: all of them.",
    )
    loss: PluginRef = Field(
        default_factory=lambda: PluginRef(name="cross_entropy"),
        description="Fine-tuning loss, from the loss registry.",
    )

    @model_validator(mode="after")
    def _unique_systems(self) -> BackendSection:
        listed = list(self.systems or [])
        dupes = sorted({s for s in listed if listed.count(s) > 1})
        if dupes:
            raise ValueError(f"systems listed twice: {', '.join(dupes)}")
        return self


class DecodingSection(Strict):
    decoder: str = Field("sample", description="Decoder name: how answers are drawn from a model.")
    temperatures: list[float] = Field(
        default_factory=lambda: [0.0, 1.0], description="Temperatures; 0 means greedy."
    )
    max_new_tokens: int = Field(8, ge=1, description="Most tokens generated per answer.")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="Seed for sampling.")
    options: dict[str, Any] = Field(default_factory=dict, description="Decoder's own options.")
    calibrate: bool = Field(
        True,
        description="With an exact decoder, also score the 'calibrated' readout: the"
        " temperature from calibration_grid with the lowest NLL on the validation split.",
    )
    calibration_grid: list[float] = Field(
        default_factory=lambda: [0.5, 0.7, 0.85, 1.0, 1.15, 1.3, 1.5, 2.0],
        description="Temperatures (> 0) the calibrated readout chooses from.",
    )
    option_order: Literal["fixed", "reversed", "shuffled", "forward_reversed"] = Field(
        "fixed",
        description="Order of categorical options in prompts (surveysim_core.option_order).",
    )

    @model_validator(mode="after")
    def _temperatures(self) -> DecodingSection:
        if not self.temperatures:
            raise ValueError("temperatures must list at least one temperature")
        if not all(math.isfinite(t) for t in self.temperatures):
            raise ValueError("temperatures must be finite numbers (not .nan or .inf)")
        if any(t < 0 for t in self.temperatures):
            raise ValueError("temperatures must be >= 0")
        if any(not t > 0 for t in self.calibration_grid):
            raise ValueError("calibration_grid temperatures must be > 0")
        return self


class EvaluationSection(Strict):
    metrics: list[str] | None = Field(
        None, description="Metric names; default: the survey's list, else every metric."
    )
    segments: list[str] = Field(
        default_factory=list, description="Demographic fields to break metrics down by."
    )
    population: PluginRef = Field(
        default_factory=lambda: PluginRef(name="test_split"),
        description="Sampler of virtual participants' demographics.",
    )
    bootstrap: int = Field(
        200, ge=2, description="Bootstrap draws for confidence intervals and the floors."
    )
    seed: int = Field(0, ge=0, le=SEED_MAX, description="Seed for null models and the bootstrap.")


class OutputSection(Strict):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    dir: str = Field("runs", description="Folder under which each run gets its own directory.")
    predictions_format: Literal["csv", "parquet"] = Field(
        "csv", description="File format of per-respondent predictions."
    )
    cache: bool = Field(
        True,
        description="Reuse adapters and answers computed by earlier runs (and store new ones).",
    )
    cache_dir: str | None = Field(
        None,
        description="Folder of the result cache (default ~/.cache/surveysim; the environment"
        " variable SURVEYSIM_CACHE overrides both).",
    )


class VariantSection(Strict):
    """One more language-model system: changes to ``backend`` / ``decoding`` by key path."""

    label: str | None = Field(
        None, description="Name shown in results (default: the keys and values it sets)."
    )
    set: dict[str, Any] = Field(
        description="Key paths under backend or decoding and their values, e.g."
        " backend.options.model: HuggingFaceTB/SmolLM2-360M-Instruct."
    )


class PromptsSection(Strict):
    persona: Literal["paper", "compact"] = Field(
        "paper",
        description="Persona rendering: 'paper' (the paper's preamble and brace list, template"
        " 'system') or 'compact' (one 'field: value' list, template 'system_compact').",
    )
    persona_position: Literal["system", "question"] = Field(
        "system",
        description="Where the persona's demographics stand: 'system' (in the system prompt,"
        " as the paper writes it) or 'question' (at the start of every question's turn, next"
        " to what is asked; the system prompt keeps the persona template's other text)."
        " A prompt-layout lever for small models (docs/fidelity.md).",
    )
    memory: bool = Field(
        False,
        description="Respondent memory: a respondent's items form one conversation in the order"
        " answered (seq), with the earlier questions and answers in context.",
    )
    memory_at_evaluation: Literal["known", "virtual"] = Field(
        "known",
        description="With memory, what the earlier answers are when scoring: 'known' (the"
        " respondent's real answers: predict a reaction given what they said before) or"
        " 'virtual' (the model's own earlier answers, drawn from its distribution at"
        " t = virtual_temperature).",
    )
    virtual_temperature: float = Field(
        1.0, gt=0, description="Temperature of the model's own earlier answers ('virtual')."
    )


class RunConfig(Strict):
    """A whole run: what to simulate, how to fit it and how to score it."""

    survey: str = Field(
        description="Registered survey name (e.g. evshift), or the path of a survey YAML file."
    )
    survey_options: dict[str, Any] = Field(
        default_factory=dict, description="Options for the survey plugin, if it takes any."
    )
    data: DataSection = Field(default_factory=DataSection)
    split: SplitSection = Field(default_factory=SplitSection)
    questions: list[str] | None = Field(
        None, min_length=1, description="Only these question ids (omit for all; [] is an error)."
    )
    backend: BackendSection | None = Field(None, description="Language-model backend, if any.")
    prompts: PromptsSection = Field(default_factory=PromptsSection)
    decoding: DecodingSection = Field(default_factory=DecodingSection)
    evaluation: EvaluationSection = Field(default_factory=EvaluationSection)
    baselines: list[PluginRef] = Field(
        default_factory=list, description="Baselines that need no language model."
    )
    output: OutputSection = Field(default_factory=OutputSection)
    variants: list[VariantSection] = Field(
        default_factory=list,
        description="Language-model systems besides the one ``backend`` and ``decoding`` give:"
        " each variant changes some of their keys (another model, other options, loss or"
        " decoding). Data, split and baselines are shared.",
    )
    sweep: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="A grid over key paths of ``backend`` and ``decoding`` (e.g."
        " backend.options.lora_r: [4, 8]): every combination is a language-model system,"
        " for each variant.",
    )

    @model_validator(mode="after")
    def _sweep_keys(self) -> RunConfig:
        for key, values in self.sweep.items():
            if key.split(".")[0] not in SWEEPABLE:
                raise ValueError(
                    f"sweep: {key}: only keys under {', '.join(SWEEPABLE)} can be swept in one"
                    " run (data, split and baselines are shared by every system)"
                )
            if not values:
                raise ValueError(f"sweep: {key}: needs at least one value")
        for i, variant in enumerate(self.variants):
            for key in variant.set:
                if key.split(".")[0] not in SWEEPABLE:
                    raise ValueError(f"variants.{i}.set: {key}: only keys under backend, decoding")
        if (self.sweep or self.variants) and self.backend is None:
            raise ValueError("sweep and variants need a backend")
        return self


#: the sections a sweep or a variant may change: what a language-model system is
SWEEPABLE = ("backend", "decoding")


# --------------------------------------------------------------------------------------------
def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def format_validation_error(exc: ValidationError, source: str, prefix: str = "") -> str:
    lines = []
    for err in exc.errors():
        key = _loc(tuple(err["loc"]))
        key = f"{prefix}.{key}" if prefix and key != "(top level)" else (prefix or key)
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key (not an option here; check the spelling)"
        lines.append(f"{source}: {key}: {message}")
    return "\n".join(lines)


def validate_options(cls: Any, options: dict[str, Any] | None, where: str, source: str = "") -> Any:
    """Validate ``options`` with ``cls.Options`` (a plugin's own model); errors name the key."""
    model = getattr(cls, "Options", None)
    options = options or {}
    if model is None:
        if options:
            keys = ", ".join(sorted(options))
            raise ConfigError(f"{source or 'config'}: {where}: takes no options (got {keys})")
        return None
    try:
        return model.model_validate(options)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source or "config", where)) from exc


class UniqueKeyLoader(yaml.SafeLoader):
    """The safe YAML loader, but a key given twice in one mapping is an error (plain YAML
    keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key; the base class reports it
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a configuration file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {exc.start}); save the file as UTF-8"
        ) from None
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}:{where}: not valid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of options at the top level")
    return data


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply ``key.path=value`` (value parsed as YAML) to a nested mapping, in place."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected key.path=value")
    key, _, raw = assignment.partition("=")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    parts = key.strip().split(".")
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"--set {key}: {'.'.join(parts[:i])} has no item {part}")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {'.'.join(parts[:i])} is not a mapping")
        if last:
            node[part] = value
        else:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read, override and validate a run configuration (the core's sections only)."""
    data = read_yaml(path)
    for assignment in overrides:
        key, _, raw = assignment.partition("=")
        key = key.strip()
        if key.startswith("sweep.") and "=" in assignment:  # --set sweep.backend.options.x=[...]
            key = key.removeprefix("sweep.")
            data["sweep"] = data.get("sweep") or {}
            data["sweep"][key] = None
        sweep = data.get("sweep")
        if isinstance(sweep, dict) and key in sweep:
            # a swept key takes the list of values to sweep over
            try:
                value = yaml.safe_load(raw)
            except yaml.YAMLError:
                value = raw
            sweep[key] = value if isinstance(value, list) else [value]
            continue
        apply_override(data, assignment)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path))) from None
