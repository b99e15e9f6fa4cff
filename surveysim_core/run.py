"""Run orchestration: a run is a short list of stages, each in its own module.

plan (:mod:`surveysim_core.plan`) -> run directory (:mod:`surveysim_core.rundir`) -> data, split
and items (:mod:`surveysim_core.items`) -> systems (:mod:`surveysim_core.systems`) -> scoring
(:mod:`surveysim_core.evaluate`, :mod:`surveysim_core.scoring`) -> report
(:mod:`surveysim_core.report`). Every stage writes its result into the run directory, and a
resumed run skips what is already there.

The names other code imports from here (``plan_run``, ``render_prompts``, ...) are re-exported.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from surveysim_core import logs
from surveysim_core.cache import Cache, cache_root
from surveysim_core.config import RunConfig
from surveysim_core.errors import ConfigError, SurveysimError
from surveysim_core.evaluate import SCORED_COLUMNS, SETTINGS_COLUMNS, Scored, run_and_score
from surveysim_core.items import build_items, examples, load_data, parse_with, render_prompts
from surveysim_core.plan import Plan, plan_run
from surveysim_core.plugins import Plugins
from surveysim_core.preflight import preflight
from surveysim_core.protocols import Example, ItemSet, Progress
from surveysim_core.report import write_report
from surveysim_core.rundir import (
    RunDir,
    choose_run_dir,
    config_hash,
    is_main_process,
    point_latest,
    remove_leftovers,
)
from surveysim_core.scoring import (
    DIFFERENCE_COLUMNS,
    difference_rows,
    floor_rows,
    higher_is_better,
    undirected,
)
from surveysim_core.split import split_by_subject
from surveysim_core.summary import training_throughput, write_summary
from surveysim_core.survey import Survey
from surveysim_core.systems import Stage, build_systems
from surveysim_core.validation import check_enough_subjects, check_population

__all__ = [
    "Plan", "Run", "build_items", "examples", "execute", "load_data", "parse_with", "plan_run",
    "render_prompts", "training_throughput",
]  # fmt: skip


@dataclass
class Run:
    """A finished (or resumed) run, as handed to ``surveysim_write_report`` hooks."""

    dir: Path
    plan: Plan
    metrics: pd.DataFrame
    settings: pd.DataFrame
    timings: dict[str, float] = field(default_factory=dict)
    #: what the result cache gave (``reused``) and what this run computed and stored
    cache: dict[str, list[str]] = field(default_factory=dict)

    @property
    def config(self) -> RunConfig:
        return self.plan.config

    @property
    def survey(self) -> Survey:
        return self.plan.survey


def _examples(items: ItemSet) -> list[Example]:
    """Deprecated alias of :func:`surveysim_core.items.examples` (removed in the next release)."""
    warnings.warn(
        "surveysim_core.run._examples is deprecated; use surveysim_core.items.examples",
        DeprecationWarning,
        stacklevel=2,
    )
    return examples(items)


def execute(
    config: RunConfig,
    source: str,
    plugins: Plugins,
    resume: bool = False,
    run_dir: str | None = None,
    progress: Progress | None = None,
) -> Run:
    """Run every stage of ``config`` into a run directory, and return the finished run."""
    # stage lines go to the console and run.log (a caller's own progress is teed into run.log)
    progress = Progress(logs.teed(progress.report)) if progress else Progress(logs.stage)
    started = time.time()
    timings: dict[str, float] = {}
    plan = plan_run(config, source, plugins)
    preflight(plan)
    rd = open_run_dir(config, resume, run_dir, progress)
    try:
        with rd:  # the run directory's lock is released however the run ends
            return _stages(plan, rd, plugins, resume, progress, started, timings)
    finally:
        logs.detach_run_log()


def _stages(
    plan: Plan,
    rd: RunDir,
    plugins: Plugins,
    resume: bool,
    progress: Progress,
    started: float,
    timings: dict[str, float],
) -> Run:
    """The stages after the run directory is open: items, systems, scoring, results, report."""
    config = plan.config
    tick = time.time()
    train, val, test = item_sets(plan, rd, plugins, progress)
    timings["data"] = time.time() - tick

    cache = Cache(cache_root(config.output.cache_dir), progress) if config.output.cache else None
    systems = build_systems(plan, rd.path, plugins, resume, progress, cache)
    if cache is not None:
        report_reuse(systems, cache, train, val, test, progress)
    scored = run_and_score(systems, plan, rd, train, val, test, resume, progress)
    for s in scored:
        timings.update(s.timings)
    if cache is not None:
        report_cache(cache, progress)

    metrics, settings = write_results(plan, rd, scored, train, test)
    timings["total"] = time.time() - started
    cached = {"reused": cache.reused, "computed": cache.computed} if cache is not None else {}
    run = Run(rd.path, plan, metrics, settings, timings, cached)
    finish(run, rd, plugins, progress)
    return run


def report_reuse(
    systems: list[Any],
    cache: Cache,
    train: ItemSet,
    val: ItemSet,
    test: ItemSet,
    progress: Progress,
) -> list[Stage]:
    """Before any work: which stages' results are still valid for this configuration (their
    cache entries exist) and which must be computed, so that a changed configuration says at
    once what it costs."""
    stages: list[Stage] = []
    for system in systems:
        plan_of = getattr(system, "reuse_plan", None)
        if plan_of is not None:
            stages += plan_of(cache, train, val, test)
    valid = [f"{s.system}: {s.what}" for s in stages if s.cached]
    todo = [f"{s.system}: {s.what}" for s in stages if not s.cached]
    if valid:
        progress(f"still valid (from the cache): {'; '.join(valid)}")
    if todo:
        progress(f"to compute: {'; '.join(todo)}")
    return stages


def report_cache(cache: Cache, progress: Progress) -> None:
    """Say what this run took from the cache and what it computed."""
    if cache.reused:
        progress(f"cache ({cache.root}): reused {'; '.join(cache.reused)}")
    if cache.computed:
        progress(f"cache ({cache.root}): computed {'; '.join(cache.computed)}")


def open_run_dir(
    config: RunConfig, resume: bool, run_dir: str | None, progress: Progress
) -> RunDir:
    """The run directory: a new one, or the one to resume (same configuration only).

    It is created exclusively and locked (``.lock``); use the result as a context manager, which
    releases the lock and removes a fresh run directory that an error left without results.
    """
    path = choose_run_dir(config, resume, run_dir)
    created = run_dir is None and not (path / "config.hash").exists()
    rd = RunDir(path, lock=True, created=created)
    try:
        _check_run_dir(rd, config, resume, run_dir, progress)
    except BaseException as exc:
        rd.__exit__(type(exc), exc, exc.__traceback__)
        raise
    return rd


def _check_run_dir(
    rd: RunDir, config: RunConfig, resume: bool, run_dir: str | None, progress: Progress
) -> None:
    path = rd.path
    main = is_main_process()
    # the main process checks: in a launch the others see the config.hash it has just written
    if main and path.exists() and (path / "config.hash").exists() and not resume:
        raise ConfigError(f"{path}: a run is already there; add --resume to continue it")
    if main and path.exists() and (path / "config.hash").exists():
        old = (path / "config.hash").read_text().strip()
        if old != config_hash(config):
            raise ConfigError(
                f"{path}: was started with a different configuration; cannot resume it"
                f" ({describe_changes(path, config)}). Start a new run: the result cache reuses"
                " the adapters, answers and baseline predictions these changes leave alone"
            )
        progress(f"resuming {path}")
        remove_leftovers(path)  # what a killed writer left half-written
    elif main and resume and run_dir is not None:
        raise ConfigError(f"{path}: --resume: nothing to resume here (no run was started)")
    elif main and resume and run_dir is None:
        latest = _latest_run(Path(config.output.dir))
        if latest is not None:
            progress(
                f"no run of this exact configuration to resume; {latest} differs"
                f" ({describe_changes(latest, config)}): starting a new run, reusing cached results"
            )
    if rd.main:
        logs.attach_run_log(path)
    rd.write_text("config.yaml", yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    rd.write_text("config.hash", config_hash(config) + "\n")
    progress(f"run directory: {path}")


def describe_changes(run_dir: Path, config: RunConfig, most: int = 6) -> str:
    """The keys whose values differ between a run's saved configuration and ``config``."""
    try:
        before = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return "its config.yaml cannot be read"
    changes = _changed_keys(before, config.model_dump(mode="json"))
    shown = [f"{k}: {a!r} -> {b!r}" for k, a, b in changes[:most]]
    more = f", and {len(changes) - most} more" if len(changes) > most else ""
    return "changed " + ", ".join(shown) + more if shown else "no key differs"


def _changed_keys(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            where = f"{prefix}.{key}" if prefix else str(key)
            out += _changed_keys(a.get(key), b.get(key), where)
        return out
    return [] if a == b else [(prefix, a, b)]


def _latest_run(base: Path) -> Path | None:
    if not base.is_dir():
        return None
    runs = [p for p in base.iterdir() if not p.is_symlink() and (p / "config.yaml").is_file()]
    return max(runs, key=lambda p: (p / "config.yaml").stat().st_mtime, default=None)


def item_sets(
    plan: Plan, rd: RunDir, plugins: Plugins, progress: Progress
) -> tuple[ItemSet, ItemSet, ItemSet]:
    """Data, the subject-level split (written to ``splits.csv``) and the virtual participants:
    the train, validation and test item sets, with prompts when a language model needs them."""
    config, source = plan.config, plan.source
    data = load_data(plan, rd.path, plugins, progress)
    split_cfg = config.split
    splits = split_by_subject(
        data.respondents.index, {"train": split_cfg.train, "val": split_cfg.val, "test": split_cfg.test},
        split_cfg.seed,
        caps={"train": split_cfg.max_train_subjects, "val": split_cfg.max_val_subjects, "test": split_cfg.max_test_subjects},
    )  # fmt: skip
    rd.write_frame(
        "splits.csv",
        pd.DataFrame(
            [(s, name) for name, ids in splits.items() for s in ids],
            columns=["subject_id", "split"],
        ),
    )
    check_enough_subjects(data.respondents, splits, source)
    population = plan.sampler.sample(
        data.respondents, splits, config.evaluation.seed, plan.survey.spec
    )
    check_population(population, splits, source)
    missing = [s for s in population.index if s not in data.respondents.index]
    if missing:
        raise ConfigError(
            f"{source}: evaluation.population: scoring needs held-out respondents with answers;"
            f" {len(missing)} sampled participants have none (use test_split, or `surveysim simulate`)"
        )
    needs_prompts = plan.backend is not None
    train = build_items(plan, data, splits["train"], render=needs_prompts)
    val = build_items(plan, data, splits["val"], render=needs_prompts)
    test = build_items(plan, data, list(population.index), render=needs_prompts)
    progress(
        f"{len(data.respondents)} subjects, {len(data.responses)} answers;"
        f" split train/val/test = {len(splits['train'])}/{len(splits['val'])}/{len(test.respondents)} subjects"
        f" ({len(train)}/{len(val)}/{len(test)} answers)"
    )
    return train, val, test


def write_results(
    plan: Plan, rd: RunDir, scored: list[Scored], train: ItemSet, test: ItemSet
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``metrics.csv`` (every system's rows and the noise floors), ``differences.csv`` (paired
    differences against the baselines) and ``settings.csv``."""
    config = plan.config
    floors = pd.DataFrame(
        floor_rows(test.items, train.items, plan.answer_types, plan.metrics,
                   config.evaluation.bootstrap, config.evaluation.seed,
                   test.respondents, train.respondents, plan.segments),
        columns=SCORED_COLUMNS,
    ).assign(system_id="")  # fmt: skip
    metrics = pd.concat([*(s.metrics for s in scored), floors], ignore_index=True)
    rd.write_frame("metrics.csv", metrics)
    draws = {k: v for s in scored for k, v in s.draws.items()}
    differences = difference_rows(
        metrics, draws, higher_is_better(plan.metrics), undirected(plan.metrics)
    )
    rd.write_frame("differences.csv", pd.DataFrame(differences, columns=DIFFERENCE_COLUMNS))
    settings = pd.DataFrame([r for s in scored for r in s.settings], columns=SETTINGS_COLUMNS)
    rd.write_frame("settings.csv", settings)
    return metrics, settings


def finish(run: Run, rd: RunDir, plugins: Plugins, progress: Progress) -> None:
    """Report plugins, the report, ``status.json`` and the ``latest`` link."""
    if rd.main:
        # first, so that the report links the figures plugins draw; a failing report plugin
        # costs its own figure, not the results already written
        try:
            plugins.write_reports(run)
        except SurveysimError as exc:
            progress(f"warning: {exc}")
        write_report(run)
    write_summary(run)
    status = {
        "finished": True,
        "timings_s": run.timings,
        "cache": run.cache,
        "throughput": training_throughput(run.dir),
    }
    rd.write_text("status.json", json.dumps(status, indent=2))
    if rd.main and run.dir.parent == Path(run.config.output.dir):
        point_latest(run.dir)
