"""A run's ``survey:``: a registered survey name, or the path of a survey YAML file.

A survey written as a plain YAML file (the format of :class:`~surveysim_core.survey.SurveySpec`,
templates given inline or as ``.j2`` files beside it) needs no plugin package: a run config says
``survey: path/to/survey.yaml``. Such a survey has no loader or synthetic population, so its data
come from a file (``data: {source: file, path: ...}``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from surveysim_core.errors import ConfigError
from surveysim_core.survey import Survey

SURVEY_FILE_SUFFIXES = (".yaml", ".yml")


def is_survey_path(value: str) -> bool:
    """Whether a config's ``survey`` value names a YAML file rather than a registered survey."""
    return value.strip().lower().endswith(SURVEY_FILE_SUFFIXES)


def survey_label(value: str) -> str:
    """A survey's name for run-directory names: the file stem of a survey path."""
    return Path(value.strip()).stem if is_survey_path(value) else value


def survey_path_candidates(value: str, config_source: str) -> list[Path]:
    """Where a relative survey path is looked for: beside the run config first, then the
    working directory (so a config and its survey travel together as one folder)."""
    path = Path(value.strip()).expanduser()
    if path.is_absolute():
        return [path]
    beside_config = Path(config_source).parent / path
    return list(dict.fromkeys([beside_config, path]))


def resolve_survey(value: str, config_source: str, plugins: Any) -> Survey:
    """The survey a run configuration names: read from a YAML path, or from the registry."""
    if not is_survey_path(value):
        return plugins.surveys.get(value, where=f"{config_source}: survey")
    candidates = survey_path_candidates(value, config_source)
    for candidate in candidates:
        if candidate.is_file():
            return Survey.from_yaml(candidate)
    looked = ", ".join(str(c) for c in candidates)
    raise ConfigError(f"{config_source}: survey: no survey file {value!r} (looked for {looked})")
