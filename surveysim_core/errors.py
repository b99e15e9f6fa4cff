"""Errors the toolkit raises for bad input; each names the file, field or plugin at fault."""

from __future__ import annotations


class SurveysimError(Exception):
    """Base class of every error that is the user's input rather than a bug."""


class ConfigError(SurveysimError):
    """A run configuration or survey definition is invalid."""


class DataError(SurveysimError):
    """A data file is malformed: missing column, unknown option, out-of-range answer, ..."""


class PluginError(SurveysimError):
    """A plugin is unknown, broken, or registers a name another plugin already holds."""


class ConditionError(DataError):
    """Data hold an answer to a question whose condition (``when:``) excludes that respondent."""
