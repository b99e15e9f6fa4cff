"""Answer tries for words: option labels that end at the end of the model's turn.

``exact.py`` scores every answer string of a trie in one tree-attention pass. Digit answers
(integer scales) use the digit trie of ``tree.build_answer_trie``: a number ends at the first
token that does not begin with a digit. An option label such as ``Clinton`` has no such
boundary (``Clinton`` is a prefix of ``Clintonite``, and ``Yes`` of ``Yes, strongly``), so a
label answer ends where the model ends its turn: after the label's tokens, one of the model's
stop tokens (eos, or the chat template's end-of-turn token such as ``<|im_end|>``), the tokens
at which ``HFModel.generate`` stops. For a label ``s`` with tokens ``s_1..s_n``::

    P_t(s) = prod_k p_t(s_k | prompt, s_<k) * sum over stop tokens v of p_t(v | prompt, s)

A label that is a prefix of another is an internal node of the trie with its own termination
probability, as ``"1"`` is for ``"10"``. Each label is tokenised on its own, without special
tokens and without a leading space, as the digit answers are and as training writes the answer
after the prompt (``texts.encode_example``). Other generations (``Clinton.``, `` Clinton``, a
sentence) are in the ``leave`` mass.

Which strings are answer strings, and which option each one means, is the caller's business
(``surveysim_std``'s ``exact`` decoder lists every spelling the answer parser reads as an
option); this module only has to count each distinct token sequence once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from .tree import Trie, build_answer_trie

__all__ = ["answer_trie", "build_label_trie", "digit_answers"]


def digit_answers(answers: Iterable[str]) -> bool:
    """Whether every answer is a string of ASCII digits (then the digit trie applies)."""
    return all(a and a.isascii() and a.isdigit() for a in answers)


def build_label_trie(
    tokenizer, labels: Sequence[str], terminator_ids: Iterable[int], vocab_size: int | None = None
) -> tuple[Trie, np.ndarray]:
    """The trie of ``labels``, each ending with one of ``terminator_ids``.

    Returns ``(trie, columns)``: ``trie.answers[j]`` is ``labels[columns[j]]``. Labels whose
    tokens are the same (a tokenizer that normalises case or spaces) are one generation: the
    first of them is kept and the others are left out of the trie (their probability is 0, so
    that a sum over labels counts the generation once).
    """
    labels = list(labels)
    terminators = sorted({int(i) for i in terminator_ids})
    if not terminators:
        raise ValueError("a label trie needs at least one stop token id (eos or end of turn)")
    if len(set(labels)) != len(labels):
        raise ValueError("labels must be unique")
    kept: list[int] = []
    seen: set[tuple[int, ...]] = set()
    stop = set(terminators)
    for j, label in enumerate(labels):
        tokens = tuple(tokenizer(label, add_special_tokens=False)["input_ids"])
        if not tokens:
            raise ValueError(f"label {label!r} has no tokens")
        if stop.intersection(tokens):
            raise ValueError(f"label {label!r} contains a stop token, so it cannot be answered")
        if tokens not in seen:
            seen.add(tokens)
            kept.append(j)
    trie = build_answer_trie(
        tokenizer,
        [labels[j] for j in kept],
        terminators,
        non_digit_terminates=False,
        vocab_size=vocab_size,
    )
    return trie, np.asarray(kept, dtype=np.int64)


def answer_trie(
    tokenizer, answers: Sequence[str], terminator_ids: Iterable[int], vocab_size: int | None = None
) -> tuple[Trie, np.ndarray]:
    """The trie the exact decoder scores ``answers`` with, and the column of each trie answer.

    Digit strings (integer scales) get the digit trie (any non-digit token ends the number);
    any other answer set gets the label trie, ended by ``terminator_ids``.
    """
    answers = list(answers)
    if digit_answers(answers):
        trie = build_answer_trie(tokenizer, answers, vocab_size=vocab_size)
        return trie, np.arange(len(answers), dtype=np.int64)
    return build_label_trie(tokenizer, answers, terminator_ids, vocab_size)
