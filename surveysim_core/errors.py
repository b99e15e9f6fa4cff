"""Errors the toolkit raises for bad input; each names the file, field or plugin at fault.

Each class carries the exit status the ``surveysim`` command ends with when it stops on that
error (``docs/user-guide.md``, "Exit codes"): 2 is click's status for a usage error.
"""

from __future__ import annotations

#: exit status of the command line, by kind of failure
EXIT_OK = 0
EXIT_INTERNAL = 1  # a bug: an unexpected exception, with its traceback
EXIT_USAGE = 2  # unknown command or option, missing argument (click)
EXIT_CONFIG = 3
EXIT_DATA = 4
EXIT_PLUGIN = 5
EXIT_RUNTIME = 6
EXIT_OUTPUT = 7
EXIT_INTERRUPTED = 130


class SurveysimError(Exception):
    """Base class of every error that is the user's input rather than a bug."""

    exit_code: int = EXIT_RUNTIME


class ConfigError(SurveysimError):
    """A run configuration or survey definition is invalid."""

    exit_code = EXIT_CONFIG


class DataError(SurveysimError):
    """A data file is malformed: missing column, unknown option, out-of-range answer, ..."""

    exit_code = EXIT_DATA


class PluginError(SurveysimError):
    """A plugin is unknown, broken, or registers a name another plugin already holds."""

    exit_code = EXIT_PLUGIN


class RunError(SurveysimError):
    """A run failed while it ran (a model, backend or system), not because of its input files."""

    exit_code = EXIT_RUNTIME


class ConditionError(DataError):
    """Data hold an answer to a question whose condition (``when:``) excludes that respondent."""


class OutputError(SurveysimError):
    """A result cannot be written: a full disk, a read-only folder, a path that is a file, or a
    run directory another process holds. Files written before are left intact."""

    exit_code = EXIT_OUTPUT
