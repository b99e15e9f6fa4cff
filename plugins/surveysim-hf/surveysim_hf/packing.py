"""Prefix-shared training: one tree sequence per respondent.

A respondent contributes several separate training examples (system/persona turn + question +
answer) that all start with the same tokens. Instead of running the shared prefix once per
example we pack them into one sequence::

    [shared prefix][branch 1: rest of example 1][branch 2: rest of example 2] ...

with a tree attention mask (a branch sees the prefix and itself, never another branch) and
position ids that restart after the prefix for every branch (position = depth in the tree),
so each branch token computes exactly the hidden state it has in its own separate example.

Boundary handling: :func:`pack_examples` takes the examples *already tokenised as separate
examples* (exactly as the trainer would feed them) and shares their longest common token
prefix. The concatenation prefix + branch is therefore the separate example's token sequence
by construction; no text-level split of the chat template is needed and no BPE merge across
the boundary can differ. (:func:`examples_from_chat` builds such examples from a chat
template and checks that the prompt tokens are a prefix of the full example's tokens.)

Labels follow the Hugging Face convention of the separate examples (``labels[i]`` is the
target at position ``i``, predicted from the state of the token before it, ``-100`` =
ignored). In the packed sequence the predictor of a token is its *parent*, which is not the
previous position for the first token of each branch, so the standard shifted HF loss cannot
be used: :func:`packed_loss` gathers the predictor states explicitly. With
``prefix_loss="per_branch"`` (default) labelled prefix tokens (whole-text loss) get weight
``n_branches``, so the loss (mean over label tokens) and all gradients equal those of the
separate examples batched together; ``"once"`` counts them once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .batches import PackedBatch
from .forward import PLAIN_HEAD_TYPES, unwrap
from .tree import Trie, tree_attention_mask

__all__ = [
    "collate_packed",
    "examples_from_chat",
    "pack_answer_tries",
    "pack_examples",
    "pack_respondent",
    "pack_trie",
    "packed_cross_entropy",
    "packed_logits",
    "packed_loss",
]

IGNORE = -100


def _get(ex, key):
    return list(ex[key]) if isinstance(ex, dict) else list(ex[0 if key == "input_ids" else 1])


def _lcp(seqs: Sequence[Sequence[int]]) -> int:
    n = min(len(s) for s in seqs)
    first = seqs[0]
    for i in range(n):
        if any(s[i] != first[i] for s in seqs[1:]):
            return i
    return n


def pack_examples(
    examples: Sequence[dict | tuple],
    *,
    prefix_len: int | None = None,
    prefix_loss: str = "per_branch",
) -> dict[str, list]:
    """Pack separate examples sharing a token prefix into one tree sequence.

    ``examples``: dicts with ``input_ids`` and ``labels`` (HF convention, same length; or
    ``(input_ids, labels)`` tuples), and optionally ``answer_start`` (index of the example's
    first answer token). ``prefix_len``: shared length (default: the longest common token
    prefix, shortened so every branch keeps at least one token; it must not exceed it). Labels
    inside the prefix must agree across examples.

    Returns a dict of lists (one sequence, length ``L = prefix + sum of branches``):
    ``input_ids``, ``parents`` (index of the parent token, -1 for the root), ``position_ids``
    (depth), ``labels`` (target at this position, -100 if none), ``predictor_index`` (the
    parent when labelled, else -1), ``loss_weight`` (float), ``n_branches``,
    ``separate_tokens`` (tokens the separate examples would have processed); with
    ``answer_start`` also ``answer_predictor``: per example (branch), the position whose logits
    predict its first answer token.
    """
    if prefix_loss not in ("per_branch", "once"):
        raise ValueError("prefix_loss must be 'per_branch' or 'once'")
    ids = [_get(e, "input_ids") for e in examples]
    labs = [_get(e, "labels") for e in examples]
    if not ids:
        raise ValueError("no examples")
    for x, y in zip(ids, labs, strict=True):
        if len(x) != len(y) or not x:
            raise ValueError("input_ids and labels must be non-empty and of equal length")
    lcp = min(_lcp(ids), min(len(x) for x in ids) - 1) if len(ids) > 1 else len(ids[0]) - 1
    if prefix_len is None:
        prefix_len = lcp
    elif prefix_len > lcp:
        raise ValueError(f"prefix_len {prefix_len} exceeds the common prefix {lcp}")
    c = prefix_len
    if any(y[:c] != labs[0][:c] for y in labs):
        raise ValueError("labels differ inside the shared prefix")
    k = len(ids)
    pw = float(k) if prefix_loss == "per_branch" else 1.0

    input_ids = list(ids[0][:c])
    parents = list(range(-1, c - 1))
    labels = list(labs[0][:c])
    weights = [pw if y != IGNORE else 0.0 for y in labels]
    starts = []  # where each branch begins in the packed sequence
    for x, y in zip(ids, labs, strict=True):
        start = len(input_ids)
        starts.append(start)
        for j in range(c, len(x)):
            input_ids.append(x[j])
            parents.append(start + j - c - 1 if j > c else c - 1)
            labels.append(y[j])
            weights.append(1.0 if y[j] != IGNORE else 0.0)
    depth = np.zeros(len(parents), dtype=np.int64)
    for i, p in enumerate(parents):
        depth[i] = depth[p] + 1 if p >= 0 else 0
    if labels[0] != IGNORE:  # the first token has no predictor (as in HF's shifted loss)
        labels[0], weights[0] = IGNORE, 0.0
    pred = [p if y != IGNORE else -1 for p, y in zip(parents, labels, strict=True)]
    extra = {}
    if all(isinstance(e, dict) and "answer_start" in e for e in examples):
        # token j of a branch sits at j inside the prefix, else at start + j - c
        answer_starts = [int(e["answer_start"]) for e in examples]
        at = [a if a < c else b + a - c for a, b in zip(answer_starts, starts, strict=True)]
        if any(a < 1 for a in at):
            raise ValueError("an answer must not start at the first token")
        extra["answer_predictor"] = [parents[a] for a in at]
    return {
        "input_ids": input_ids,
        "parents": parents,
        "position_ids": depth.tolist(),
        "labels": labels,
        "predictor_index": pred,
        "loss_weight": weights,
        "n_branches": k,
        "separate_tokens": sum(len(x) for x in ids),
        **extra,
    }


def pack_respondent(
    examples: Sequence[dict | tuple], max_tokens: int, **kw
) -> list[dict[str, list]]:
    """Pack one respondent's examples, splitting them into several packed sequences so that
    each stays within ``max_tokens`` (an example longer than that is packed alone)."""
    ids = [_get(e, "input_ids") for e in examples]
    c = _lcp(ids) if len(ids) > 1 else 0
    out, cur, size = [], [], 0
    for e, x in zip(examples, ids, strict=True):
        add = len(x) - c
        if cur and size + add > max_tokens:
            out.append(pack_examples(cur, **kw))
            cur, size = [], 0
        if not cur:
            size = c
        cur.append(e)
        size += add
    if cur:
        out.append(pack_examples(cur, **kw))
    return out


def pack_trie(examples: Sequence[dict], prefix_loss: str = "per_branch") -> dict[str, list]:
    """Pack examples into one token trie: every distinct token prefix once.

    The general form of :func:`pack_examples` for examples that share more than one common
    prefix, above all a respondent's conversation (respondent memory), where each example's
    tokens extend the previous one's: the conversation then costs its own length, not the sum
    of its growing prefixes. Same output as :func:`pack_examples` (``answer_start`` required).
    A labelled node counts once per example that labels it (``per_branch``), or once
    (``once``), so the loss and gradients equal the separate examples' as there.
    """
    if prefix_loss not in ("per_branch", "once"):
        raise ValueError("prefix_loss must be 'per_branch' or 'once'")
    if not examples:
        raise ValueError("no examples")
    input_ids: list[int] = []
    parents: list[int] = []
    labels: list[int] = []
    weights: list[float] = []
    children: dict[tuple[int, int], int] = {}
    answer_predictor = []
    for e in examples:
        ids, labs = list(e["input_ids"]), list(e["labels"])
        if len(ids) != len(labs) or not ids:
            raise ValueError("input_ids and labels must be non-empty and of equal length")
        node, path = -1, []
        for token, label in zip(ids, labs, strict=True):
            key = (node, int(token))
            if key not in children:
                children[key] = len(input_ids)
                input_ids.append(int(token))
                parents.append(node)
                labels.append(IGNORE)
                weights.append(0.0)
            node = children[key]
            path.append(node)
            if label != IGNORE:
                if labels[node] not in (IGNORE, label):
                    raise ValueError("examples label the same token differently")
                labels[node] = label
                weights[node] = weights[node] + 1.0 if prefix_loss == "per_branch" else 1.0
        start = int(e["answer_start"])
        if start < 1:
            raise ValueError("an answer must not start at the first token")
        answer_predictor.append(path[start - 1])
    if labels[0] != IGNORE:  # the root token has no predictor
        labels[0], weights[0] = IGNORE, 0.0
    return _tree_unit(
        input_ids, parents, labels, weights, len(examples),
        sum(len(e["input_ids"]) for e in examples), answer_predictor,
    )  # fmt: skip


def pack_answer_tries(
    examples: Sequence[dict], tries: Sequence[Trie], answers: Sequence[int]
) -> dict[str, list]:
    """Pack examples into one tree sequence with the whole answer trie of each example's question
    below its prompt: what a loss that scores every answer string needs (``numeric_penalty_
    multitoken``), for a respondent's examples at once.

    ``examples``: dicts with ``input_ids``, ``labels``, ``answer_start`` and ``answer_length``
    (an :class:`~surveysim_hf.texts.EncodedExample`'s fields); ``tries[i]`` the answer trie of
    example ``i`` and ``answers[i]`` the index of its answer in ``tries[i].answers``. Layout:

    - the prompts (``input_ids[:answer_start]``) as a token trie, every distinct prefix once (the
      shared persona once; a conversation's history once, as :func:`pack_trie`);
    - below each prompt's last token, the example's own copy of its answer trie;
    - below the true answer's trie node, the tokens after the answer (the end-of-turn token).

    Every token then computes the state it has in the example's own ``prompt + trie + tail``
    sequence. Labels are the examples' own: a prompt node counts once per example that labels it,
    the true answer's path and tail once; a root token carries none (it has no predictor, as the
    first token of a separate example). Output: the keys of :func:`pack_examples`, with
    ``answer_predictor`` (per branch, its prompt's last token) and ``trie_index`` (per branch,
    that position followed by the position of each trie node, in trie order).
    """
    input_ids: list[int] = []
    parents: list[int] = []
    labels: list[int] = []
    weights: list[float] = []
    children: dict[tuple[int, int], int] = {}
    answer_predictor: list[int] = []
    trie_index: list[list[int]] = []
    separate = 0

    def add(token: int, parent: int) -> int:
        input_ids.append(int(token))
        parents.append(parent)
        labels.append(IGNORE)
        weights.append(0.0)
        return len(input_ids) - 1

    def label(node: int, target: int) -> None:
        if target == IGNORE or parents[node] < 0:  # a root token has no predictor
            return
        if labels[node] not in (IGNORE, target):
            raise ValueError("examples label the same token differently")
        labels[node] = int(target)
        weights[node] += 1.0

    for e, trie, index in zip(examples, tries, answers, strict=True):
        ids, labs = list(e["input_ids"]), list(e["labels"])
        start, length = int(e["answer_start"]), int(e["answer_length"])
        if len(ids) != len(labs):
            raise ValueError("input_ids and labels must be of equal length")
        if start < 1:
            raise ValueError("an answer must not start at the first token")
        if ids[start : start + length] != list(trie.answer_tokens[index]):
            raise ValueError(
                f"answer {trie.answers[index]!r} is tokenised differently in the training text"
                f" ({ids[start : start + length]}) and on its own ({trie.answer_tokens[index]})"
            )
        node = -1
        for token, target in zip(ids[:start], labs[:start], strict=True):
            key = (node, int(token))
            if key not in children:
                children[key] = add(token, node)
            node = children[key]
            label(node, target)
        root, offset = node, len(input_ids)
        for token, parent in zip(trie.token.tolist(), trie.parent.tolist(), strict=True):
            add(token, root if parent < 0 else offset + parent)
        node = -1
        for j, token in enumerate(ids[start : start + length]):
            node = trie.children[node + 1][token]
            label(offset + node, labs[start + j])
        at = offset + node
        for token, target in zip(ids[start + length :], labs[start + length :], strict=True):
            at = add(token, at)
            label(at, target)
        answer_predictor.append(root)
        trie_index.append([root, *range(offset, offset + trie.n_nodes)])
        separate += start + trie.n_nodes + len(ids) - start - length
    unit = _tree_unit(
        input_ids, parents, labels, weights, len(examples), separate, answer_predictor
    )
    return {**unit, "trie_index": trie_index}


def _tree_unit(
    input_ids: list[int],
    parents: list[int],
    labels: list[int],
    weights: list[float],
    n_branches: int,
    separate_tokens: int,
    answer_predictor: list[int],
) -> dict[str, list]:
    """A packed unit from a token tree: depth position ids, and each label's predictor (its
    parent) for :func:`collate_packed`."""
    depth = np.zeros(len(parents), dtype=np.int64)
    for i, p in enumerate(parents):
        depth[i] = depth[p] + 1 if p >= 0 else 0
    return {
        "input_ids": input_ids,
        "parents": parents,
        "position_ids": depth.tolist(),
        "labels": labels,
        "predictor_index": [p if y != IGNORE else -1 for p, y in zip(parents, labels, strict=True)],
        "loss_weight": weights,
        "n_branches": n_branches,
        "separate_tokens": separate_tokens,
        "answer_predictor": answer_predictor,
    }


def is_conversation(examples: Sequence[dict]) -> bool:
    """Whether some example's tokens begin with another example's whole prompt and answer
    (respondent memory): then :func:`pack_trie` packs them without repeating the history."""
    ids = [list(e["input_ids"]) for e in examples]
    return any(
        len(b) > len(a) and b[: len(a) - 1] == a[:-1]
        for i, a in enumerate(ids)
        for b in ids[i + 1 :]
    )


def collate_packed(
    packed: Sequence[dict[str, list]],
    pad_token_id: int = 0,
    dtype: torch.dtype = torch.float32,
    pad_to_multiple_of: int | None = None,
) -> PackedBatch:
    """Right-pad packed sequences into a :class:`~surveysim_hf.batches.PackedBatch`.

    ``input_ids``, ``position_ids``, ``labels``, ``predictor_index`` ``(B, L)`` long;
    ``loss_weight`` ``(B, L)`` float32; ``attention_mask`` the additive 4D tree mask
    ``(B, 1, L, L)`` in ``dtype`` (use the model's compute dtype). Padding has label -100,
    weight 0, position 0 and attends only to itself. When every sequence has
    ``answer_predictor``: ``answer_predictor`` ``(B, most branches)`` long, -1 for none.
    ``n_tokens``: the sequences' tokens, padding excluded.
    """
    length = max(len(p["input_ids"]) for p in packed)
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    b = len(packed)

    def full(key, fill, dt):
        t = torch.full((b, length), fill, dtype=dt)
        for i, p in enumerate(packed):
            t[i, : len(p[key])] = torch.tensor(p[key], dtype=dt)
        return t

    answer = None
    if all("answer_predictor" in p for p in packed):
        answer = torch.full((b, max(len(p["answer_predictor"]) for p in packed)), -1)
        for i, p in enumerate(packed):
            answer[i, : len(p["answer_predictor"])] = torch.tensor(p["answer_predictor"])
    trie_index = None
    if all("trie_index" in p for p in packed):
        flat = [[i for branch in p["trie_index"] for i in branch] for p in packed]
        trie_index = torch.full((b, max(len(f) for f in flat)), -1)
        for i, f in enumerate(flat):
            trie_index[i, : len(f)] = torch.tensor(f)
    return PackedBatch(
        input_ids=full("input_ids", pad_token_id, torch.long),
        position_ids=full("position_ids", 0, torch.long),
        labels=full("labels", IGNORE, torch.long),
        predictor_index=full("predictor_index", -1, torch.long),
        loss_weight=full("loss_weight", 0.0, torch.float32),
        attention_mask=tree_attention_mask([p["parents"] for p in packed], length, dtype),
        answer_predictor=answer,
        trie_index=trie_index,
        n_tokens=sum(len(p["input_ids"]) for p in packed),
    )


def packed_logits(
    model, batch: Mapping[str, torch.Tensor], extra: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One forward pass over a packed batch: the logits ``(n_labels, V)`` that predict every
    labelled token (row-major order of ``predictor_index >= 0``) and, when ``extra`` ``(B, K)``
    positions are given (-1 = none), the logits at those positions (row-major order of
    ``extra >= 0``). A batch with ``inputs_embeds`` (hidden states from
    :class:`surveysim_hf.frozen.FrozenPrefix`) runs from those instead of ``input_ids``.

    For plain-head model types only the selected hidden states go through the LM head. Works
    with peft-wrapped models; differentiable.
    """
    # under DDP the forward must go through the wrapper (gradient synchronisation)
    ddp = isinstance(model, torch.nn.parallel.DistributedDataParallel)
    base = unwrap(model.module if ddp else model)
    kw = {
        "attention_mask": batch["attention_mask"],
        "position_ids": batch["position_ids"],
        "use_cache": False,
    }
    # cached states of frozen lower layers (surveysim_hf.frozen) replace the token ids
    if "inputs_embeds" in batch:
        kw["inputs_embeds"] = batch["inputs_embeds"]
    else:
        kw["input_ids"] = batch["input_ids"]
    rows, cols = torch.nonzero(batch["predictor_index"] >= 0, as_tuple=True)
    n_labels = len(rows)
    rows, cols = [rows], [batch["predictor_index"][rows, cols]]
    if extra is not None:
        extra_rows, extra_slots = torch.nonzero(extra >= 0, as_tuple=True)
        rows.append(extra_rows)
        cols.append(extra[extra_rows, extra_slots])
    rows, cols = torch.cat(rows), torch.cat(cols)
    if (
        not ddp
        and getattr(base.config, "model_type", None) in PLAIN_HEAD_TYPES
        and hasattr(base, "get_decoder")
    ):
        hidden = base.get_decoder()(**kw).last_hidden_state
        logits = base.get_output_embeddings()(hidden[rows, cols])
    else:
        logits = model(**kw).logits[rows, cols]
    return logits[:n_labels], (logits[n_labels:] if extra is not None else None)


def packed_cross_entropy(logits: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Weighted mean cross-entropy of the label logits of :func:`packed_logits`."""
    sel = batch["predictor_index"] >= 0
    targets, w = batch["labels"][sel], batch["loss_weight"][sel]
    ce = F.cross_entropy(logits.float(), targets, reduction="none")
    return (ce * w.to(ce.dtype)).sum() / w.sum().clamp_min(1e-12)


def packed_loss(model, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Weighted mean token cross-entropy of a packed batch (see module docstring): every
    labelled token's target is scored from its predictor's (parent's) hidden state."""
    logits, _ = packed_logits(model, batch)
    return packed_cross_entropy(logits, batch)


def examples_from_chat(
    tokenizer,
    system: str | None,
    qa_pairs: Sequence[tuple[str, str]],
    *,
    loss_on: str = "answer",
    chat_template_kwargs: dict | None = None,
) -> list[dict[str, list[int]]]:
    """Separate training examples (one per question) from the tokenizer's chat template.

    Each example is ``apply_chat_template([system, user, assistant])`` tokenised without
    extra special tokens; ``loss_on="answer"`` labels the tokens after the generation prompt
    (answer + end-of-turn), ``"all"`` labels every token. Raises if the prompt's tokens are
    not a prefix of the full example's tokens (a BPE merge across the boundary).
    """
    kw = chat_template_kwargs or {}
    out = []
    for q, a in qa_pairs:
        msgs = ([{"role": "system", "content": system}] if system is not None else []) + [
            {"role": "user", "content": q}
        ]
        prompt = tokenizer.apply_chat_template(
            msgs, tokenize=False, add_generation_prompt=True, **kw
        )
        full = tokenizer.apply_chat_template(
            [*msgs, {"role": "assistant", "content": a}], tokenize=False, **kw
        )
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        f_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        if f_ids[: len(p_ids)] != p_ids:
            raise ValueError("prompt tokens are not a prefix of the full example tokens")
        if loss_on == "all":
            labels = list(f_ids)
        elif loss_on == "answer":
            labels = [IGNORE] * len(p_ids) + list(f_ids[len(p_ids) :])
        else:
            raise ValueError("loss_on must be 'answer' or 'all'")
        out.append({"input_ids": list(f_ids), "labels": labels})
    return out
