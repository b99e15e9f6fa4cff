"""The interfaces plugins implement, and the objects the core hands them.

These are plain classes to subclass (or duck-type). A plugin object that takes options declares
a pydantic ``Options`` model (``extra="forbid"``); the core validates the options from the run
configuration with it and passes the validated model to the constructor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import pandas as pd
from pydantic import BaseModel

from surveysim_core.answers import AnswerDistribution, AnswerType


@dataclass(frozen=True)
class Prompt:
    """A chat prompt: the persona (system) and the survey question (user), after the
    respondent's earlier questions and answers (``history``: (question, answer) turns, empty
    unless respondent memory is on)."""

    system: str
    user: str
    history: tuple[tuple[str, str], ...] = ()


@dataclass
class ItemSet:
    """The respondent-items of one split, with everything a model or baseline needs.

    ``items`` has one row per answer: ``subject_id``, ``question``, context columns, ``seq``,
    ``answer`` (code) and ``answer_text`` (the label a respondent writes); ``prompts[i]`` is the
    rendered prompt of ``items.iloc[i]``; ``respondents`` are the demographics, indexed by
    ``subject_id``.
    """

    items: pd.DataFrame
    respondents: pd.DataFrame
    prompts: list[Prompt]
    answer_types: dict[str, AnswerType]

    def __len__(self) -> int:
        return len(self.items)

    def question_mask(self, qid: str) -> np.ndarray:
        return (self.items["question"] == qid).to_numpy()

    def features(self) -> pd.DataFrame:
        """Items joined with their respondent's demographics (for baselines)."""
        return self.items.join(self.respondents, on="subject_id")


@dataclass
class Progress:
    """Progress reporting handed to long-running plugin code (``step`` may be called often)."""

    report: Callable[[str], None] = print

    def __call__(self, message: str) -> None:
        self.report(message)


class Parser(Protocol):
    def __call__(self, text: str, answer: AnswerType) -> float | None:
        """The answer code in ``text``, or None when no answer can be read from it."""


class Metric:
    """Compares human answers (codes) with a system's answers (a distribution per item)."""

    name: ClassVar[str] = ""
    #: "population" metrics compare histograms only; "individual" ones pair respondents
    level: ClassVar[str] = "population"
    #: whether the metric needs distances between answers (ordered answer types only)
    needs_order: ClassVar[bool] = False
    #: whether the metric needs exact distributions (e.g. log-likelihood)
    needs_exact: ClassVar[bool] = False
    #: True: lower values are better (a divergence, an error); False: higher are better (an
    #: accuracy); None: neither (a description). The summary picks a grid's best setting by it.
    lower_is_better: ClassVar[bool | None] = None
    #: whether the run summary shows this metric
    summary: ClassVar[bool] = False
    #: whether ``__call__`` takes ``weights=`` and ``model_weights=`` (survey weights, one per
    #: row; surveysim_core.weights); a metric without them is computed unweighted, with a warning
    weighted: ClassVar[bool] = False

    #: whether :meth:`point` scores point predictions (e.g. the ``expected`` readout, E[a])
    scores_points: ClassVar[bool] = False
    #: whether the metric of the humans' own answers as points (``point(human, human)``) says
    #: something worth showing beside the systems' (a spread, not an error that is 0): the
    #: noise floors then carry a ``floor:humans`` row of it
    describes_humans: ClassVar[bool] = False

    def __call__(self, human: np.ndarray, model: AnswerDistribution, answer: AnswerType) -> float:
        raise NotImplementedError

    def point(self, human: np.ndarray, predicted: np.ndarray, answer: AnswerType) -> float:
        """The metric of point predictions (one number per item, NaN = none); optional."""
        raise NotImplementedError


@dataclass
class BaselinePrediction:
    """One hyper-parameter setting's answers, aligned with ``test.items`` (NaN = no answer)."""

    setting: str
    params: dict[str, Any]
    codes: np.ndarray
    #: the mean of the distribution the codes were drawn from, per item, where the baseline
    #: samples its answers (the marginal, the random answer): scored as the ``expected`` readout
    #: so that a point prediction is compared with the language models' E[a], like with like
    expected: np.ndarray | None = None


class Baseline:
    """Predicts answers from demographics (and context) without a language model."""

    Options: ClassVar[type[BaseModel] | None] = None
    #: whether :meth:`predict` gives ``expected`` (the mean of a sampling baseline's
    #: distribution); part of its cache key, so that answers cached without it are not reused
    gives_expected: ClassVar[bool] = False

    def __init__(self, options: BaseModel | None = None):
        self.options = options

    def predict(self, train: ItemSet, test: ItemSet, seed: int) -> Iterable[BaselinePrediction]:
        raise NotImplementedError


@dataclass
class Example:
    """A training example: prompt, the answer text, and what the answer means."""

    prompt: Prompt
    answer_text: str
    question: str
    answer_code: float
    answer_type: AnswerType
    subject_id: str = ""


class Model(Protocol):
    """A loaded model that can answer prompts (returned by :meth:`Backend.load`)."""

    def generate(
        self, prompts: Sequence[Prompt], temperature: float, max_new_tokens: int, seed: int
    ) -> list[str]:
        """One generated continuation per prompt; temperature 0 is greedy."""

    def answer_distribution(
        self, prompts: Sequence[Prompt], answers: Sequence[str], temperatures: Sequence[float]
    ) -> dict[float, np.ndarray]:
        """Exact probability of each answer string per prompt, per temperature (optional)."""


class Backend:
    """Fine-tunes a language model on training examples and loads models that answer.

    A backend declares the language-model systems it offers in ``system_kinds``; a run
    evaluates those its configuration names in ``backend.systems`` (default: all). The core
    knows no kind by name: it asks :meth:`adapter_for` which adapter each kind answers with.
    """

    Options: ClassVar[type[BaseModel] | None] = None
    #: ``zero_shot`` answers with the pre-trained model, ``fine_tuned`` with an adapter trained
    #: on the training split; a backend with other kinds overrides this and :meth:`adapter_for`
    system_kinds: ClassVar[tuple[str, ...]] = ("zero_shot", "fine_tuned")
    #: options that only matter to training: a kind that does not train ignores them, so that
    #: a sweep over them shares one zero-shot pass
    training_options: ClassVar[frozenset[str]] = frozenset()
    #: bumped by the backend when its training produces another adapter from the same options
    #: and data (a fixed bug, a changed batching): the cache then trains again instead of
    #: reusing adapters trained before (and their answers); empty: no version
    training_version: ClassVar[str] = ""

    def __init__(self, options: BaseModel | None, run_dir: Path, plugins: Any, progress: Progress):
        self.options = options
        self.run_dir = run_dir
        self.plugins = plugins
        self.progress = progress

    def fine_tune(
        self,
        train: Sequence[Example],
        val: Sequence[Example],
        loss: Any,
        out_dir: Path,
        resume: bool,
    ) -> Path:
        """Train, keep the best epoch by validation loss, and return the adapter folder."""
        raise NotImplementedError

    def load(self, adapter: Path | None) -> Model:
        """The pre-trained model (``adapter`` None) or the fine-tuned one."""
        raise NotImplementedError

    @classmethod
    def trains(cls, kind: str) -> bool:
        """Whether system ``kind`` learns from the training split (its answers then depend on
        the training data; a kind that does not train keeps its cached answers when only the
        training data changes)."""
        return kind != "zero_shot"

    @classmethod
    def system_settings(
        cls, kind: str, options: dict[str, Any], loss: dict[str, Any]
    ) -> dict[str, Any]:
        """What the answers of system ``kind`` depend on, of the backend's options and the loss
        (systems with equal settings share one answer pass)."""
        if not cls.trains(kind):
            return {"options": {k: v for k, v in options.items() if k not in cls.training_options}}
        version = {"training_version": cls.training_version} if cls.training_version else {}
        return {"options": options, "loss": loss, **version}

    def adapter_for(
        self,
        kind: str,
        train: Sequence[Example],
        val: Sequence[Example],
        loss: Any,
        out_dir: Path,
        resume: bool,
    ) -> Path | None:
        """The adapter system ``kind`` answers with (None: the pre-trained model), trained
        into ``out_dir`` first where the kind needs training."""
        if kind == "zero_shot":
            return None
        if kind == "fine_tuned":
            return self.fine_tune(train, val, loss, out_dir, resume)
        raise ValueError(f"{type(self).__name__}: unknown system kind {kind!r}")


@dataclass
class Decoded:
    """A decoder's answers at one temperature for a list of prompts."""

    distribution: AnswerDistribution
    codes: np.ndarray  # one answer code per prompt (sampled, greedy, ...); NaN = failure
    texts: list[str] | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)


class Decoder:
    """Draws answers from a model: sampling, or an exact answer distribution."""

    Options: ClassVar[type[BaseModel] | None] = None
    #: whether :meth:`decode` returns exact distributions (then all temperatures cost one pass,
    #: and the run also scores the calibrated readout)
    exact: ClassVar[bool] = False

    def __init__(self, options: BaseModel | None = None):
        self.options = options

    def decode(
        self,
        model: Model,
        prompts: Sequence[Prompt],
        answer: AnswerType,
        parse: Callable[[str], float | None],
        temperatures: Sequence[float],
        max_new_tokens: int,
        seed: int,
    ) -> dict[float, Decoded]:
        raise NotImplementedError


@dataclass
class SystemAnswers:
    """One setting's (or one temperature's) answers to the test items, aligned with
    ``test.items``: a distribution per item, and point answers where the system gives them."""

    setting: str
    distribution: AnswerDistribution
    codes: np.ndarray | None = None  # one answer code per item; NaN = no answer
    temperature: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    texts: list[str | None] | None = None
    #: a point prediction per item beside sampled ``codes`` (a sampling baseline's mean)
    expected: np.ndarray | None = None


@dataclass
class SystemResult:
    """What a system returns: its answers per setting or temperature, and its settings."""

    system: str
    settings: dict[str, Any]
    answers: list[SystemAnswers]
    #: the temperature chosen on the validation split (its answers are among ``answers``),
    #: scored as the ``calibrated`` readout
    calibrated_temperature: float | None = None
    #: the same settings' answers to the validation items (a baseline's, for choosing its best
    #: setting on validation: :mod:`surveysim_core.selection`); None where not given
    validation: list[SystemAnswers] | None = None


class System(Protocol):
    """Anything that answers the test items: a baseline, a language model, ...

    ``name`` labels its rows in ``metrics.csv``; ``settings`` is everything that determines its
    answers (hashed into the ``system_id``).
    """

    name: str
    settings: dict[str, Any]

    def run(self, train: ItemSet, val: ItemSet, test: ItemSet) -> SystemResult:
        """Fit on ``train`` (and ``val``) where the system learns, and answer ``test``."""


class Sampler:
    """Draws the demographics of virtual participants."""

    Options: ClassVar[type[BaseModel] | None] = None

    def __init__(self, options: BaseModel | None = None):
        self.options = options

    def sample(
        self, respondents: pd.DataFrame, splits: dict[str, list[str]], seed: int, spec: Any = None
    ) -> pd.DataFrame:
        """Return virtual participants' demographics, indexed by a subject id."""
        raise NotImplementedError
