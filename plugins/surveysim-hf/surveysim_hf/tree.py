"""Tree-structured token sequences: tries of answers, tree attention masks, positions.

A *tree sequence* is a flat list of tokens where every token has a ``parent`` (the index of
the token it follows, or ``-1`` for a root). An ordinary text is the chain
``parent[i] = i - 1``. Under a tree attention mask, token ``i`` attends to itself and to its
ancestors only, and its position id is its depth (distance to the root). A causal LM run over
a tree sequence therefore computes, at every token, exactly the hidden state it would compute
for the path root -> token on its own (up to floating-point summation order), which lets us
evaluate many continuations that share a prefix in one forward pass:

* evaluation (``exact.py``): prompt + a trie of all answer strings;
* training (``packing.py``): shared persona prefix + several question/answer branches.

Transformers (>= 4.4x, 5.x) passes a 4D ``attention_mask`` of shape
``(batch, 1, query_len, key_len)`` through unchanged to the attention implementation (eager
and sdpa). We build it as an *additive* float mask (0 where attention is allowed, the dtype's
most negative finite value elsewhere), which both implementations accept. Padding tokens
attend only to themselves (never an all-masked row, hence no NaN), have position 0, and are
never attended to by real tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = [
    "TreeSequence",
    "Trie",
    "ancestor_matrix",
    "build_answer_trie",
    "collate_tree_sequences",
    "depths",
    "tree_attention_mask",
]


# --------------------------------------------------------------------------------------------
# generic tree sequences
# --------------------------------------------------------------------------------------------


def _check_parents(parents: np.ndarray) -> None:
    idx = np.arange(len(parents))
    if np.any(parents >= idx) or np.any(parents < -1):
        raise ValueError("parents must satisfy -1 <= parent[i] < i (topological order)")


def depths(parents: Sequence[int] | np.ndarray) -> np.ndarray:
    """Depth of every token (roots have depth 0). ``parents`` must be topologically ordered."""
    parents = np.asarray(parents, dtype=np.int64)
    _check_parents(parents)
    d = np.zeros(len(parents), dtype=np.int64)
    for i, p in enumerate(parents):
        if p >= 0:
            d[i] = d[p] + 1
    return d


def ancestor_matrix(parents: Sequence[int] | np.ndarray) -> np.ndarray:
    """Boolean ``(L, L)`` matrix ``A`` with ``A[i, j]`` true iff ``j == i`` or ``j`` is an
    ancestor of ``i``. This is the tree attention pattern (a causal mask for a chain)."""
    parents = np.asarray(parents, dtype=np.int64)
    _check_parents(parents)
    n = len(parents)
    a = np.zeros((n, n), dtype=bool)
    # a maximal chain run i..j-1 (token k > i has parent k - 1) shares the ancestors of the
    # run head's parent p and is causal inside the run: fill it as one block
    i = 0
    while i < n:
        p = parents[i]
        j = i + 1
        while j < n and parents[j] == j - 1:
            j += 1
        if p >= 0:
            a[i:j, : p + 1] = a[p, : p + 1]
        a[i:j, i:j] = np.tril(np.ones((j - i, j - i), dtype=bool))
        i = j
    return a


def tree_attention_mask(
    parents_list: Sequence[Sequence[int] | np.ndarray],
    length: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Additive 4D mask ``(batch, 1, length, length)`` for a batch of right-padded trees.

    Allowed entries are 0, forbidden ones ``torch.finfo(dtype).min``. Pad positions (beyond a
    sequence's own length) attend only to themselves.
    """
    length = length or max(len(p) for p in parents_list)
    allowed = np.zeros((len(parents_list), length, length), dtype=bool)
    diag = np.arange(length)
    for b, parents in enumerate(parents_list):
        n = len(parents)
        allowed[b, :n, :n] = ancestor_matrix(parents)
        allowed[b, diag[n:], diag[n:]] = True
    mask = torch.zeros(allowed.shape, dtype=dtype)
    mask.masked_fill_(torch.from_numpy(~allowed), torch.finfo(dtype).min)
    return mask[:, None]


@dataclass
class TreeSequence:
    """One tree sequence: token ids, parent index per token, and position ids.

    ``positions`` defaults to the depth of each token plus ``position_offset``.
    """

    input_ids: list[int]
    parents: list[int]
    positions: list[int] | None = None

    def __post_init__(self) -> None:
        if len(self.input_ids) != len(self.parents):
            raise ValueError("input_ids and parents must have the same length")
        if self.positions is None:
            self.positions = depths(self.parents).tolist()

    def __len__(self) -> int:
        return len(self.input_ids)


def collate_tree_sequences(
    seqs: Sequence[TreeSequence],
    pad_token_id: int = 0,
    dtype: torch.dtype = torch.float32,
    pad_to_multiple_of: int | None = None,
) -> dict[str, torch.Tensor]:
    """Right-pad tree sequences into model inputs.

    Returns ``input_ids`` and ``position_ids`` ``(B, L)`` long tensors, the additive 4D
    ``attention_mask`` ``(B, 1, L, L)`` and ``token_mask`` ``(B, L)`` (true on real tokens).
    Padding: pad id, position 0, attends only to itself; real tokens never see padding.
    """
    length = max(len(s) for s in seqs)
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    b = len(seqs)
    ids = torch.full((b, length), pad_token_id, dtype=torch.long)
    pos = torch.zeros((b, length), dtype=torch.long)
    tok = torch.zeros((b, length), dtype=torch.bool)
    for i, s in enumerate(seqs):
        n = len(s)
        ids[i, :n] = torch.tensor(s.input_ids, dtype=torch.long)
        pos[i, :n] = torch.tensor(s.positions, dtype=torch.long)
        tok[i, :n] = True
    mask = tree_attention_mask([s.parents for s in seqs], length, dtype)
    return {"input_ids": ids, "position_ids": pos, "attention_mask": mask, "token_mask": tok}


# --------------------------------------------------------------------------------------------
# answer trie
# --------------------------------------------------------------------------------------------


@dataclass
class Trie:
    """Trie of answer token sequences, nodes in topological (BFS) order.

    Node ``n`` holds token ``token[n]`` and hangs below node ``parent[n]`` (``-1``: directly
    below the prompt's last token, the *root*). ``answer[n]`` is the index of the answer whose
    token sequence ends at node ``n`` (``-1`` for a pure internal node). ``children[n + 1]``
    maps token id -> child node for node ``n`` (entry 0 is the root).

    ``terminator_ids`` / ``continuation_ids``: see :func:`build_answer_trie`.
    """

    answers: list[str]
    answer_tokens: list[list[int]]
    token: np.ndarray
    parent: np.ndarray
    depth: np.ndarray
    answer: np.ndarray
    answer_node: np.ndarray
    children: list[dict[int, int]]
    terminator_ids: list[int] | None
    continuation_ids: list[int] | None
    vocab_size: int
    terminal_mask: torch.Tensor = field(repr=False, default=None)  # (V,) bool

    @property
    def n_nodes(self) -> int:
        return len(self.token)

    @property
    def n_answers(self) -> int:
        return len(self.answers)

    def tree_parents(self, attach_to: int, offset: int) -> list[int]:
        """Parent indices of the trie nodes placed at ``offset..offset+n_nodes-1`` in a tree
        sequence, with root-level nodes attached to position ``attach_to``."""
        return [attach_to if p < 0 else offset + int(p) for p in self.parent]


def digit_token_ids(tokenizer, vocab_size: int | None = None) -> tuple[list[int], bool]:
    """Ids of tokens whose decoded text begins with an ASCII digit (``0-9``).

    Returns ``(ids, atomic)``, ``atomic`` being true when every such token is exactly one digit
    (then "the answer is a string of digits" and "the answer is a sequence of digit tokens"
    coincide, and the exact distribution is exact for the parser; true for SmolLM2/Llama-3
    style tokenizers that split digits).
    """
    n = len(tokenizer)
    ids, atomic = [], True
    for i in range(min(n, vocab_size or n)):
        text = tokenizer.decode([i])
        if text[:1].isascii() and text[:1].isdigit():
            ids.append(i)
            if len(text) != 1:
                atomic = False
    return ids, atomic


def build_answer_trie(
    tokenizer,
    answers: Sequence[str],
    terminator_ids: Sequence[int] | None = None,
    *,
    non_digit_terminates: bool = True,
    vocab_size: int | None = None,
) -> Trie:
    """Build the trie of ``answers`` (each tokenised without special tokens).

    Termination (what makes a prefix a *complete* answer), one of two modes:

    * ``non_digit_terminates=True`` (default, matches the integer parser "first integer of the
      generated text"): after the answer's tokens, any token whose decoded text does **not**
      begin with an ASCII digit ends the number, eos/end-of-turn included. The continuation
      set is the digit-class tokens (``digit_token_ids``).
    * ``non_digit_terminates=False``: only ``terminator_ids`` (e.g. eos and ``<|im_end|>``)
      end an answer; any other token that is not a trie child leaves the answer set.

    ``terminator_ids`` defaults to the tokenizer's eos id. ``vocab_size`` is the model's output
    size (may exceed ``len(tokenizer)``; extra ids count as non-digit).
    """
    answers = list(answers)
    if len(set(answers)) != len(answers):
        raise ValueError("answers must be unique")
    vocab_size = vocab_size or len(tokenizer)
    toks = [list(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers]
    if any(len(t) == 0 for t in toks):
        raise ValueError("empty answer")
    if len({tuple(t) for t in toks}) != len(toks):
        raise ValueError("two answers tokenise identically")

    # BFS node creation
    children: list[dict[int, int]] = [{}]
    token, parent, depth = [], [], []
    node_of: dict[tuple[int, ...], int] = {}
    max_len = max(len(t) for t in toks)
    for d in range(max_len):
        for t in toks:
            if len(t) <= d:
                continue
            key = tuple(t[: d + 1])
            if key in node_of:
                continue
            par = node_of[key[:-1]] if d > 0 else -1
            n = len(token)
            node_of[key] = n
            token.append(key[-1])
            parent.append(par)
            depth.append(d)
            children.append({})
            children[par + 1][key[-1]] = n
    answer = np.full(len(token), -1, dtype=np.int64)
    answer_node = np.array([node_of[tuple(t)] for t in toks], dtype=np.int64)
    answer[answer_node] = np.arange(len(answers))

    term_mask = torch.zeros(vocab_size, dtype=torch.bool)
    cont_ids = None
    if terminator_ids is None:
        eos = tokenizer.eos_token_id
        terminator_ids = [eos] if isinstance(eos, int) else list(eos or [])
    terminator_ids = list(terminator_ids)
    if non_digit_terminates:
        cont_ids, _ = digit_token_ids(tokenizer, vocab_size)
        term_mask[:] = True
        term_mask[cont_ids] = False
        bad = [i for i in token if i not in set(cont_ids)]
        if bad:
            raise ValueError(
                "with non_digit_terminates=True every answer token must begin with a digit"
            )
    else:
        if not terminator_ids:
            raise ValueError("no terminator ids")
        term_mask[terminator_ids] = True
        if any(term_mask[i] for i in token):
            raise ValueError("a terminator id occurs inside an answer")
    return Trie(
        answers=answers,
        answer_tokens=toks,
        token=np.array(token, dtype=np.int64),
        parent=np.array(parent, dtype=np.int64),
        depth=np.array(depth, dtype=np.int64),
        answer=answer,
        answer_node=answer_node,
        children=children,
        terminator_ids=terminator_ids,
        continuation_ids=cont_ids,
        vocab_size=vocab_size,
        terminal_mask=term_mask,
    )
