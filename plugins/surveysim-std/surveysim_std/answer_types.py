"""Answer types: an integer scale (0-100, 1-7, ...) and a categorical choice."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from surveysim_core.answers import AnswerType

_PLAIN_NUMBER = re.compile(r"[+-]?[0-9]+(\.[0-9]*)?", re.ASCII)


class IntegerOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min: int = Field(description="Smallest valid answer.")
    max: int = Field(description="Largest valid answer.")
    bin_width: int = Field(1, ge=1, description="Histogram bin width for KL (paper: 10 on 0-100).")
    labels: dict[int, str] = Field(
        default_factory=dict, description="Words for some points of the scale (for prompts)."
    )

    @model_validator(mode="after")
    def _range(self) -> IntegerOptions:
        if self.max <= self.min:
            raise ValueError("max must be larger than min")
        return self


class IntegerAnswer(AnswerType):
    """Whole numbers from ``min`` to ``max``; the model writes the number in digits."""

    Options = IntegerOptions
    ordered = True

    def __init__(self, options: IntegerOptions):
        super().__init__(options)
        self.support = np.arange(options.min, options.max + 1, dtype=float)
        self.labels = [str(v) for v in range(options.min, options.max + 1)]

    def to_code(self, raw: Any) -> float | None:
        """The answer as a number, or None. Text must be plain ASCII digits (``7``, ``-3``,
        ``7.0``): ``1e1``, ``5_0``, Arabic-Indic digits and booleans are not answers, although
        Python's ``float`` would accept them."""
        if isinstance(raw, (bool, np.bool_)):
            return None
        if isinstance(raw, (int, float, np.integer, np.floating)):
            value = float(raw)
        else:
            text = str(raw).strip()
            if not _PLAIN_NUMBER.fullmatch(text):
                return None
            value = float(text)
        if not np.isfinite(value) or not value.is_integer():
            return None
        if not self.options.min <= value <= self.options.max:
            return None
        return value

    def bin_edges(self) -> np.ndarray:
        """Bins of ``bin_width`` from ``min``; the top value joins the last bin (0-100 → 10 bins)."""
        width = self.options.bin_width
        n_bins = max(1, int(np.ceil((self.options.max - self.options.min) / width)))
        if width == 1:
            n_bins = len(self.support)
        return np.minimum((self.support - self.options.min) // width, n_bins - 1).astype(int)

    def describe(self) -> str:
        return f"an integer from {self.options.min} to {self.options.max}"


class CategoricalOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    options: list[str] = Field(min_length=2, description="Option labels, in order if ordered.")
    ordered: bool = Field(False, description="Whether the options lie on an ordinal scale.")
    aliases: dict[str, str] = Field(
        default_factory=dict, description="Other spellings a respondent may give, to a label."
    )


class CategoricalAnswer(AnswerType):
    """One of a list of labelled options; codes are the option positions 0..k-1."""

    Options = CategoricalOptions

    def __init__(self, options: CategoricalOptions):
        super().__init__(options)
        self.support = np.arange(len(options.options), dtype=float)
        self.labels = list(options.options)
        self.ordered = options.ordered
        self._lookup = {_norm(label): i for i, label in enumerate(options.options)}
        for alias, label in options.aliases.items():
            self._lookup[_norm(alias)] = options.options.index(label)

    def to_code(self, raw: Any) -> float | None:
        if isinstance(raw, (bool, np.bool_)):
            return None
        code = self._lookup.get(_norm(str(raw)))
        if code is None and isinstance(raw, (int, float)) and float(raw) in self.support:
            return float(raw)
        return None if code is None else float(code)

    def describe(self) -> str:
        return "one of " + ", ".join(self.labels)


def _norm(text: str) -> str:
    return " ".join(text.strip().lower().split())
