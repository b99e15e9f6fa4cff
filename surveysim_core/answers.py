"""What an answer is: the base class of answer types, and answer distributions.

Every system's answers are held as an :class:`AnswerDistribution`: one row per respondent-item,
one column per valid answer. A sampled answer is a one-hot row; a failed answer (no parsable or
in-range answer) is an all-zero row; an exact decoder gives a full probability row whose sum is
the chance of a valid answer. Metrics are written once against this form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel


class AnswerType:
    """Base class of answer types. Subclasses set ``Options`` and fill the attributes below.

    ``support`` holds the numeric code of every valid answer in order, ``labels`` the text a
    respondent (or model) gives for each, ``ordered`` whether distances between codes mean
    something (RMSE and Wasserstein distance need it).
    """

    Options: ClassVar[type[BaseModel]]
    support: np.ndarray
    labels: list[str]
    ordered: bool = True

    def __init__(self, options: BaseModel):
        self.options = options

    def to_code(self, raw: Any) -> float | None:
        """The code of a value read from a data file, or None if it is not a valid answer."""
        raise NotImplementedError

    def bin_edges(self) -> np.ndarray:
        """Bin index of each support value, for histogram metrics such as KL."""
        return np.arange(len(self.support))

    @property
    def span(self) -> float:
        """Largest possible distance between two answers (normalises Wasserstein distance)."""
        return float(self.support[-1] - self.support[0]) if len(self.support) > 1 else 1.0

    def index_of(self, codes: np.ndarray) -> np.ndarray:
        """Column index of each code in ``support``; -1 where the code is not valid (or NaN)."""
        codes = np.asarray(codes, dtype=float)
        idx = np.searchsorted(self.support, codes)
        idx = np.clip(idx, 0, len(self.support) - 1)
        ok = np.isfinite(codes) & (self.support[idx] == codes)
        return np.where(ok, idx, -1)

    def describe(self) -> str:
        return f"{type(self).__name__}({len(self.support)} answers)"


@dataclass
class AnswerDistribution:
    """Answers of one system for ``n`` respondent-items over an answer type's support."""

    probs: np.ndarray  # shape (n, len(support)); row sums <= 1, the rest is failure mass
    exact: bool = False

    @classmethod
    def from_codes(cls, codes: np.ndarray, answer: AnswerType) -> AnswerDistribution:
        """One-hot rows for sampled answers; NaN or invalid codes give all-zero (failed) rows."""
        idx = answer.index_of(codes)
        probs = np.zeros((len(idx), len(answer.support)))
        ok = idx >= 0
        probs[np.nonzero(ok)[0], idx[ok]] = 1.0
        return cls(probs, exact=False)

    @classmethod
    def constant(cls, row: np.ndarray, n: int) -> AnswerDistribution:
        """Every respondent answers from the same distribution (null models)."""
        return cls(np.tile(np.asarray(row, dtype=float), (n, 1)), exact=True)

    def expected(self, answer: AnswerType) -> np.ndarray:
        """E[a] of each row given a valid answer (NaN for a row with no valid mass): the point
        prediction of the ``expected`` readout."""
        probs = self.probs[:, : len(answer.support)]
        mass = probs.sum(axis=1)
        total = probs @ np.asarray(answer.support, float)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(mass > 0, total / np.where(mass > 0, mass, 1.0), np.nan)

    def subset(self, mask: np.ndarray) -> AnswerDistribution:
        return AnswerDistribution(self.probs[mask], self.exact)

    def __len__(self) -> int:
        return self.probs.shape[0]


def answer_type_from_spec(spec: dict[str, Any], registry: Any, where: str) -> AnswerType:
    """Build an answer type from a survey's ``answer:`` mapping (``type`` plus its options)."""
    from surveysim_core.config import validate_options

    spec = dict(spec)
    type_name = spec.pop("type", None)
    if type_name is None:
        from surveysim_core.errors import ConfigError

        raise ConfigError(f"{where}.type: missing; say which answer type (e.g. integer)")
    cls = registry.get(type_name, where=f"{where}.type")
    options = validate_options(cls, spec, where)
    return cls(options)
