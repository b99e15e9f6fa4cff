"""Checks a plan's plugin options make beyond their types (a model that can be found, ...).

A plugin's options model may define ``preflight(self) -> None``, raising ``ValueError`` (or a
``SurveysimError``) with a message that names the option. ``surveysim validate`` and a run call
it once the configuration is planned, so that a missing model is a named configuration error
at once instead of a traceback after minutes. It must not use the network or heavy imports.
"""

from __future__ import annotations

from typing import Any

from surveysim_core.errors import ConfigError, SurveysimError


def _option_sets(plan: Any) -> list[tuple[str, Any]]:
    """``(dotted config key, validated options)`` of each plugin object in the plan."""
    sets: list[tuple[str, Any]] = []
    if plan.backend is not None:
        sets.append(("backend.options", plan.backend[1]))
    if plan.loss is not None:
        sets.append(("backend.loss.options", plan.loss[1]))
    for variant in getattr(plan, "lm_variants", [])[1:]:  # more models of variants / a sweep
        sets.append((f"({variant.label}) backend.options", variant.backend[1]))
    for i, (_name, (_cls, options)) in enumerate(plan.baselines):
        sets.append((f"baselines.{i}.options", options))
    return sets


def preflight(plan: Any) -> None:
    """Run every ``preflight`` check of the plan's options; all failures raise together."""
    errors = []
    for key, options in _option_sets(plan):
        check = getattr(options, "preflight", None)
        if check is None:
            continue
        try:
            check()
        except (ValueError, SurveysimError) as exc:
            errors.append(f"{plan.source}: {key}: {exc}")
    if errors:
        raise ConfigError("\n".join(errors))
