"""A finished run's language-model systems by name, for commands that answer with one of them
after the run (``simulate``, ``pilot``).

The names and adapter folders come from the run directory itself: its ``config.yaml`` planned
again through :func:`~surveysim_core.systems.build_systems` (the code that named the systems and
laid out their adapters: ``adapter/`` for a kind with one system, ``adapters/<system_id>/`` for
each system of a sweep), limited to the systems its ``settings.csv`` records once it finished.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from surveysim_core.config import RunConfig, load_config
from surveysim_core.errors import ConfigError
from surveysim_core.plan import plan_run
from surveysim_core.plugins import Plugins
from surveysim_core.protocols import Progress
from surveysim_core.systems import LanguageModelSystem, build_systems

#: what a saved adapter must hold (safetensors only: PEFT would unpickle an adapter_model.bin)
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def run_config(run: Path, where: str) -> RunConfig:
    """The configuration of run directory ``run``; ``where`` ("file: key") names the setting."""
    if not run.is_dir():
        raise ConfigError(f"{where}: {run} is not a directory")
    if not (run / "config.yaml").exists():
        raise ConfigError(f"{where}: {run} has no config.yaml; not a run directory")
    return load_config(run / "config.yaml")


def language_model_systems(run: Path, plugins: Plugins, where: str) -> list[LanguageModelSystem]:
    """The run's language-model systems as the run named them (recorded ones only, once it has
    a ``settings.csv``)."""
    config = run_config(run, where)
    if config.backend is None:
        raise ConfigError(
            f"{where}: {run} has no trained system (its configuration has no language-model"
            " backend)"
        )
    plan = plan_run(config, str(run / "config.yaml"), plugins)
    systems = [
        s
        for s in build_systems(plan, run, plugins, False, Progress())
        if isinstance(s, LanguageModelSystem)
    ]
    recorded = run / "settings.csv"
    if recorded.is_file():
        names = set(pd.read_csv(recorded, dtype=str, keep_default_na=False)["system"])
        systems = [s for s in systems if s.name in names]
    return systems


def run_system(
    run: Path, name: str, plugins: Plugins, source: str, field: str
) -> tuple[LanguageModelSystem, Path | None]:
    """The system ``name`` of run directory ``run`` and the adapter it answers with (None: the
    pre-trained model); the errors name ``source`` (the config file), ``field`` (its key) and,
    for a name the run lacks, the systems it has."""
    where = f"{source}: {field.rsplit('.', 1)[0]}.run"
    systems = {s.name: s for s in language_model_systems(run, plugins, where)}
    system = systems.get(name)
    if system is None:
        raise ConfigError(
            f"{source}: {field}: run {run} has no language-model system {name!r}; it has"
            f" {', '.join(sorted(systems)) or 'none'}"
        )
    adapter = system.adapter_dir if system.learns else None
    if adapter is not None and not all((adapter / f).is_file() for f in ADAPTER_FILES):
        raise ConfigError(
            f"{where}: {run} has no trained system {name!r} ({adapter} holds no"
            f" {' and '.join(ADAPTER_FILES)}: the run did not fine-tune, or has not finished)"
        )
    return system, adapter
