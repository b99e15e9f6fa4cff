"""``surveysim simulate``: a virtual population answers survey items and statements.

Everything the configuration names (survey, run directory, population, statements, segments) is
checked before anything is written; results are written into a hidden folder beside the output
and renamed into place at the end, so a failure leaves nothing partial.

Answering goes through the core's engine (:mod:`surveysim_core.answering`), as a run's does, and
is resumable: the personas are answered in chunks (``ANSWER_CHUNK`` personas, every item), and
each chunk's distributions go to the result cache (``SURVEYSIM_CACHE``, else
``~/.cache/surveysim``), keyed by the system (backend, options, the adapter's files), the
temperature, the answer set and the chunk's prompts. An interrupted simulate or pilot, run again,
answers only the chunks it had not finished; a finished one, run again with other segments or
bootstrap settings, answers nothing.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from surveysim_core import answering
from surveysim_core.answering import (
    Chunk,
    answer_chunks,
    cached_temperatures,
    decode_items,
    persona_chunks,
)
from surveysim_core.answers import AnswerType
from surveysim_core.cache import Cache, cache_root, digest
from surveysim_core.config import DataSection, RunConfig, load_config, validate_options
from surveysim_core.errors import ConfigError, DataError
from surveysim_core.files import atomic_directory, file_sha256
from surveysim_core.plugins import Plugins
from surveysim_core.protocols import Backend, Progress, Prompt, SystemAnswers
from surveysim_core.run_systems import run_config, run_system
from surveysim_core.scoring import (
    bootstrap_intervals,
    resample_counts,
    segment_masks,
    weighted_mean_draws,
)
from surveysim_pilot import population as pop
from surveysim_pilot.config import SimulateConfig
from surveysim_pilot.items import Item, build_items


@dataclass
class SystemChoice:
    """The system that answers: its name (as its run names it), backend class, validated
    options and adapter folder (None: the pre-trained model), and the settings its answers
    depend on (as the run records them)."""

    name: str
    backend: type
    options: Any
    adapter: Path | None
    label: str
    settings: dict[str, Any]
    #: the run configuration the system was trained and evaluated with (None: no run)
    run_config: RunConfig | None = None

    def fingerprint(self) -> str:
        """What the system's answers depend on: the run's settings of it, less decoding and
        prompts (each chunk's key holds its temperature and prompts), and the adapter's files."""
        settings = {k: v for k, v in self.settings.items() if k not in ("decoding", "prompts")}
        files = {}
        if self.adapter is not None:
            for path in sorted(p for p in self.adapter.rglob("*") if p.is_file()):
                files[str(path.relative_to(self.adapter))] = file_sha256(path)
        return digest("system", settings, files)


@dataclass
class Prepared:
    """A checked configuration: plan (survey, renderer, answer types), personas and items."""

    config: SimulateConfig
    source: str
    plan: Any
    population: pop.Population
    items: list[Item]
    segments: list[str]
    system: SystemChoice
    output: Path


# -- checking ----------------------------------------------------------------------------------
def resolve_system(config: SimulateConfig, source: str, plugins: Plugins) -> SystemChoice:
    """The system the configuration names: a finished run's, by name (any of its language-model
    systems, a sweep's included), or a backend's pre-trained model."""
    sys_cfg = config.system
    if sys_cfg.run is not None:
        run = Path(sys_cfg.run)
        run_cfg = run_config(run, f"{source}: system.run")
        if run_cfg.survey != config.survey:
            raise ConfigError(
                f"{source}: system.run: {run} ran survey {run_cfg.survey!r}, not {config.survey!r}"
            )
        found, adapter = run_system(run, sys_cfg.name, plugins, source, "system.name")
        cls, options = found.variant.backend
        label = f"{found.name} ({run})"
        return SystemChoice(
            found.name, cls, options, adapter, label, found.settings, found.variant.config
        )
    ref = sys_cfg.backend
    assert ref is not None  # the configuration gives a run or a backend
    cls = plugins.backends.get(ref.name, where=f"{source}: system.backend.name")
    options = validate_options(cls, ref.options, "system.backend.options", source)
    dumped = options.model_dump(mode="json") if options is not None else dict(ref.options)
    system_settings = getattr(cls, "system_settings", None) or Backend.system_settings
    settings = {
        "kind": "zero_shot",
        "backend": ref.name,
        **system_settings("zero_shot", dumped, {}),
    }
    return SystemChoice("zero_shot", cls, options, None, f"zero_shot ({ref.name})", settings)


def _plan(config: SimulateConfig, source: str, plugins: Plugins, system: SystemChoice):
    from surveysim_core.run import plan_run

    # the exact decoder: answer distributions as a run's exact decoder reads them
    base = RunConfig(
        survey=config.survey, survey_options=config.survey_options, decoding={"decoder": "exact"}
    )
    if system.run_config is not None:
        # prompts as the system was trained with them (compact persona, respondent memory)
        base = base.model_copy(update={"prompts": system.run_config.prompts})
    return plan_run(base, source, plugins)


def _respondents(
    config: SimulateConfig, plan, plugins: Plugins, progress: Progress
) -> pd.DataFrame:
    """The survey's own respondents: ``data``, else the run's data, else its synthetic ones."""
    from surveysim_core.run import load_data

    data = config.data
    run_dir: Path | None = None
    if data is None and config.system.run is not None:
        run_dir = Path(config.system.run)
        data = load_config(run_dir / "config.yaml").data
    data = data or DataSection()
    plan = dataclasses.replace(plan, config=plan.config.model_copy(update={"data": data}))
    if (
        run_dir is not None
        and data.source == "synthetic"
        and (run_dir / "data/responses.csv").exists()
    ):
        return load_data(plan, run_dir, plugins, progress).respondents
    with tempfile.TemporaryDirectory(prefix="surveysim-respondents-") as tmp:
        return load_data(plan, Path(tmp), plugins, progress).respondents


def run_splits(config: SimulateConfig, respondents: pd.DataFrame) -> dict[str, list[str]]:
    """The run's subject split (``splits.csv``); without a run, every respondent in each split."""
    everyone = [str(s) for s in respondents.index]
    path = Path(config.system.run) / "splits.csv" if config.system.run else None
    if path is None or not path.exists():
        return {"train": everyone, "val": [], "test": everyone}
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    known = set(everyone)
    splits: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for sid, name in zip(table["subject_id"], table["split"], strict=True):
        if sid in known:
            splits.setdefault(name, []).append(sid)
    return splits


def from_sampler(
    config: SimulateConfig, source: str, spec, plugins: Plugins, respondents: pd.DataFrame
) -> pop.Population:
    """Personas drawn by a registered sampler (equal weights)."""
    ref = config.population.sampler
    cls = plugins.registry("samplers").get(ref.name, where=f"{source}: population.sampler.name")
    options = validate_options(cls, ref.options, "population.sampler.options", source)
    table = cls(options).sample(
        respondents, run_splits(config, respondents), config.population.seed, spec
    )
    where = f"{source}: population.sampler ({ref.name})"
    return pop.from_table(table, where, config.population.n, config.population.seed)


def build_population(
    config: SimulateConfig,
    source: str,
    spec,
    respondents: Callable[[], pd.DataFrame],
    plugins: Plugins | None = None,
) -> pop.Population:
    """The personas the configuration describes (``respondents`` is called only if needed)."""
    p = config.population
    if p.source == "sampler":
        return from_sampler(config, source, spec, plugins, respondents())
    if p.source == "respondents":
        table = respondents()
        return pop.from_table(table, f"{source}: population (survey respondents)", p.n, p.seed)
    if p.source == "table":
        table = pop.read_demographic_table(p.path, spec, extra=("weight",))
        return pop.from_table(table, p.path, p.n, p.seed)
    reference = (
        pop.read_demographic_table(p.reference, spec, extra=("weight",)) if p.reference else None
    )
    if p.source == "margins":
        pop.check_margins(p.margins, spec, f"{source}: population")
        if reference is None:
            reference = respondents()
        missing = [f for f in p.margins if f not in reference.columns]
        if missing:
            raise DataError(f"{p.reference}: no column for the margins of {', '.join(missing)}")
        return pop.from_margins(reference, p.margins, spec, f"{source}: population", p.n, p.seed)
    cells = pd.read_csv(p.path, dtype=str, keep_default_na=False) if Path(p.path).exists() else None
    if cells is None:
        raise DataError(f"{p.path}: no such file")
    names = [c for c in cells.columns if c != "share"]
    if reference is None and len([c for c in names if c in spec.demographics]) < len(
        spec.demographics
    ):
        reference = respondents()
    return pop.from_cross_table(cells, spec, p.path, reference, p.n, p.seed)


def check_segments(segments: list[str], spec, population: pop.Population, source: str) -> None:
    for seg in segments:
        fld = spec.demographics.get(seg)
        if fld is None or fld.multi:
            single = ", ".join(k for k, f in spec.demographics.items() if not f.multi)
            raise ConfigError(
                f"{source}: segments: {seg!r} is not a single-choice demographic field of survey"
                f" {spec.name} ({single})"
            )
        if seg not in population.personas.columns:
            raise ConfigError(f"{source}: segments: the population has no column {seg!r}")


def prepare(
    config: SimulateConfig, source: str, plugins: Plugins, progress: Progress | None = None
) -> Prepared:
    """Check everything and build the population and items; writes nothing."""
    progress = progress or Progress()
    output = Path(config.output)
    if output.exists():
        raise ConfigError(f"{source}: output: {output} already exists; choose a new directory")
    system = resolve_system(config, source, plugins)
    plan = _plan(config, source, plugins, system)
    spec = plan.survey.spec
    items = build_items(spec, list(config.questions), config.statements, source)
    # new statements become context values, so that the survey's template shows their text
    extra: dict[str, dict[str, str]] = {}
    for item in items:
        if item.new:
            extra.setdefault(item.field, {})[item.statement] = item.text
    if extra:
        values = {k: dict(v) for k, v in spec.context_values.items()}
        for field, texts in extra.items():
            values.setdefault(field, {}).update(texts)
        plan.survey = dataclasses.replace(
            plan.survey, spec=spec.model_copy(update={"context_values": values})
        )
    population = build_population(
        config, source, spec, lambda: _respondents(config, plan, plugins, progress), plugins
    )
    check_segments(list(config.segments), spec, population, source)
    return Prepared(config, source, plan, population, items, list(config.segments), system, output)


# -- answering ---------------------------------------------------------------------------------
def item_prompts(prepared: Prepared, items: list[Item]) -> list[Prompt]:
    """The prompts of ``items`` for every persona, item-major (item k's persona i at
    ``k * n + i``), each as the first turn of a conversation."""
    from surveysim_core.run import render_prompts

    plan = prepared.plan
    personas = prepared.population.personas
    frames = []
    for item in items:
        frame = pd.DataFrame({"subject_id": list(personas.index), "question": item.question})
        if item.field:
            frame[item.field] = item.statement
        frames.append(frame)
    rows = pd.concat(frames, ignore_index=True)
    for col in plan.survey.spec.context_columns:
        if col not in rows:
            rows[col] = ""
    rows[plan.survey.spec.context_columns] = rows[plan.survey.spec.context_columns].fillna("")
    return render_prompts(plan, rows, personas, history=False)


def answer(
    prepared: Prepared,
    model: Any,
    progress: Progress | None = None,
    history: list[tuple[tuple[str, str], ...]] | None = None,
) -> dict[str, np.ndarray]:
    """Exact answer distribution of every persona for every item: ``item id -> (n, K)``, from
    the core's engine with the exact decoder, as a run answers. ``history``: each persona's
    earlier turns (question, answer), put before every item (respondent memory); default: none.
    """
    from surveysim_core.run import report_cache

    progress = progress or Progress()
    if not hasattr(model, "answer_distribution"):
        raise ConfigError(
            f"{prepared.source}: system: the backend's model {type(model).__name__} has no exact"
            " answer_distribution"
        )
    plan, items, n = prepared.plan, prepared.items, len(prepared.population)
    prompts = item_prompts(prepared, items)
    if history is not None:
        prompts = [Prompt(p.system, p.user, history[k % n]) for k, p in enumerate(prompts)]
    progress(f"answering {len(prompts)} prompts ({len(items)} items x {n} personas)")
    questions = np.repeat([item.question for item in items], n)
    decoding, quiet = plan.config.decoding, Progress(lambda message: None)

    def ask(rows: list[int], temperatures: list[float]) -> dict[float, SystemAnswers]:
        asked = [prompts[i] for i in rows]
        return decode_items(
            plan, plan.decoder, model, asked, questions[rows], temperatures,
            decoding.max_new_tokens, decoding.seed, prepared.system.name, quiet, "",
        )  # fmt: skip

    t = float(prepared.config.system.temperature)
    chunks = item_chunks(prepared, prompts, questions, t)
    cache = Cache(cache_root(), progress)
    answers = answer_chunks(chunks, len(prompts), ask, cache, prepared.system.label, progress)
    report_cache(cache, progress)
    probs = answers[t].distribution.probs
    return {
        item.id: probs[k * n : (k + 1) * n, : len(plan.answer_types[item.question].labels)]
        for k, item in enumerate(items)
    }


def item_chunks(
    prepared: Prepared, prompts: list[Prompt], questions: np.ndarray, t: float
) -> list[Chunk]:
    """The engine's persona chunks of item-major ``prompts``; a chunk's key covers the system
    fingerprint, the temperature, and its prompts (with their history) and questions' answers."""
    system = prepared.system.fingerprint()
    answers = {q: list(prepared.plan.answer_types[q].labels) for q in set(questions)}

    def key_of(rows: list[int], t: float) -> str:
        asked = [
            (prompts[i].system, prompts[i].user, list(prompts[i].history), questions[i])
            for i in rows
        ]
        return digest("answers", system, t, answers, asked)

    n = len(prepared.population)
    return persona_chunks(len(questions) // n if n else 0, n, key_of, [t])


def check_summary(prepared: Prepared, deferred: frozenset[str] = frozenset()) -> list[str]:
    """What simulate (or pilot) would do with a checked configuration, as lines for the terminal:
    the population, items, segments, system and how many answer chunks the result cache already
    holds. Loads no model and writes nothing. ``deferred``: item ids whose prompts depend on
    answers drawn during the run (respondent memory); they are counted, not looked up."""
    population = prepared.population
    w = population.weights
    items = prepared.items
    statements = [i for i in items if i.statement is not None]
    system = prepared.system
    lines = [
        f"population: {len(population)} personas ({prepared.config.population.source}),"
        f" effective sample size {1.0 / float(np.sum(w**2)):.0f} (Kish, from the weights)",
        f"items: {len(items) - len(statements)} survey questions, {len(statements)} statements"
        f" ({sum(i.new for i in statements)} new)",
        f"segments: {', '.join(prepared.segments) or '(whole population only)'}",
        f"system: {system.label} ({system.settings.get('backend')}"
        + (f", adapter {system.adapter}" if system.adapter is not None else ", no adapter")
        + f"), temperature {float(prepared.config.system.temperature):g}",
    ]
    cache = Cache(cache_root())
    t = float(prepared.config.system.temperature)
    n = len(population)
    now = [i for i in items if i.id not in deferred]
    later = n * (len(items) - len(now))
    questions = np.repeat([i.question for i in now], n)
    chunks = item_chunks(prepared, item_prompts(prepared, now), questions, t) if now else []
    total = sum(len(c.rows) for c in chunks)
    cached = sum(len(c.rows) for c in chunks if cached_temperatures(cache, c))
    lines.append(
        f"answers: {total} prompts in {len(chunks)} chunks of {answering.ANSWER_CHUNK} personas;"
        f" {cached} already in the result cache, {total - cached} to answer"
    )
    if later:
        lines.append(
            f"  and {later} prompts after each persona's drawn pre-intervention answer (respondent"
            " memory): looked up in the cache once drawn"
        )
    return lines


def normalised(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows conditioned on a valid answer, and each row's valid mass (0 rows stay 0)."""
    mass = probs.sum(axis=1)
    safe = np.where(mass > 0, mass, 1.0)
    return probs / safe[:, None], mass


# -- summaries ---------------------------------------------------------------------------------
def persona_resamples(prepared: Prepared, draws: int, seed: int) -> np.ndarray:
    """``(draws, n)``: the core's bootstrap resamples of the personas, as counts."""
    return resample_counts(np.asarray(prepared.population.personas.index), draws, seed, "personas")


def persona_segments(prepared: Prepared) -> list[tuple[str, str, np.ndarray]]:
    """("all", "all", all personas), then (field, option, mask) for each option some persona
    has: the core's segments, in the survey's order of options."""
    personas = prepared.population.personas
    spec = prepared.plan.survey.spec
    order = {seg: list(spec.demographics[seg].options) for seg in prepared.segments}
    ids = pd.DataFrame({"subject_id": personas.index})
    out = []
    for name, mask in segment_masks(ids, personas, prepared.segments, order):
        field, _, option = name.partition("=")
        out.append((field, option or "all", mask))
    return out


def persona_frame(prepared: Prepared, probs: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per persona and item: valid mass, mean answer, and one ``p_<label>`` per answer."""
    frames = []
    ids = list(prepared.population.personas.index)
    for item in prepared.items:
        at: AnswerType = prepared.plan.answer_types[item.question]
        p, mass = normalised(probs[item.id])
        frame = pd.DataFrame(
            {
                "persona_id": ids,
                "item": item.id,
                "question": item.question,
                "statement": item.statement or "",
                "group": item.group or "",
                "weight": prepared.population.weights,
                "valid_mass": mass,
                "mean": np.where(mass > 0, p @ at.support, np.nan),
            }
        )
        probs_frame = pd.DataFrame(p, columns=[f"p_{label}" for label in at.labels])
        frames.append(pd.concat([frame, probs_frame], axis=1))
    return pd.concat(frames, ignore_index=True)


def segment_frame(
    prepared: Prepared, probs: dict[str, np.ndarray], counts: np.ndarray
) -> pd.DataFrame:
    """Tidy weighted per-segment distributions and means with bootstrap CIs over personas."""
    rows = []
    w = prepared.population.weights
    for item in prepared.items:
        at = prepared.plan.answer_types[item.question]
        p, mass = normalised(probs[item.id])
        valid = mass > 0
        means = np.where(valid, p @ at.support, 0.0)
        for seg, option, mask in persona_segments(prepared):
            ws = np.where(mask & valid, w, 0.0)
            base = {
                "item": item.id, "question": item.question, "statement": item.statement or "",
                "group": item.group or "", "segment": seg, "value": option,
                "n_personas": int(mask.sum()), "weight": float(w[mask].sum()),
            }  # fmt: skip
            est, boot = weighted_mean_draws(means, ws, counts)
            lo, hi = bootstrap_intervals(est, boot)
            rows.append({**base, "measure": "mean", "answer": "", "estimate": est,
                         "ci_low": lo, "ci_high": hi})  # fmt: skip
            est, boot = weighted_mean_draws(p, ws, counts)
            lo, hi = bootstrap_intervals(est, boot)
            for k, label in enumerate(at.labels):
                rows.append({**base, "measure": "share", "answer": label, "estimate": est[k],
                             "ci_low": lo[k], "ci_high": hi[k]})  # fmt: skip
    return pd.DataFrame(rows)


# -- writing -----------------------------------------------------------------------------------
def load_model(prepared: Prepared, workdir: Path, plugins: Plugins, progress: Progress) -> Any:
    sc = prepared.system
    backend = sc.backend(sc.options, workdir, plugins, progress)
    progress(f"loading {sc.label}")
    return backend.load(sc.adapter)


def write_common(prepared: Prepared, folder: Path, probs: dict[str, np.ndarray], counts) -> None:
    folder.joinpath("config.yaml").write_text(
        yaml.safe_dump(prepared.config.model_dump(mode="json"), sort_keys=False), encoding="utf-8"
    )
    prepared.population.table().to_csv(folder / "personas.csv")
    pd.DataFrame(
        [
            {"item": i.id, "question": i.question, "field": i.field or "",
             "statement": i.statement or "", "text": i.text or "", "group": i.group or "",
             "new": i.new}
            for i in prepared.items
        ]
    ).to_csv(folder / "items.csv", index=False)  # fmt: skip
    persona_frame(prepared, probs).to_parquet(folder / "distributions.parquet", index=False)
    segment_frame(prepared, probs, counts).to_csv(folder / "segments.csv", index=False)


def simulate(
    config: SimulateConfig,
    source: str,
    plugins: Plugins,
    progress: Progress | None = None,
) -> Path:
    """Answer the configured items for the population; write the results; return the folder."""
    progress = progress or Progress()
    prepared = prepare(config, source, plugins, progress)

    def write(folder: Path) -> None:
        answer_and_write(prepared, folder, plugins, progress, config.bootstrap, config.seed)

    return atomic_directory(prepared.output, write)


def answer_and_write(
    prepared: Any,
    folder: Path,
    plugins: Plugins,
    progress: Progress,
    bootstrap: int,
    seed: int,
    answerer: Callable[[Any, Any, Progress], dict[str, np.ndarray]] | None = None,
) -> tuple[Any, Any]:
    """Answer the items for the population (with ``answerer(prepared, model, progress)``,
    default :func:`answer`), write the files simulate and pilot share, and return the answer
    probabilities and the bootstrap counts over personas."""
    model = load_model(prepared, folder, plugins, progress)
    probs = (answerer or answer)(prepared, model, progress)
    counts = persona_resamples(prepared, bootstrap, seed)
    write_common(prepared, folder, probs, counts)
    return probs, counts
