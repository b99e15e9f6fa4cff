"""The answering engine: every command that asks a language model (``run``'s language-model
systems, ``simulate``, ``pilot``) answers its prompts through :func:`answer_chunks`.

The caller cuts its prompts into chunks, each with one result-cache key per temperature, and
gives a function that answers some of the prompts at some temperatures. The engine takes each
chunk's answers from the cache where they are, answers the rest, stores every chunk as soon as it
is answered, and records in the cache's ``reused`` and ``computed`` lists what it took and what
it computed. A run answers its test items as one chunk; simulate and pilot answer
:data:`ANSWER_CHUNK` personas at a time (:func:`persona_chunks`), so that an interrupted command,
run again, answers only the chunks it had not finished.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from surveysim_core.answers import AnswerDistribution
from surveysim_core.cache import Cache
from surveysim_core.items import parse_with
from surveysim_core.plan import Plan
from surveysim_core.protocols import Progress, Prompt, SystemAnswers

#: the result-cache kind of answers (a run's whole test set or a chunk of personas)
ANSWER_KIND = "answers"
#: personas per resumable chunk of simulate and pilot (every item for each of them, so that a
#: backend still shares each persona's prefix across its items)
ANSWER_CHUNK = 10

#: answers the prompts at these rows at these temperatures
AnswerFunction = Callable[[list[int], list[float]], dict[float, SystemAnswers]]


@dataclass(frozen=True)
class Chunk:
    """Prompts answered (and cached) together: their rows, and the cache key of their answers
    at each temperature. ``label`` names them in progress lines ("personas 1-10 of 40")."""

    rows: list[int]
    keys: dict[float, str]
    label: str = ""


def cached_temperatures(cache: Cache, chunk: Chunk) -> list[float]:
    """The temperatures at which ``cache`` holds the chunk's answers (reads only manifests)."""
    return [t for t, key in chunk.keys.items() if cache.has(ANSWER_KIND, key)]


def persona_chunks(
    n_items: int,
    n_personas: int,
    key_of: Callable[[list[int], float], str],
    temperatures: list[float],
) -> list[Chunk]:
    """Item-major prompts (item k's persona p at ``k * n_personas + p``) in chunks of
    :data:`ANSWER_CHUNK` personas with all their items; ``key_of(rows, t)`` is a chunk's key."""
    chunks = []
    for start in range(0, n_personas, ANSWER_CHUNK):
        stop = min(start + ANSWER_CHUNK, n_personas)
        rows = [k * n_personas + p for k in range(n_items) for p in range(start, stop)]
        label = f"personas {start + 1}-{stop} of {n_personas}"
        chunks.append(Chunk(rows, {t: key_of(rows, t) for t in temperatures}, label))
    return chunks


def answer_chunks(
    chunks: Sequence[Chunk],
    n: int,
    answer: AnswerFunction,
    cache: Cache | None,
    name: str,
    progress: Progress,
) -> dict[float, SystemAnswers]:
    """The answers to ``n`` prompts at every temperature the chunks have keys for: each chunk's
    from ``cache`` where there, else from ``answer`` (then stored at once). What was reused and
    what computed goes to ``cache.reused`` and ``cache.computed``, as ``"<name>: answers at
    t=[...]"`` (and how many chunks, when there are several)."""
    parts: dict[float, list[tuple[list[int], SystemAnswers]]] = {}
    reused: dict[float, int] = {}
    computed: dict[float, int] = {}
    for number, chunk in enumerate(chunks, 1):
        found: dict[float, SystemAnswers] = {}
        if cache is not None:
            for t, key in chunk.keys.items():
                cached = cache.get_answers(ANSWER_KIND, key)
                if cached is not None:
                    found[t] = cached[0]
                    reused[t] = reused.get(t, 0) + 1
        missing = [t for t in chunk.keys if t not in found]
        if missing:
            answered = answer(chunk.rows, missing)
            for t in missing:
                found[t] = answered[t]
                computed[t] = computed.get(t, 0) + 1
                if cache is not None:
                    cache.put_answers(ANSWER_KIND, chunk.keys[t], [answered[t]])
        for t, answers in found.items():
            parts.setdefault(t, []).append((chunk.rows, answers))
        if len(chunks) > 1:
            progress(
                f"{chunk.label} answered (chunk {number} of {len(chunks)};"
                f" {sum(reused.values())} read from the cache)"
            )
    if cache is not None:
        of = f" ({{}} of {len(chunks)} chunks)" if len(chunks) > 1 else "{}"
        if reused:
            count = "" if len(chunks) == 1 else max(reused.values())
            cache.reused.append(f"{name}: answers at t={sorted(reused)}" + of.format(count))
        if computed:
            count = "" if len(chunks) == 1 else max(computed.values())
            cache.computed.append(f"{name}: answers at t={list(computed)}" + of.format(count))
    return {t: joined(p, n) for t, p in parts.items()}


def joined(parts: list[tuple[list[int], SystemAnswers]], n: int) -> SystemAnswers:
    """Chunks' answers as the answers to all ``n`` prompts (rows padded to the widest answer
    set); one chunk of every row in order is returned as it is."""
    if len(parts) == 1 and parts[0][0] == list(range(n)):
        return parts[0][1]
    first = parts[0][1]
    codes = np.full(n, np.nan)
    texts: list[str | None] = [None] * n
    for rows, a in parts:
        if a.codes is not None:
            codes[rows] = a.codes
        for i, text in zip(rows, a.texts or [None] * len(rows), strict=True):
            texts[i] = text
    return SystemAnswers(
        first.setting,
        stack_distributions([(np.asarray(rows), a.distribution) for rows, a in parts], n),
        codes if any(a.codes is not None for _, a in parts) else None,
        first.temperature,
        dict(first.params),
        texts if any(x is not None for x in texts) else None,
    )


def decode_items(
    plan: Plan,
    decoder: Any,
    model: Any,
    prompts: Sequence[Prompt],
    questions: np.ndarray,
    temperatures: list[float],
    max_new_tokens: int,
    seed: int,
    setting: str,
    progress: Progress,
    name: str,
) -> dict[float, SystemAnswers]:
    """``decoder``'s answers to ``prompts`` (``questions[i]`` asked at ``prompts[i]``) at every
    temperature. Questions with the same answers and parsers are decoded in one call, so that
    a decoder can share each respondent's persona prefix across all of their questions."""
    decoded_all: dict[float, list] = {}
    groups: dict[tuple, list[str]] = {}
    for qid, answer in plan.answer_types.items():
        key = (type(answer), tuple(answer.labels), tuple(map(id, plan.parsers[qid])))
        groups.setdefault(key, []).append(qid)
    for qids in groups.values():
        mask = np.isin(questions, qids)
        if not mask.any():
            continue
        asked = [p for p, m in zip(prompts, mask, strict=True) if m]
        progress(f"{name}: answering {len(asked)} prompts ({', '.join(qids)}) at t={temperatures}")
        decoded = decoder.decode(
            model, asked, plan.answer_types[qids[0]], parse_with(plan, qids[0]), temperatures,
            max_new_tokens, seed,
        )  # fmt: skip
        for t, d in decoded.items():
            decoded_all.setdefault(t, []).append((mask, d))
    out = {}
    for t, parts in decoded_all.items():
        answers = [
            SystemAnswers(setting, d.distribution, d.codes, t, {}, d.texts) for _, d in parts
        ]
        rows = [np.nonzero(m)[0].tolist() for m, _ in parts]
        out[t] = joined(list(zip(rows, answers, strict=True)), len(prompts))
    return out


def stack_distributions(
    parts: list[tuple[np.ndarray, AnswerDistribution]], n: int
) -> AnswerDistribution:
    """Answers of several questions (different answer sets) in one distribution object.

    Metrics only ever see one question at a time (the scorer cuts the rows back to that
    question's support), so rows are padded to the widest support.
    """
    width = max((p.probs.shape[1] for _, p in parts), default=0)
    probs = np.zeros((n, width))
    exact = all(p.exact for _, p in parts) if parts else False
    for mask, part in parts:
        probs[mask, : part.probs.shape[1]] = part.probs
    return AnswerDistribution(probs, exact)
