"""Option order: in which order a categorical question's options are shown, and how much a
system's answers depend on it.

``decoding.option_order`` chooses the order for every prompt of the run, and a question's own
``option_order`` (e.g. from a Qualtrics question with randomised choices) overrides it:

- ``fixed``: the survey's order;
- ``reversed``: the survey's order reversed, for every respondent;
- ``shuffled``: a seeded permutation per respondent and question;
- ``forward_reversed``: each respondent sees the survey's order or its reverse (seeded, per
  respondent and question), so that one run compares the two.

Templates see the options in their displayed order as ``options`` (a list of labels); an answer
is parsed back to the option by its label, so codes always mean the survey's options. Integer
questions keep their scale.

Metric rows (:func:`position_rows`, for categorical questions, on every system including
baselines, whose answers do not see the order and so show the chance level):

- ``position_share_<p>``: the share of the system's answer mass on the option shown at position
  ``p`` (1-based);
- ``position_bias`` (``shuffled``): half the L1 distance between the position shares and the
  uniform ``1/k``: 0 when the position does not matter;
- ``position_bias`` (``forward_reversed``): half the L1 distance between the system's answer
  distribution over options (mean over items) among forward-order items and among
  reversed-order items: 0 when the order does not matter.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

OPTION_ORDERS = ("fixed", "reversed", "shuffled", "forward_reversed")


def has_options(answer: Any) -> bool:
    """Whether an answer type shows options whose order can change (categorical ones)."""
    return getattr(getattr(answer, "options", None), "options", None) is not None


def _rng(seed: int, subject_id: str, question: str) -> np.random.Generator:
    # a stable hash (not Python's salted hash()): the same order in every process and run
    digest = hashlib.sha256(f"{seed}\0{subject_id}\0{question}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def display_order(mode: str, k: int, subject_id: str, question: str, seed: int) -> tuple[int, ...]:
    """Option indices in displayed order (position 0 first)."""
    forward = tuple(range(k))
    if mode == "fixed":
        return forward
    if mode == "reversed":
        return forward[::-1]
    rng = _rng(seed, str(subject_id), str(question))
    if mode == "shuffled":
        return tuple(int(i) for i in rng.permutation(k))
    if mode == "forward_reversed":
        return forward if rng.random() < 0.5 else forward[::-1]
    raise ValueError(f"unknown option order {mode!r}; known: {', '.join(OPTION_ORDERS)}")


def displayed_options(
    answer: Any, mode: str, subject_id: str, question: str, seed: int
) -> list[str]:
    """A question's option labels as shown to one respondent (the labels as they are for
    answer types without options)."""
    labels = list(answer.labels)
    if not has_options(answer):
        return labels
    return [labels[i] for i in display_order(mode, len(labels), subject_id, question, seed)]


def position_rows(
    system: str,
    setting: str,
    temperature: float | None,
    items: pd.DataFrame,
    probs: np.ndarray,
    answer_types: Mapping[str, Any],
    mode: str | Mapping[str, str],
    seed: int,
) -> list[dict[str, Any]]:
    """``position_share_<p>`` and ``position_bias`` rows (tidy metric rows, segment ``all``)
    for a system's answer distributions ``probs`` (one row per item of ``items``); ``mode`` is
    the option order of every question, or a mapping from question id to its order."""
    modes = mode if isinstance(mode, Mapping) else {}
    rows: list[dict[str, Any]] = []

    def row(qid: str, name: str, value: float, n: int) -> dict[str, Any]:
        return {
            "system": system, "setting": setting, "question": qid,
            "temperature": np.nan if temperature is None else float(temperature),
            "segment": "all", "metric": name, "value": value, "sd": np.nan, "n": n,
        }  # fmt: skip

    questions = items["question"].to_numpy()
    subjects = items["subject_id"].astype(str).to_numpy()
    for qid in pd.unique(questions):
        answer = answer_types[qid]
        if not has_options(answer):
            continue
        k = len(answer.labels)
        qmode = modes.get(qid, "fixed") if isinstance(mode, Mapping) else mode
        where = np.flatnonzero(questions == qid)
        orders = [display_order(qmode, k, subjects[i], qid, seed) for i in where]
        p = probs[where, :k]
        by_position = np.array([p[j, list(order)] for j, order in enumerate(orders)])
        total = by_position.sum()
        if total <= 0:
            continue
        shares = by_position.sum(axis=0) / total
        for position, share in enumerate(shares, start=1):
            rows.append(row(qid, f"position_share_{position}", float(share), len(where)))
        if qmode == "shuffled":
            bias = 0.5 * float(np.abs(shares - 1.0 / k).sum())
            rows.append(row(qid, "position_bias", bias, len(where)))
        elif qmode == "forward_reversed":
            forward = np.array([order[0] == 0 for order in orders])
            if forward.all() or not forward.any():
                continue
            dist = []
            for group in (forward, ~forward):
                mass = p[group].sum(axis=0)
                dist.append(mass / mass.sum() if mass.sum() > 0 else np.full(k, np.nan))
            bias = 0.5 * float(np.abs(dist[0] - dist[1]).sum())
            rows.append(row(qid, "position_bias", bias, len(where)))
    return rows
