"""The plan stage: a run configuration resolved into the plugin objects it names.

Everything a run needs is looked up and validated here, before any data is read, so that a
misspelt plugin or option is an error at ``surveysim validate`` time, not an hour into a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from surveysim_core.answers import AnswerType, answer_type_from_spec
from surveysim_core.config import RunConfig, validate_options
from surveysim_core.errors import ConfigError, SurveysimError
from surveysim_core.plugins import Plugins
from surveysim_core.prompts import PromptRenderer, default_templates
from surveysim_core.protocols import Backend
from surveysim_core.rundir import stderr_progress
from surveysim_core.survey import Survey
from surveysim_core.survey_files import resolve_survey
from surveysim_core.sweep import variant_configs


@dataclass
class Plan:
    """A validated run configuration with every plugin object it names, resolved.

    ``baselines`` are ``(name, (class, options))``; ``backend`` and ``loss`` are
    ``(class, options)`` (the backend is built when the run starts, since it needs the run
    directory); ``lm_systems`` are the backend's system kinds this run evaluates, in order.
    """

    config: RunConfig
    source: str
    survey: Survey
    answer_types: dict[str, AnswerType]
    metrics: dict[str, Any]
    parsers: dict[str, list[Any]]
    baselines: list[tuple[str, Any]]
    renderer: PromptRenderer
    backend: tuple[type, Any] | None = None
    loss: tuple[type, Any] | None = None
    decoder: Any = None
    sampler: Any = None
    lm_systems: list[str] = field(default_factory=list)
    segments: list[str] = field(default_factory=list)
    #: every language-model configuration of the run (the base one first; more with
    #: ``variants`` or a ``sweep``)
    lm_variants: list[LMVariant] = field(default_factory=list)


@dataclass
class LMVariant:
    """One language-model configuration, resolved: ``label`` names it in results ("" when the
    run has only one); ``config`` is the run configuration with its changes applied."""

    label: str
    config: RunConfig
    backend: tuple[type, Any]
    loss: tuple[type, Any]
    decoder: Any
    kinds: list[str]


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
    # checked with or without a backend: a misspelt decoder is an error now, not on the GPU run
    dec = config.decoding
    base_decoder = resolve("decoders", dec.decoder, dec.options, "decoding", name_key="decoder")
    decoder = base_decoder[0](base_decoder[1]) if base_decoder else None
    lm_variants: list[LMVariant] = []
    variants = _errors_of(lambda: variant_configs(config, source), errors) or []
    for variant in variants if config.backend is not None else []:
        at = f"({variant.where}) " if variant.where else ""
        ref, dec = variant.config.backend, variant.config.decoding
        assert ref is not None
        backend = resolve("backends", ref.name, ref.options, f"{at}backend")
        loss = resolve("losses", ref.loss.name, ref.loss.options, f"{at}backend.loss")
        kinds = (
            _errors_of(lambda b=backend, r=ref: backend_systems(b[0], r, source), errors) or []
            if backend is not None
            else []
        )
        resolved = (
            resolve("decoders", dec.decoder, dec.options, f"{at}decoding", "decoder")
            if variant.changes
            else base_decoder
        )
        if backend is not None and loss is not None and resolved is not None:
            variant_decoder = resolved[0](resolved[1])
            lm_variants.append(
                LMVariant(variant.label, variant.config, backend, loss, variant_decoder, kinds)
            )
    base = lm_variants[0] if lm_variants else None
    backend = base.backend if base else None
    loss = base.loss if base else None
    lm_systems = base.kinds if base else []
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
    if errors:  # a problem shared by every point of a sweep is said once
        raise ConfigError("\n".join(dict.fromkeys(errors)))
    segments = config.evaluation.segments or [
        s for s in spec.segments if s in spec.demographics and not spec.demographics[s].multi
    ]
    return Plan(
        config, source, survey, answer_types, metrics, parsers, baselines, renderer,
        backend, loss, decoder, sampler, lm_systems, segments, lm_variants,
    )  # fmt: skip


def backend_systems(backend_cls: type, ref: Any, source: str) -> list[str]:
    """The system kinds a run evaluates: ``backend.systems``, each one the backend declares
    (its ``system_kinds``), or all of them when the key is not given."""
    declared = getattr(backend_cls, "system_kinds", None)
    if declared is None:
        # an options-only stand-in (``surveysim validate`` imports no backend), or a backend
        # written before system kinds: the base class's kinds, and names it cannot check
        return list(Backend.system_kinds) if ref.systems is None else list(ref.systems)
    declared = list(declared)
    if not declared:
        raise ConfigError(f"{source}: backend.name: backend {ref.name!r} declares no system kinds")
    wanted = declared if ref.systems is None else list(ref.systems)
    unknown = [k for k in wanted if k not in declared]
    if unknown:
        raise ConfigError(
            f"{source}: backend.systems: {unknown} not a system kind of backend {ref.name!r}"
            f" (it declares {', '.join(declared)})"
        )
    if len(set(wanted)) != len(wanted):
        raise ConfigError(f"{source}: backend.systems: a kind is listed twice: {wanted}")
    return wanted


def _registered_templates(plugins: Plugins) -> dict[str, str]:
    registry = plugins.templates
    for name, plugin in plugins.template_overrides():
        stderr_progress(f"warning: plugin {plugin!r} overrides the core template {name!r}")
    return {name: registry.get(name) for name in registry}
