"""Run orchestration: data, split, prompts, systems (baselines and language models), metrics,
noise floors, report. Every stage writes its result into the run directory, and a resumed run
skips what is already there.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from surveysim_core.answers import AnswerDistribution, AnswerType, answer_type_from_spec
from surveysim_core.config import RunConfig, validate_options
from surveysim_core.data import SurveyData, read_table, validate_long
from surveysim_core.errors import ConfigError, SurveysimError
from surveysim_core.launch import data_dir
from surveysim_core.option_order import displayed_options, position_rows
from surveysim_core.plugins import Plugins
from surveysim_core.preflight import preflight
from surveysim_core.prompts import (
    PromptRenderer,
    default_templates,
    render_demographics,
    render_demographics_compact,
)
from surveysim_core.protocols import Example, ItemSet, Progress, Prompt
from surveysim_core.report import write_report
from surveysim_core.rundir import (
    RunDir,
    choose_run_dir,
    config_hash,
    is_main_process,
    stderr_progress,
)
from surveysim_core.scoring import (
    METRIC_COLUMNS,
    calibrated_temperature,
    floor_rows,
    readout_rows,
    score_system,
)
from surveysim_core.split import split_by_subject
from surveysim_core.summary import write_summary
from surveysim_core.survey import Survey
from surveysim_core.survey_files import resolve_survey


@dataclass
class Plan:
    """A validated run configuration with the plugin objects it names."""

    config: RunConfig
    source: str
    survey: Survey
    answer_types: dict[str, AnswerType]
    metrics: dict[str, Any]
    parsers: dict[str, list[Any]]
    baselines: list[tuple[str, Any]]
    renderer: PromptRenderer
    backend: tuple[type, Any] | None = None
    loss: Any = None
    decoder: Any = None
    sampler: Any = None


@dataclass
class Run:
    """A finished (or resumed) run, as handed to ``surveysim_write_report`` hooks."""

    dir: Path
    plan: Plan
    metrics: pd.DataFrame
    settings: pd.DataFrame
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def config(self) -> RunConfig:
        return self.plan.config

    @property
    def survey(self) -> Survey:
        return self.plan.survey


def _errors_of(fn, errors: list[str]) -> Any:
    try:
        return fn()
    except SurveysimError as exc:
        errors.append(str(exc))
        return None


def plan_run(config: RunConfig, source: str, plugins: Plugins) -> Plan:
    """Resolve every plugin the configuration names and validate each plugin's options.

    All problems are collected and raised together, each naming the file and dotted key.
    """
    errors: list[str] = []
    survey = _errors_of(lambda: resolve_survey(config.survey, source, plugins), errors)
    if survey is None:
        raise ConfigError("\n".join(errors))
    if config.survey_options or survey.Options is not None:
        if survey.Options is None or survey.configure is None:
            raise ConfigError(f"{source}: survey_options: survey {survey.name!r} takes no options")
        options = validate_options(survey, config.survey_options, "survey_options", source)
        survey = survey.configure(options)
    spec = survey.spec
    wanted = config.questions or [q.id for q in spec.questions]
    unknown = [q for q in wanted if q not in {x.id for x in spec.questions}]
    if unknown:
        errors.append(f"{source}: questions: unknown question(s) {unknown} in survey {spec.name}")
    answer_types: dict[str, AnswerType] = {}
    parsers: dict[str, list[Any]] = {}
    for i, q in enumerate(spec.questions):
        if q.id not in wanted:
            continue
        where = f"{survey.source}: questions.{i}.answer"
        at = _errors_of(
            lambda q=q, w=where: answer_type_from_spec(q.answer, plugins.answer_types, w), errors
        )
        if at is not None:
            answer_types[q.id] = at
        chain = q.parsers or spec.parsers
        parsers[q.id] = [
            p for p in (
                _errors_of(lambda n=n: plugins.parsers.get(n, where=f"{survey.source}: parsers"), errors)
                for n in chain
            ) if p is not None
        ]  # fmt: skip
    metric_names = config.evaluation.metrics or spec.metrics or list(plugins.metrics)
    metrics = {}
    for name in metric_names:
        cls = _errors_of(
            lambda n=name: plugins.metrics.get(n, where=f"{source}: evaluation.metrics"), errors
        )
        if cls is not None:
            metrics[name] = cls()
    for seg in config.evaluation.segments:
        fld = spec.demographics.get(seg)
        if fld is None or fld.multi:
            errors.append(
                f"{source}: evaluation.segments: {seg!r} is not a single-choice demographic field"
                f" of {spec.name} ({', '.join(k for k, f in spec.demographics.items() if not f.multi)})"
            )

    def resolve(
        kind: str, name: str, options: dict[str, Any], key: str, name_key: str = "name"
    ) -> tuple[Any, Any] | None:
        """The plugin class registered as ``name`` and its validated options, or None (the
        problem is recorded). ``key`` is the dotted config key of the plugin reference."""
        registry = plugins.registry(kind)
        cls = _errors_of(lambda: registry.get(name, where=f"{source}: {key}.{name_key}"), errors)
        if cls is None:
            return None
        where = f"{key}.options"
        opts = _errors_of(lambda: validate_options(cls, options, where, source), errors)
        return cls, opts

    baselines = []
    for i, ref in enumerate(config.baselines):
        resolved = resolve("baselines", ref.name, ref.options, f"baselines.{i}")
        if resolved is not None:
            baselines.append((ref.name, resolved))
    names = [n for n, _ in baselines]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        errors.append(f"{source}: baselines: {dupes} listed twice")
    backend = loss = None
    if config.backend is not None:
        ref = config.backend
        backend = resolve("backends", ref.name, ref.options, "backend")
        loss = resolve("losses", ref.loss.name, ref.loss.options, "backend.loss")
    # checked with or without a backend: a misspelt decoder is an error now, not on the GPU run
    dec = config.decoding
    resolved = resolve("decoders", dec.decoder, dec.options, "decoding", name_key="decoder")
    decoder = resolved[0](resolved[1]) if resolved else None
    pop = config.evaluation.population
    resolved = resolve("samplers", pop.name, pop.options, "evaluation.population")
    sampler = resolved[0](resolved[1]) if resolved else None
    templates = dict(default_templates())
    templates.update(_errors_of(lambda: _registered_templates(plugins), errors) or {})
    templates.update(spec.templates)
    renderer = PromptRenderer(templates, source=survey.source)
    for q in spec.questions:
        if q.id in wanted:
            _errors_of(lambda q=q: renderer.template(q.template), errors)
    persona = "system_compact" if config.prompts.persona == "compact" else "system"
    _errors_of(lambda: renderer.template(persona), errors)
    if errors:
        raise ConfigError("\n".join(errors))
    return Plan(
        config, source, survey, answer_types, metrics, parsers, baselines, renderer,
        backend, loss, decoder, sampler,
    )  # fmt: skip


def _registered_templates(plugins: Plugins) -> dict[str, str]:
    registry = plugins.templates
    return {name: registry.get(name) for name in registry}


# ----------------------------------------------------------------------------------------------
def load_data(plan: Plan, run_dir: Path, plugins: Plugins, progress: Progress) -> SurveyData:
    cfg, survey = plan.config.data, plan.survey
    if cfg.source == "synthetic":
        if survey.synthesize is None:
            raise ConfigError(
                f"{plan.source}: data.source: survey {survey.name} has no synthetic population; give data.path"
            )
        out = data_dir(run_dir)
        path = out / "responses.csv"
        if not path.exists():
            progress(f"generating synthetic {survey.name} population (seed {cfg.seed})")
            path = survey.synthesize(out, cfg.subjects or survey.spec.synthetic_subjects, cfg.seed)
    else:
        assert cfg.path is not None  # DataSection requires a path for source 'file'
        path = Path(cfg.path)
    progress(f"reading {path}")
    table = survey.load(path) if survey.load else read_table(path, plugins.data_formats)
    # not filtered here: validate_long skips the questions this run leaves out, reports
    # questions the survey does not have, and keeps row numbers those of the file
    return validate_long(table, survey.spec, plan.answer_types, str(path), cfg.weight)


def build_items(
    plan: Plan, data: SurveyData, subject_ids: list[str], render: bool = True
) -> ItemSet:
    sub = data.subset(subject_ids)
    items = sub.responses.sort_values(["subject_id", "seq", "question"], kind="stable").reset_index(
        drop=True
    )
    items["answer_text"] = [
        plan.answer_types[q].labels[int(i)]
        for q, i in zip(items["question"], _indices(plan, items), strict=True)
    ]
    prompts = render_prompts(plan, items, sub.respondents) if render else []
    return ItemSet(items, sub.respondents, prompts, plan.answer_types)


def _indices(plan: Plan, items: pd.DataFrame) -> np.ndarray:
    out = np.empty(len(items), dtype=int)
    for qid, answer in plan.answer_types.items():
        mask = (items["question"] == qid).to_numpy()
        out[mask] = answer.index_of(items.loc[mask, "answer"].to_numpy(float))
    return out


def render_prompts(plan: Plan, items: pd.DataFrame, respondents: pd.DataFrame) -> list[Prompt]:
    spec = plan.survey.spec
    labels = {name: f.label or name for name, f in spec.demographics.items()}
    compact = plan.config.prompts.persona == "compact"
    render_persona = render_demographics_compact if compact else render_demographics
    systems: dict[str, str] = {}
    for sid, row in respondents.iterrows():
        demo = render_persona(row.to_dict(), labels)
        systems[str(sid)] = plan.renderer.render(
            "system_compact" if compact else "system", demographics=demo, respondent=row.to_dict()
        )
    questions = {q.id: q for q in spec.questions}
    prompts = []
    cache: dict[tuple, str] = {}
    order, seed = plan.config.decoding.option_order, plan.config.decoding.seed
    for rec in items.to_dict("records"):
        q = questions[rec["question"]]
        answer = plan.answer_types[q.id]
        options = displayed_options(answer, q.option_order or order, rec["subject_id"], q.id, seed)
        key = (q.id, *(rec[c] for c in q.context), *options)
        if key not in cache:
            context = {c: spec.context_values.get(c, {}).get(rec[c], rec[c]) for c in q.context}
            context_text = " ".join(v for v in context.values() if v)
            cache[key] = plan.renderer.render(
                q.template, question=q, answer=answer, options=options,
                context_text=context_text, **context,
            )  # fmt: skip
        prompts.append(Prompt(systems[rec["subject_id"]], cache[key]))
    if plan.config.prompts.memory:
        prompts = with_history(prompts, items, items["answer_text"].tolist())
    return prompts


def with_history(prompts: list[Prompt], items: pd.DataFrame, answers: list[str]) -> list[Prompt]:
    """Each respondent's prompts as one conversation in the order answered: every prompt gets
    the respondent's earlier (question, answer) turns. ``items`` must be sorted by subject and
    ``seq`` (as :func:`build_items` sorts them); ``answers[i]`` is the text of item i's answer."""
    out: list[Prompt] = []
    history: tuple[tuple[str, str], ...] = ()
    previous = None
    for prompt, subject, answer in zip(prompts, items["subject_id"], answers, strict=True):
        if subject != previous:
            history, previous = (), subject
        out.append(Prompt(prompt.system, prompt.user, history))
        history = (*history, (prompt.user, answer))
    return out


def parse_with(plan: Plan, qid: str):
    chain = plan.parsers[qid]
    answer = plan.answer_types[qid]

    def parse(text: str) -> float | None:
        for parser in chain:
            value = parser(text, answer)
            if value is not None:
                return value
        return None

    return parse


# ----------------------------------------------------------------------------------------------
def execute(
    config: RunConfig,
    source: str,
    plugins: Plugins,
    resume: bool = False,
    run_dir: str | None = None,
    progress: Progress | None = None,
) -> Run:
    progress = progress or Progress(stderr_progress)
    started = time.time()
    timings: dict[str, float] = {}
    plan = plan_run(config, source, plugins)
    preflight(plan)
    path = choose_run_dir(config, resume, run_dir)
    # the main process checks: in a launch the others see the config.hash it has just written
    if is_main_process() and path.exists() and (path / "config.hash").exists() and not resume:
        raise ConfigError(f"{path}: a run is already there; add --resume to continue it")
    if is_main_process() and path.exists() and (path / "config.hash").exists():
        old = (path / "config.hash").read_text().strip()
        if old != config_hash(config):
            raise ConfigError(
                f"{path}: was started with a different configuration; cannot resume it"
            )
        progress(f"resuming {path}")
    rd = RunDir(path)
    rd.write_text("config.yaml", yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    rd.write_text("config.hash", config_hash(config) + "\n")
    progress(f"run directory: {path}")

    tick = time.time()
    data = load_data(plan, path, plugins, progress)
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
    population = plan.sampler.sample(
        data.respondents, splits, config.evaluation.seed, plan.survey.spec
    )
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
    timings["data"] = time.time() - tick

    segments = config.evaluation.segments or [
        s for s in plan.survey.spec.segments if not plan.survey.spec.demographics[s].multi
    ]
    all_rows: list[pd.DataFrame] = []
    settings_rows: list[dict[str, Any]] = []
    fmt = config.output.predictions_format

    option_orders = {
        q.id: q.option_order or config.decoding.option_order for q in plan.survey.spec.questions
    }

    def scored(system, setting, temperature, decoded_dist) -> pd.DataFrame:
        return pd.DataFrame(
            score_system(system, setting, temperature, test.items, test.respondents, decoded_dist,
                         plan.answer_types, plan.metrics, segments)
            + position_rows(system, setting, temperature, test.items, decoded_dist.probs,
                            plan.answer_types, option_orders, config.decoding.seed),
            columns=METRIC_COLUMNS,
        )  # fmt: skip

    def distribution_of(codes: np.ndarray) -> AnswerDistribution:
        parts = []
        for qid, answer in plan.answer_types.items():
            mask = test.question_mask(qid)
            if mask.any():
                parts.append((mask, AnswerDistribution.from_codes(codes[mask], answer)))
        return _stack(parts, len(test))

    # -- baselines -------------------------------------------------------------------------
    for name, (cls, opts) in plan.baselines:
        tick = time.time()
        metrics_file = f"systems/{name}/metrics.csv"
        if resume and rd.done(metrics_file):
            progress(f"baseline {name}: done earlier, kept")
            all_rows.append(pd.read_csv(path / metrics_file))
            settings_rows += pd.read_csv(path / f"systems/{name}/settings.csv").to_dict("records")
            continue
        progress(f"baseline {name}: fitting")
        baseline = cls(opts)
        frames, preds, sets = [], [], []
        for pred in baseline.predict(train, test, config.evaluation.seed):
            codes = np.asarray(pred.codes, dtype=float)
            if codes.shape != (len(test),):
                raise SurveysimError(
                    f"baseline {name!r} returned {codes.shape} answers for {len(test)} items"
                )
            frames.append(scored(name, pred.setting, None, distribution_of(codes)))
            preds.append(_prediction_frame(test, name, pred.setting, np.nan, codes, None))
            sets.append(
                {
                    "system": name,
                    "setting": pred.setting,
                    "params": json.dumps(pred.params, sort_keys=True),
                }
            )
        rd.write_frame(f"systems/{name}/predictions.{fmt}", pd.concat(preds, ignore_index=True))
        rd.write_frame(f"systems/{name}/settings.csv", pd.DataFrame(sets))
        frame = pd.concat(frames, ignore_index=True)
        rd.write_frame(metrics_file, frame)
        all_rows.append(frame)
        settings_rows += sets
        timings[f"baseline:{name}"] = time.time() - tick
        progress(f"baseline {name}: {len(sets)} setting(s) in {time.time() - tick:.1f}s")

    # -- language-model systems -------------------------------------------------------------
    if plan.backend is not None:
        timings.update(
            _run_backend(
                plan,
                rd,
                train,
                val,
                test,
                resume,
                progress,
                plugins,
                segments,
                all_rows,
                settings_rows,
            )
        )

    # -- floors, metrics, report -------------------------------------------------------------
    floors = pd.DataFrame(
        floor_rows(test.items, train.items, plan.answer_types, plan.metrics,
                   config.evaluation.bootstrap, config.evaluation.seed),
        columns=METRIC_COLUMNS,
    )  # fmt: skip
    metrics = pd.concat([*all_rows, floors], ignore_index=True)
    rd.write_frame("metrics.csv", metrics)
    settings = pd.DataFrame(settings_rows, columns=["system", "setting", "params"])
    rd.write_frame("settings.csv", settings)
    timings["total"] = time.time() - started
    run = Run(path, plan, metrics, settings, timings)
    if rd.main:
        # first, so that the report links the figures plugins draw; a failing report plugin
        # costs its own figure, not the results already written
        try:
            plugins.write_reports(run)
        except SurveysimError as exc:
            progress(f"warning: {exc}")
        write_report(run)
    write_summary(run)
    rd.write_text("status.json", json.dumps({"finished": True, "timings_s": timings}, indent=2))
    latest = path.parent / "latest"
    if rd.main and path.parent == Path(config.output.dir):
        try:
            if latest.is_symlink():
                latest.unlink()
            if not latest.exists():
                latest.symlink_to(path.name)
        except OSError:
            pass
    return run


def _stack(parts, n) -> AnswerDistribution:
    """Answers of several questions (different answer sets) in one distribution object.

    Metrics only ever see one question at a time (``score_system`` cuts the rows back to that
    question's support), so rows are padded to the widest support.
    """
    width = max((p.probs.shape[1] for _, p in parts), default=0)
    probs = np.zeros((n, width))
    exact = all(p.exact for _, p in parts) if parts else False
    for mask, part in parts:
        probs[mask, : part.probs.shape[1]] = part.probs
    return AnswerDistribution(probs, exact)


def _prediction_frame(test: ItemSet, system, setting, temperature, codes, texts) -> pd.DataFrame:
    frame = test.items[["subject_id", "question", "seq", "answer"]].copy()
    for col in test.items.columns:
        if col not in {"subject_id", "question", "seq", "answer", "answer_text"}:
            frame[col] = test.items[col]
    frame = frame.rename(columns={"answer": "true_answer"})
    frame.insert(0, "temperature", temperature)
    frame.insert(0, "setting", setting)
    frame.insert(0, "system", system)
    frame["answer"] = codes
    frame["ok"] = np.isfinite(codes)
    if texts is not None:
        frame["text"] = texts
    return frame


def _examples(items: ItemSet) -> list[Example]:
    return [
        Example(prompt, rec["answer_text"], rec["question"], rec["answer"],
                items.answer_types[rec["question"]], rec["subject_id"])
        for prompt, rec in zip(items.prompts, items.items.to_dict("records"), strict=True)
    ]  # fmt: skip


def _decode(plan, model, items: ItemSet, temperatures, progress, system: str):
    """Answer every item of ``items`` at ``temperatures``: per temperature the stacked
    distribution, the answer codes and the generated texts (None where there are none).

    Questions with the same answers and parsers are decoded in one call, so that a decoder can
    share each respondent's persona prefix across all of their questions."""
    cfg = plan.config
    groups: dict[tuple, list[str]] = {}
    for qid, answer in plan.answer_types.items():
        key = (type(answer), tuple(answer.labels), tuple(map(id, plan.parsers[qid])))
        groups.setdefault(key, []).append(qid)
    decoded_all: dict[float, list] = {}
    for qids in groups.values():
        mask = np.isin(items.items["question"].to_numpy(), qids)
        if not mask.any():
            continue
        prompts = [p for p, m in zip(items.prompts, mask, strict=True) if m]
        shown = ", ".join(f"{t:g}" for t in temperatures)
        progress(f"{system}: answering {len(prompts)} prompts ({', '.join(qids)}) at t={shown}")
        decoded = plan.decoder.decode(
            model, prompts, plan.answer_types[qids[0]], parse_with(plan, qids[0]),
            temperatures, cfg.decoding.max_new_tokens, cfg.decoding.seed,
        )  # fmt: skip
        for t, d in decoded.items():
            decoded_all.setdefault(t, []).append((mask, d))
    dists, codes_by_t, texts_by_t = {}, {}, {}
    for t, parts in decoded_all.items():
        dists[t] = _stack([(m, d.distribution) for m, d in parts], len(items))
        codes = np.full(len(items), np.nan)
        texts: list[str | None] = [None] * len(items)
        for mask, d in parts:
            codes[mask] = d.codes
            if d.texts is not None:
                for i, text in zip(np.nonzero(mask)[0], d.texts, strict=True):
                    texts[i] = text
        codes_by_t[t], texts_by_t[t] = codes, texts
    return dists, codes_by_t, texts_by_t


def _decode_virtual(plan, model, items: ItemSet, temperatures, progress, system: str):
    """Fully virtual respondents with memory: each respondent's items are answered in order,
    and the history each item sees holds the model's own earlier answers, drawn (seeded) from
    its distribution at ``prompts.virtual_temperature``, not the person's real ones."""
    cfg = plan.config
    t_virtual = cfg.prompts.virtual_temperature
    wanted = list(dict.fromkeys([*temperatures, t_virtual]))
    position = items.items.groupby("subject_id", sort=False).cumcount().to_numpy()
    rng = np.random.default_rng(cfg.decoding.seed)
    history: dict[str, tuple[tuple[str, str], ...]] = {}
    n = len(items)
    dists: dict[float, np.ndarray] = {}
    codes_by_t = {t: np.full(n, np.nan) for t in wanted}
    texts_by_t: dict[float, list[str | None]] = {t: [None] * n for t in wanted}
    exact = True
    for k in range(int(position.max()) + 1 if n else 0):
        rows = np.nonzero(position == k)[0]
        subjects = items.items["subject_id"].to_numpy()[rows]
        prompts = [
            Prompt(items.prompts[i].system, items.prompts[i].user, history.get(s, ()))
            for i, s in zip(rows, subjects, strict=True)
        ]
        part = ItemSet(
            items.items.iloc[rows].reset_index(drop=True), items.respondents, prompts,
            items.answer_types,
        )  # fmt: skip
        d, codes, texts = _decode(plan, model, part, wanted, progress, f"{system} (item {k + 1})")
        for t in wanted:
            if t not in dists:
                dists[t] = np.zeros((n, d[t].probs.shape[1]))
            width = min(dists[t].shape[1], d[t].probs.shape[1])
            dists[t][rows, :width] = d[t].probs[:, :width]
            exact = exact and d[t].exact
            codes_by_t[t][rows] = codes[t]
            for i, text in zip(rows, texts[t], strict=True):
                texts_by_t[t][i] = text
        draw = d[t_virtual].probs
        for j, (i, s) in enumerate(zip(rows, subjects, strict=True)):
            answer = plan.answer_types[items.items["question"].iat[i]]
            p = draw[j, : len(answer.support)]
            total = p.sum()
            # a failed answer leaves the turn out of the history, as a refusal would
            if total > 0:
                label = answer.labels[int(rng.choice(len(p), p=p / total))]
                history[s] = (*history.get(s, ()), (prompts[j].user, label))
    out = {t: AnswerDistribution(dists[t], exact) for t in temperatures}
    return out, {t: codes_by_t[t] for t in temperatures}, {t: texts_by_t[t] for t in temperatures}


def _write_distributions(rd, name: str, test: ItemSet, dists, plan) -> None:
    """Per-respondent answer distributions (one row per item and temperature, the probability
    of each answer as a list aligned with ``answers``), in Parquet."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return  # Parquet needs the core's [parquet] extra; predictions.* still hold the answers
    frames = []
    for t, dist in dists.items():
        frame = test.items[["subject_id", "question", "seq", "answer"]].rename(
            columns={"answer": "true_answer"}
        )
        frame.insert(0, "temperature", t)
        widths = frame["question"].map({q: len(a.support) for q, a in plan.answer_types.items()})
        frame["answers"] = [list(plan.answer_types[q].support) for q in frame["question"]]
        frame["probs"] = [row[:w].tolist() for row, w in zip(dist.probs, widths, strict=True)]
        frames.append(frame)
    if frames:
        rd.write_frame(name, pd.concat(frames, ignore_index=True))


def _run_backend(
    plan, rd, train, val, test, resume, progress, plugins, segments, all_rows, settings_rows
):
    cfg = plan.config
    timings: dict[str, float] = {}
    cls, opts = plan.backend
    backend = cls(opts, rd.path, plugins, progress)
    lcls, lopts = plan.loss
    adapter = None
    for system in cfg.backend.systems:
        metrics_file = f"systems/{system}/metrics.csv"
        if resume and rd.done(metrics_file):
            progress(f"{system}: done earlier, kept")
            all_rows.append(pd.read_csv(rd.path / metrics_file))
            settings_rows.append({"system": system, "setting": cfg.backend.name, "params": "{}"})
            continue
        tick = time.time()
        if system == "fine_tuned":
            progress(f"fine-tuning on {len(train)} answers ({len(val)} for validation)")
            adapter = backend.fine_tune(
                _examples(train), _examples(val), lcls(lopts), rd.path / "adapter", resume
            )
            timings["fine_tune"] = time.time() - tick
            tick = time.time()
        model = backend.load(adapter if system == "fine_tuned" else None)
        temperatures = list(cfg.decoding.temperatures)
        t_cal = None
        if cfg.decoding.calibrate and plan.decoder.exact and len(val):
            # the temperature is chosen on the validation split, never on the test split
            progress(f"{system}: calibrating the temperature on {len(val)} validation answers")
            val_dists, _, _ = _decode(
                plan, model, val, list(cfg.decoding.calibration_grid), progress, system
            )
            t_cal = calibrated_temperature(val_dists, val.items, plan.answer_types)
            if t_cal is not None:
                progress(f"{system}: calibrated temperature {t_cal:g} (lowest validation NLL)")
                if t_cal not in temperatures:
                    temperatures.append(t_cal)
        if cfg.prompts.memory and cfg.prompts.memory_at_evaluation == "virtual":
            dists, codes_by_t, texts_by_t = _decode_virtual(
                plan, model, test, temperatures, progress, system
            )
        else:
            dists, codes_by_t, texts_by_t = _decode(
                plan, model, test, temperatures, progress, system
            )
        frames = [
            pd.DataFrame(
                readout_rows(system, cfg.backend.name, test.items, test.respondents, dists,
                             plan.answer_types, plan.metrics, segments, calibrated=t_cal),
                columns=METRIC_COLUMNS,
            )
        ]  # fmt: skip
        preds = []
        for t in dists:
            texts = texts_by_t[t]
            has_text = any(x is not None for x in texts)
            preds.append(
                _prediction_frame(
                    test, system, cfg.backend.name, t, codes_by_t[t], texts if has_text else None
                )
            )
        _write_distributions(rd, f"systems/{system}/distributions.parquet", test, dists, plan)
        fmt = cfg.output.predictions_format
        rd.write_frame(f"systems/{system}/predictions.{fmt}", pd.concat(preds, ignore_index=True))
        frame = pd.concat(frames, ignore_index=True)
        rd.write_frame(metrics_file, frame)
        all_rows.append(frame)
        params = {"calibrated_temperature": t_cal} if t_cal is not None else {}
        settings_rows.append(
            {"system": system, "setting": cfg.backend.name, "params": json.dumps(params)}
        )
        timings[f"answer:{system}"] = time.time() - tick
    return timings
