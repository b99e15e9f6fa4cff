"""Several language-model systems in one run: ``variants`` (each changes some ``backend`` /
``decoding`` keys) times the ``sweep`` grid. Each combination is a run configuration of its own
for the language-model stage; data, split and baselines stay those of the base configuration.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from surveysim_core.config import RunConfig, apply_override, format_validation_error
from surveysim_core.errors import ConfigError


@dataclass
class VariantConfig:
    """One language-model configuration of a run: its label ("" for the base one), where it
    comes from in the file (for errors), and the configuration with its changes applied."""

    label: str
    where: str
    changes: dict[str, Any]
    config: RunConfig


def _short(value: Any) -> str:
    # a hub id or a path is named by its last part, so that labels stay readable folder names
    text = value if isinstance(value, str) else json.dumps(value)
    return text.rstrip("/").split("/")[-1]


def variant_configs(config: RunConfig, source: str) -> list[VariantConfig]:
    """The base configuration and each variant, each expanded over the sweep grid."""
    base = config.model_dump(mode="json")
    base["variants"], base["sweep"] = [], {}
    keys = list(config.sweep)
    grid = list(itertools.product(*(config.sweep[k] for k in keys))) if keys else [()]
    variants: list[tuple[str | None, str, dict[str, Any]]] = [(None, "", {})]
    variants += [(v.label, f"variants.{i}", dict(v.set)) for i, v in enumerate(config.variants)]
    out: list[VariantConfig] = []
    for label, where, changes in variants:
        for combo in grid:
            swept = dict(zip(keys, combo, strict=True))
            all_changes = {**changes, **swept}
            data = json.loads(json.dumps(base))
            for key, value in all_changes.items():
                apply_override(data, f"{key}={json.dumps(value)}")
            place = where or ("sweep" if swept else "")
            try:
                cfg = RunConfig.model_validate(data)
            except ValidationError as exc:
                raise ConfigError(format_validation_error(exc, f"{source} ({place})")) from None
            parts = [label] if label else []
            parts += [f"{k.split('.')[-1]}={_short(v)}" for k, v in (swept if label else all_changes).items()]  # fmt: skip
            out.append(VariantConfig(",".join(parts), place, all_changes, cfg))
    labels = [v.label for v in out]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise ConfigError(f"{source}: variants: two systems have the same label {dupes}")
    return out
