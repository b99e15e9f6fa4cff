"""The systems stage: everything that answers the test items, behind one :class:`System`
interface. A baseline plugin becomes a system through :class:`BaselineSystem`; each system kind
a language-model backend declares becomes one through :class:`LanguageModelSystem`.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from surveysim_core.answering import (
    Chunk,
    answer_chunks,
    cached_temperatures,
    decode_items,
    stack_distributions,
)
from surveysim_core.answers import AnswerDistribution, AnswerType
from surveysim_core.cache import Cache, digest, items_fingerprint
from surveysim_core.errors import SurveysimError
from surveysim_core.items import examples
from surveysim_core.plan import LMVariant, Plan
from surveysim_core.protocols import (
    Backend,
    ItemSet,
    Progress,
    Prompt,
    System,
    SystemAnswers,
    SystemResult,
)
from surveysim_core.scoring import calibrated_temperature


@dataclass(frozen=True)
class Stage:
    """One cached step of a system (an adapter, answers at one temperature, a baseline's
    predictions) and whether the result cache already holds it."""

    system: str
    what: str
    cached: bool


def distribution_of_codes(
    codes: np.ndarray, test: ItemSet, answer_types: Mapping[str, AnswerType]
) -> AnswerDistribution:
    """Point answers as a (sampled, not exact) distribution per item."""
    parts = []
    for qid, answer in answer_types.items():
        mask = test.question_mask(qid)
        if mask.any():
            parts.append((mask, AnswerDistribution.from_codes(codes[mask], answer)))
    return stack_distributions(parts, len(test))


class BaselineSystem:
    """A :class:`~surveysim_core.protocols.Baseline` plugin as a system: each of its settings'
    point answers, scored as a distribution."""

    def __init__(self, name: str, cls: type, options: Any, plan: Plan, cache: Cache | None = None):
        self.name = name
        self.cache = cache
        self.cls = cls
        self.options = options
        self.plan = plan
        self.settings = {
            "kind": "baseline",
            "baseline": name,
            "options": options.model_dump(mode="json") if options is not None else {},
            "seed": plan.config.evaluation.seed,
        }

    def run(self, train: ItemSet, val: ItemSet, test: ItemSet) -> SystemResult:
        """Each setting's answers to the test items, and to the validation items (where the
        run has validation respondents) so that the best setting is chosen there."""
        answers = self._cached_predict(train, test, "baseline", "predictions")
        validation = (
            self._cached_predict(train, val, "baseline-validation", "validation predictions")
            if len(val)
            else None
        )
        return SystemResult(self.name, self.settings, answers, validation=validation)

    def _cached_predict(
        self, train: ItemSet, items: ItemSet, kind: str, what: str
    ) -> list[SystemAnswers]:
        """:meth:`_predict` of ``items``, from the result cache where there."""
        key = ""
        if self.cache is not None:
            key = self._key(train, items, kind)
            cached = self.cache.get_answers("answers", key)
            if cached is not None:
                self.cache.reused.append(f"{self.name}: {what}")
                return cached
        answers = self._predict(train, items)
        if self.cache is not None:
            self.cache.put_answers("answers", key, answers)
            self.cache.computed.append(f"{self.name}: {what}")
        return answers

    def _key(self, train: ItemSet, items: ItemSet, kind: str) -> str:
        # a baseline that gives its mean too: not the entries cached before it did
        expected = ("expected",) if getattr(self.cls, "gives_expected", False) else ()
        return digest(
            kind, self.settings, survey_fingerprint(self.plan),
            items_fingerprint(train, False), items_fingerprint(items, False), *expected,
        )  # fmt: skip

    def reuse_plan(self, cache: Cache, train: ItemSet, val: ItemSet, test: ItemSet) -> list[Stage]:
        """What :meth:`run` would take from ``cache`` and what it would compute (reads only)."""
        stages = [
            Stage(
                self.name, "predictions", cache.has("answers", self._key(train, test, "baseline"))
            )
        ]
        if len(val):
            key = self._key(train, val, "baseline-validation")
            stages.append(Stage(self.name, "validation predictions", cache.has("answers", key)))
        return stages

    def _predict(self, train: ItemSet, test: ItemSet) -> list[SystemAnswers]:
        baseline = self.cls(self.options)
        answers = []
        for pred in baseline.predict(train, test, self.plan.config.evaluation.seed):
            codes = np.asarray(pred.codes, dtype=float)
            if codes.shape != (len(test),):
                raise SurveysimError(
                    f"baseline {self.name!r} returned {codes.shape} answers for {len(test)} items"
                )
            dist = distribution_of_codes(codes, test, self.plan.answer_types)
            expected = getattr(pred, "expected", None)
            if expected is not None:
                expected = np.asarray(expected, dtype=float)
                if expected.shape != (len(test),):
                    raise SurveysimError(
                        f"baseline {self.name!r} returned {expected.shape} expected answers"
                        f" for {len(test)} items"
                    )
            answers.append(
                SystemAnswers(pred.setting, dist, codes, None, dict(pred.params), None, expected)
            )
        return answers


class LanguageModelSystem:
    """One system kind of a language-model backend (``zero_shot``, ``fine_tuned``, ...) in one
    language-model configuration: the backend picks the adapter for the kind, and the decoder
    draws its answers."""

    def __init__(
        self,
        kind: str,
        backend: Backend,
        variant: LMVariant,
        plan: Plan,
        adapter_dir: Path,
        resume: bool,
        progress: Progress,
        cache: Cache | None = None,
    ):
        cfg = variant.config
        self.cache = cache
        assert cfg.backend is not None
        self.name = kind
        self.kind = kind
        self.backend = backend
        self.variant = variant
        self.plan = plan
        self.adapter_dir = adapter_dir
        self.resume = resume
        self.progress = progress
        self.timings: dict[str, float] = {}
        #: measured while answering: positions run through the model (where the model counts
        #: them, as ``forward_tokens``) per second of decoding
        self.throughput: dict[str, float] = {}
        cls, opts = variant.backend
        _, lopts = variant.loss
        options = opts.model_dump(mode="json") if opts is not None else dict(cfg.backend.options)
        loss = {
            "name": cfg.backend.loss.name,
            "options": lopts.model_dump(mode="json") if lopts is not None else {},
        }
        system_settings = getattr(cls, "system_settings", None) or Backend.system_settings
        self.settings = {
            "kind": kind,
            "backend": cfg.backend.name,
            **system_settings(kind, options, loss),
            "decoding": cfg.decoding.model_dump(mode="json"),
            "prompts": cfg.prompts.model_dump(mode="json"),
        }
        self.learns = cls.trains(kind) if hasattr(cls, "trains") else kind != "zero_shot"

    def _keys(self, train: ItemSet, val: ItemSet) -> tuple[str, dict[str, Any], str]:
        """The adapter's cache key, what answers at one temperature depend on, and the survey's
        fingerprint."""
        # what training depends on: not decoding, and prompts only through the prompt texts
        # (which the items' fingerprint holds)
        model_settings = {
            k: v for k, v in self.settings.items() if k not in ("decoding", "prompts")
        }
        # what answers at one temperature depend on (not which temperatures, not calibration)
        ignored = {"temperatures", "calibrate", "calibration_grid"}
        decoding = {k: v for k, v in self.settings["decoding"].items() if k not in ignored}
        decoding["prompts"] = self.settings["prompts"]  # known or virtual earlier answers
        survey = survey_fingerprint(self.plan)
        # what the model answering is: the pre-trained one, or one trained on this data
        adapter_key = (
            digest(
                "adapter", model_settings, survey,
                items_fingerprint(train, True), items_fingerprint(val, True),
            )
            if self.learns
            else digest("pre-trained", model_settings)
        )  # fmt: skip
        return adapter_key, decoding, survey

    def _answer_key(
        self, adapter_key: str, decoding: dict[str, Any], test: ItemSet, t: float
    ) -> str:
        return digest("lm-answers", adapter_key, decoding, items_fingerprint(test, True), t)

    def _calibration_key(
        self, adapter_key: str, decoding: dict[str, Any], val: ItemSet
    ) -> str | None:
        """The calibrated temperature's cache key; None when the run does not calibrate."""
        cfg = self.variant.config.decoding
        if not (cfg.calibrate and getattr(self.variant.decoder, "exact", False) and len(val)):
            return None
        grid = list(cfg.calibration_grid)
        return digest("calibration", adapter_key, decoding, items_fingerprint(val, True), grid)

    def reuse_plan(self, cache: Cache, train: ItemSet, val: ItemSet, test: ItemSet) -> list[Stage]:
        """What :meth:`run` would take from ``cache`` and what it would compute (reads only)."""
        adapter_key, decoding, _ = self._keys(train, val)
        stages = []
        if self.learns:
            stages.append(Stage(self.name, "adapter", cache.has("adapters", adapter_key)))
        temperatures = list(self.variant.config.decoding.temperatures)
        cal_key = self._calibration_key(adapter_key, decoding, val)
        if cal_key is not None:
            value = (
                cache.get_value("calibration", cal_key)
                if cache.has("calibration", cal_key)
                else None
            )
            stages.append(Stage(self.name, "calibrated temperature", value is not None))
            if value is not None and value.get("temperature") not in (None, *temperatures):
                temperatures.append(value["temperature"])
        keys = {t: self._answer_key(adapter_key, decoding, test, t) for t in temperatures}
        cached = cached_temperatures(cache, Chunk(list(range(len(test))), keys))
        stages += [Stage(self.name, f"answers at t={t:g}", t in cached) for t in temperatures]
        return stages

    def run(self, train: ItemSet, val: ItemSet, test: ItemSet) -> SystemResult:
        """Answers at every temperature (and at the calibrated one): from the cache where
        there, else from the model (with the adapter from the cache where there, else
        trained). The model is loaded only when something is missing."""
        cfg = self.variant.config
        temperatures = list(cfg.decoding.temperatures)
        adapter_key, decoding, survey = self._keys(train, val)
        loaded: list[Any] = []

        def model() -> Any:
            if not loaded:
                adapter = self._adapter(train, val, adapter_key)
                loaded.append(self.backend.load(adapter))
            return loaded[0]

        t_cal = self._calibrated_temperature(model, val, adapter_key, decoding, survey)
        if t_cal is not None and t_cal not in temperatures:
            temperatures.append(t_cal)
        answer_keys = {t: self._answer_key(adapter_key, decoding, test, t) for t in temperatures}
        prompts = cfg.prompts
        decode = (
            self._decode_virtual
            if prompts.memory and prompts.memory_at_evaluation == "virtual"
            else self._decode
        )

        def answer(rows: list[int], missing: list[float]) -> dict[float, SystemAnswers]:
            # the test set is one chunk: its rows are all of test
            answering = model()  # loaded (or trained) before the clock starts
            tokens_before = getattr(answering, "forward_tokens", None)
            tick = time.perf_counter()
            decoded_all = decode(answering, test, missing)
            seconds = time.perf_counter() - tick
            tokens_after = getattr(answering, "forward_tokens", None)
            if isinstance(tokens_before, int) and isinstance(tokens_after, int) and seconds > 0:
                self.throughput = {
                    "forward_tokens": tokens_after - tokens_before,
                    "answer_seconds": seconds,
                    "forward_tokens_per_second": round((tokens_after - tokens_before) / seconds, 1),
                }
            self.timings["answer"] = seconds
            return decoded_all

        chunk = Chunk(list(range(len(test))), answer_keys)
        found = answer_chunks([chunk], len(test), answer, self.cache, self.name, self.progress)
        params = {"calibrated_temperature": t_cal} if t_cal is not None else {}
        answers = [replace(found[t], params=params) for t in temperatures]
        return SystemResult(self.name, self.settings, answers, calibrated_temperature=t_cal)

    def _calibrated_temperature(
        self, model: Callable[[], Any], val: ItemSet, adapter_key: str, decoding: dict, survey: str
    ) -> float | None:
        """The temperature of ``calibration_grid`` with the lowest NLL on the validation split
        (never on the test split), with an exact decoder; None when not asked for."""
        key = self._calibration_key(adapter_key, decoding, val)
        if key is None:
            return None
        grid = list(self.variant.config.decoding.calibration_grid)
        cached = self.cache.get_value("calibration", key) if self.cache is not None else None
        if cached is not None:
            t_cal = cached["temperature"]
            self.cache.reused.append(f"{self.name}: calibrated temperature")  # type: ignore[union-attr]
        else:
            loaded = model()  # trained first where it learns: say "calibrating" after that
            self.progress(
                f"{self.name}: calibrating the temperature on {len(val)} validation answers"
            )
            decoded = self._decode(loaded, val, grid)
            t_cal = calibrated_temperature(
                {t: a.distribution for t, a in decoded.items()}, val.items, self.plan.answer_types
            )
            if self.cache is not None:
                self.cache.put_value("calibration", key, {"temperature": t_cal})
                self.cache.computed.append(f"{self.name}: calibrated temperature")
        if t_cal is not None:
            self.progress(f"{self.name}: calibrated temperature {t_cal:g} (lowest validation NLL)")
        return t_cal

    def _adapter(self, train: ItemSet, val: ItemSet, key: str) -> Path | None:
        """The adapter this kind answers with: from the cache, or from the backend."""
        if self.cache is not None and self.learns:
            entry = self.cache.entry("adapters", key)
            if entry is not None:
                self.cache.reused.append(f"{self.name}: adapter")
                self.progress(f"{self.name}: adapter from the cache ({entry})")
                return entry
        tick = time.time()
        lcls, lopts = self.variant.loss
        adapter = self.backend.adapter_for(
            self.kind, examples(train), examples(val), lcls(lopts), self.adapter_dir, self.resume
        )
        self.timings["prepare"] = time.time() - tick
        if adapter is not None and self.cache is not None:
            self.cache.put_folder("adapters", key, Path(adapter))
            self.cache.computed.append(f"{self.name}: adapter")
        return adapter

    def _decode_virtual(
        self, model: Any, test: ItemSet, temperatures: list[float]
    ) -> dict[float, SystemAnswers]:
        """Fully virtual respondents with memory: each respondent's items are answered in
        order, and the history each item sees holds the model's own earlier answers, drawn
        (seeded) from its distribution at ``prompts.virtual_temperature``, not the person's."""
        cfg = self.variant.config
        t_virtual = cfg.prompts.virtual_temperature
        wanted = list(dict.fromkeys([*temperatures, t_virtual]))
        position = test.items.groupby("subject_id", sort=False).cumcount().to_numpy()
        subjects_all = test.items["subject_id"].to_numpy()
        rng = np.random.default_rng(cfg.decoding.seed)
        history: dict[str, tuple[tuple[str, str], ...]] = {}
        n = len(test)
        probs: dict[float, np.ndarray] = {}
        codes = {t: np.full(n, np.nan) for t in wanted}
        texts: dict[float, list[str | None]] = {t: [None] * n for t in wanted}
        exact = True
        for k in range(int(position.max()) + 1 if n else 0):
            rows = np.nonzero(position == k)[0]
            prompts = [
                Prompt(
                    test.prompts[i].system, test.prompts[i].user, history.get(subjects_all[i], ())
                )
                for i in rows
            ]
            part = ItemSet(
                test.items.iloc[rows].reset_index(drop=True), test.respondents, prompts,
                test.answer_types,
            )  # fmt: skip
            decoded = self._decode(model, part, wanted)
            for t in wanted:
                d = decoded[t]
                if t not in probs:
                    probs[t] = np.zeros((n, d.distribution.probs.shape[1]))
                width = min(probs[t].shape[1], d.distribution.probs.shape[1])
                probs[t][rows, :width] = d.distribution.probs[:, :width]
                exact = exact and d.distribution.exact
                codes[t][rows] = d.codes
                for i, text in zip(rows, d.texts or [None] * len(rows), strict=True):
                    texts[t][i] = text
            draw = decoded[t_virtual].distribution.probs
            for j, i in enumerate(rows):
                answer = self.plan.answer_types[test.items["question"].iat[i]]
                p = draw[j, : len(answer.support)]
                total = p.sum()
                # a failed answer leaves the turn out of the history, as a refusal would
                if total > 0:
                    label = answer.labels[int(rng.choice(len(p), p=p / total))]
                    subject = subjects_all[i]
                    history[subject] = (*history.get(subject, ()), (prompts[j].user, label))
        setting = cfg.backend.name  # type: ignore[union-attr]
        out = {}
        for t in temperatures:
            shown = texts[t] if any(x is not None for x in texts[t]) else None
            out[t] = SystemAnswers(
                setting, AnswerDistribution(probs[t], exact), codes[t], t, {}, shown
            )
        return out

    def _decode(
        self, model: Any, test: ItemSet, temperatures: list[float]
    ) -> dict[float, SystemAnswers]:
        cfg = self.variant.config
        return decode_items(
            self.plan, self.variant.decoder, model, test.prompts,
            test.items["question"].to_numpy(), temperatures, cfg.decoding.max_new_tokens,
            cfg.decoding.seed, cfg.backend.name, self.progress, self.name,  # type: ignore[union-attr]
        )  # fmt: skip


def survey_fingerprint(plan: Plan) -> str:
    """A hash of the survey's definition (questions, answers, parsers, templates)."""
    return digest(plan.survey.spec.model_dump(mode="json"), sorted(plan.answer_types))


def build_systems(
    plan: Plan,
    run_dir: Path,
    plugins: Any,
    resume: bool,
    progress: Progress,
    cache: Cache | None = None,
) -> list[System]:
    """Every system the plan names: baselines first, then each backend kind of each
    language-model configuration. Kinds whose settings are equal in several configurations
    (a zero-shot model under a sweep of training options) are one system, run once."""
    systems: list[System] = [
        BaselineSystem(name, cls, opts, plan, cache) for name, (cls, opts) in plan.baselines
    ]
    lm: list[LanguageModelSystem] = []
    seen: set[str] = set()
    for variant in plan.lm_variants:
        cls, opts = variant.backend
        backend = _LazyBackend(cls, opts, run_dir, plugins, progress)
        for kind in variant.kinds:
            system = LanguageModelSystem(
                kind, backend, variant, plan, run_dir / "adapter", resume, progress, cache,  # type: ignore[arg-type]
            )  # fmt: skip
            sid = system_id(system.settings)
            if sid not in seen:
                seen.add(sid)
                lm.append(system)
    for system in lm:
        # a kind that has one system keeps its plain name (and the run's adapter folder)
        if sum(s.kind == system.kind for s in lm) > 1:
            label = system.variant.label or "base"
            system.name = safe_name(f"{system.kind}@{label}")
            system.adapter_dir = run_dir / "adapters" / system_id(system.settings)
    systems.extend(lm)
    return systems


def safe_name(name: str) -> str:
    """``name`` usable as a folder name on every system."""
    return re.sub(r"[^A-Za-z0-9._=,@+-]", "_", name)


def system_id(settings: dict[str, Any]) -> str:
    """A short id that is the same for the same settings, in any run, on any machine."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


class _LazyBackend:
    """The backend, built on first use: a resumed run whose language-model systems are all
    done never loads it (building one can mean loading torch)."""

    def __init__(self, cls: type, options: Any, run_dir: Path, plugins: Any, progress: Progress):
        self._args = (cls, options, run_dir, plugins, progress)
        self._backend: Backend | None = None

    def _get(self) -> Backend:
        if self._backend is None:
            cls, options, run_dir, plugins, progress = self._args
            self._backend = cls(options, run_dir, plugins, progress)
        return self._backend

    def adapter_for(self, *args: Any) -> Path | None:
        backend = self._get()
        if not hasattr(backend, "adapter_for"):  # a duck-typed backend from before system kinds
            return Backend.adapter_for(backend, *args)
        return backend.adapter_for(*args)

    def load(self, adapter: Path | None) -> Any:
        return self._get().load(adapter)
