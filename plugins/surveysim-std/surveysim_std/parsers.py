"""Answer parsers: read an answer from generated text, or return None."""

from __future__ import annotations

import re

from surveysim_core.answers import AnswerType

_INTEGER = re.compile(r"-?\d+")


def first_integer(text: str, answer: AnswerType) -> float | None:
    """The paper's parser F: the first (possibly multi-digit) integer in the text.

    An integer outside the answer range is returned as is; the core counts it as a failure.
    """
    match = _INTEGER.search(text)
    return float(match.group()) if match else None


def choice(text: str, answer: AnswerType) -> float | None:
    """The option whose label (or alias) appears first in the text, case and spacing ignored.

    Longer labels win over labels they contain ("Strongly agree" over "agree").
    """
    lowered = " ".join(text.lower().split())
    best: tuple[int, int, float] | None = None
    names = list(answer.labels) + list(getattr(answer.options, "aliases", {}) or {})
    for name in names:
        key = " ".join(name.lower().split())
        for match in re.finditer(r"(?<![a-z0-9])" + re.escape(key) + r"(?![a-z0-9])", lowered):
            code = answer.to_code(name)
            candidate = (match.start(), -len(key), code)
            if code is not None and (best is None or candidate[:2] < best[:2]):
                best = candidate
            break
    return None if best is None else best[2]
