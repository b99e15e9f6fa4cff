"""Exact answer distributions from one tree-attention forward pass per batch.

For each prompt we place the trie of all answer token sequences after the prompt's last
token and run the model once over ``prompt + trie`` with a tree attention mask (see
``tree.py``). The logits at the prompt's last token and at every trie node give every
next-token distribution needed to score every answer exactly.

Definition (ancestral sampling at temperature ``t``, ``p_t = softmax(logits / t)`` over the
**full** vocabulary at every step). For an answer string ``s`` with tokens ``s_1..s_n``::

    P_t(s) = prod_k p_t(s_k | prompt, s_<k) * P_t(terminate | prompt, s)
    P_t(terminate | prompt, s) = sum over terminator tokens v of p_t(v | prompt, s)

Terminator tokens (``build_answer_trie``): by default (``non_digit_terminates=True``) every
token whose decoded text does not begin with an ASCII digit (eos / ``<|im_end|>`` included):
it ends the integer, so the parser reads exactly ``s``. With ``non_digit_terminates=False``
only ``terminator_ids`` (eos / end-of-turn) terminate. Because ``"1"`` is a prefix of ``"10"``
and ``"100"``, internal trie nodes carry termination probabilities too. The mass that leaves
the answer set is ``leave = 1 - sum_s P_t(s)``: a first token that is not an answer token,
continuations outside the set (``"101"``, ``"1000"``), leading zeros (``"05"``) and, in eos
mode, answers followed by any non-terminator.

Scope: the distribution is over generations that *begin* with the answer (right after the
assistant header). A generation such as ``"I'd say 55"`` is counted in ``leave`` although the
"first integer anywhere" parser would read 55; with a (fine-tuned) model that answers
directly this mass is negligible, and ``leave`` bounds it. The computation is exact for the
parser when digit tokens are single digits (SmolLM2, Llama 3: ``digit_token_ids`` reports
it); otherwise non-canonical tokenisations of the same string are not counted.

Greedy (``t = 0``): from the root, take the argmax token over the full vocabulary; descend if
it is a trie child; stop with the node's answer if it is a terminator at an answer node;
otherwise failure (``-1``). This is what ``generate(do_sample=False)`` followed by the strict
parser does, computed from the same logits.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

# the helpers live in forward.py; the private names keep the code below, and old imports, as
# they were
from .forward import PLAIN_HEAD_TYPES as _PLAIN_HEAD_TYPES
from .forward import mask_dtype as _mask_dtype
from .forward import output_size as _output_size
from .forward import unwrap as _unwrap
from .tree import TreeSequence, Trie, build_answer_trie, collate_tree_sequences

__all__ = [
    "AnswerDistribution",
    "answer_distribution",
    "group_shared_prefixes",
    "model_logits_at",
    "parse_leading_answer",
]


@dataclass
class AnswerDistribution:
    """Result of :func:`answer_distribution` (rows follow the input prompt order).

    ``probs[t]``: ``(n_prompts, n_answers)`` float64, ``P_t(answer)``; ``leave[t]``:
    ``(n_prompts,)`` mass outside the answer set (``1 - row sum``, clipped at 0). ``t = 0``
    gives the one-hot greedy distribution. ``greedy``: ``(n_prompts,)`` int64 answer index, -1
    on failure. ``tokens``: tokens processed attributed to each prompt (a shared prefix is
    split evenly between the prompts sharing it), excluding padding; ``padded_tokens``: all
    positions run through the model, padding included.
    """

    answers: list[str]
    probs: dict[float, np.ndarray]
    leave: dict[float, np.ndarray]
    greedy: np.ndarray
    tokens: np.ndarray
    padded_tokens: int = 0
    n_forward: int = 0
    extra: dict = field(default_factory=dict)

    def greedy_answers(self) -> list[str | None]:
        return [self.answers[g] if g >= 0 else None for g in self.greedy]


def model_logits_at(
    model, inputs: dict[str, torch.Tensor], rows: torch.Tensor, cols: torch.Tensor
) -> torch.Tensor:
    """Logits ``(len(rows), V)`` at positions ``(rows[i], cols[i])`` of a tree batch.

    For plain-head model types (Llama family, Qwen, Mistral ...) only the selected hidden
    states go through the LM head (saves time and memory); otherwise the full forward runs.
    Works for peft-wrapped models (LoRA layers are injected in the decoder / head modules).
    """
    base = _unwrap(model)
    kw = {
        "input_ids": inputs["input_ids"],
        "attention_mask": inputs["attention_mask"],
        "position_ids": inputs["position_ids"],
        "use_cache": False,
    }
    if getattr(base.config, "model_type", None) in _PLAIN_HEAD_TYPES and hasattr(
        base, "get_decoder"
    ):
        hidden = base.get_decoder()(**kw).last_hidden_state
        return base.get_output_embeddings()(hidden[rows, cols])
    return model(**kw).logits[rows, cols]


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def group_shared_prefixes(
    ids: Sequence[Sequence[int]],
    min_shared: int,
    extra_per_member: int = 0,
    max_seq_tokens: int | None = None,
) -> list[list[int]]:
    """Group prompts for prefix sharing: prompts are sorted by token sequence and consecutive
    prompts join a group while they share at least ``min_shared`` leading tokens with their
    predecessor and the packed group (distinct prefix-tree tokens + ``extra_per_member`` per
    prompt) stays within ``max_seq_tokens``. Returns lists of prompt indices."""
    order = sorted(range(len(ids)), key=lambda i: list(ids[i]))
    groups: list[list[int]] = []
    cur: list[int] = []
    size = 0
    for i in order:
        if cur:
            lcp = _lcp(ids[cur[-1]], ids[i])
            add = len(ids[i]) - lcp + extra_per_member
            if lcp >= max(min_shared, 1) and (
                max_seq_tokens is None or size + add <= max_seq_tokens
            ):
                cur.append(i)
                size += add
                continue
            groups.append(cur)
        cur, size = [i], len(ids[i]) + extra_per_member
    if cur:
        groups.append(cur)
    return groups


def _group_sequence(ids, members, trie: Trie):
    """Tree sequence for a group: the prefix tree of the members' prompts (each distinct
    prefix once) with an answer trie below each prompt's last token.

    Returns ``(seq, [(member, predictor positions (N+1,), tokens attributed)])``."""
    tokens: list[int] = []
    parents: list[int] = []
    children: dict[tuple[int, int], int] = {}
    paths = []
    for m in members:
        node, path = -1, []
        for t in ids[m]:
            key = (node, int(t))
            if key not in children:
                children[key] = len(tokens)
                tokens.append(int(t))
                parents.append(node)
            node = children[key]
            path.append(node)
        paths.append(path)
    users = np.zeros(len(tokens))
    for path in paths:
        users[path] += 1
    out = []
    for m, path in zip(members, paths, strict=True):
        last = path[-1]
        offset = len(tokens)
        tokens.extend(int(t) for t in trie.token)
        parents.extend(trie.tree_parents(last, offset))
        pred = np.concatenate([[last], offset + np.arange(trie.n_nodes)])
        own = float((1.0 / users[path]).sum()) + trie.n_nodes
        out.append((m, pred, own))
    return TreeSequence(tokens, parents), out


def _log_masses(
    logits: torch.Tensor, term: torch.Tensor, temperatures: Sequence[float], rows: int = 64
) -> dict[float, tuple[torch.Tensor, torch.Tensor]]:
    """For each temperature ``t > 0`` and each row of ``logits`` (R, V): ``log Z_t`` (the
    log-partition of ``logits / t`` over the full vocabulary) and the log of the terminator
    mass ``log sum_{v terminal} exp(logits_v / t)``, both float64.

    Works through ``rows`` rows at a time with one reused buffer (no ``(R, V)`` log-softmax per
    temperature). Both sums are of positive terms, so the terminator mass keeps its relative
    precision even when it is tiny: the smaller of the terminal / non-terminal token sets is
    gathered, and when that is the non-terminal set it is zeroed before the terminal sum.
    """
    n_rows, vocab = logits.shape
    n_term = int(term.sum())
    small_is_term = n_term <= vocab - n_term
    small = torch.nonzero(term if small_is_term else ~term).flatten().to(logits.device)
    temps = [t for t in temperatures if t > 0]
    log_z = {t: torch.empty(n_rows, dtype=torch.float64) for t in temps}
    log_term = {t: torch.empty(n_rows, dtype=torch.float64) for t in temps}
    shifted = torch.empty((min(rows, n_rows), vocab), dtype=torch.float32, device=logits.device)
    scaled = torch.empty_like(shifted)
    for start in range(0, n_rows, rows):
        chunk = logits[start : start + rows].float()
        r = len(chunk)
        top = chunk.max(dim=-1, keepdim=True).values
        z = torch.sub(chunk, top, out=shifted[:r])  # <= 0: exp never overflows
        top = top.squeeze(-1).double().cpu()
        for t in temps:
            e = torch.div(z, t, out=scaled[:r]).exp_()
            small_sum = e[:, small].double().sum(-1)
            if small_is_term:
                total, terminal = e.sum(-1).double(), small_sum
            else:
                terminal = e.index_fill_(1, small, 0.0).sum(-1).double()
                total = terminal + small_sum
            log_z[t][start : start + r] = top / t + total.log().cpu()
            log_term[t][start : start + r] = top / t + terminal.log().cpu()
    return {t: (log_z[t], log_term[t]) for t in temps}


def _scores(logits: torch.Tensor, trie: Trie, temperatures: Sequence[float]):
    """logits (M, N+1, V) at [root, node_0..node_{N-1}] -> probs per temperature, greedy."""
    m, k, vocab = logits.shape
    prow = torch.from_numpy(trie.parent + 1)
    tok = torch.from_numpy(trie.token)
    arows = torch.from_numpy(trie.answer_node + 1)
    # the logit of each node's token at its parent's row: (M, N)
    token_logit = logits[:, prow, tok].double().cpu()
    masses = _log_masses(logits.reshape(m * k, vocab), trie.terminal_mask, temperatures)
    res = {}
    for t, (log_z, log_term) in masses.items():
        log_z, log_term = log_z.view(m, k), log_term.view(m, k)
        step = token_logit / t - log_z[:, prow]  # log p_t(node token | parent), (M, N)
        path = torch.zeros_like(step)
        for d in range(int(trie.depth.max()) + 1):
            nodes = np.nonzero(trie.depth == d)[0]
            par = trie.parent[nodes]
            prev = path[:, torch.from_numpy(par)] if d > 0 else 0.0
            path[:, torch.from_numpy(nodes)] = step[:, torch.from_numpy(nodes)] + prev
        lt = log_term[:, arows] - log_z[:, arows]  # log P_t(terminate | answer)
        res[t] = torch.exp(path[:, torch.from_numpy(trie.answer_node)] + lt).numpy()
    am = logits.argmax(-1).cpu().numpy()  # (M, N+1)
    greedy = np.full(len(am), -1, dtype=np.int64)
    termn = trie.terminal_mask.cpu().numpy()
    for i, row in enumerate(am):
        node = -1
        while True:
            a = int(row[node + 1])
            child = trie.children[node + 1].get(a)
            if child is not None:
                node = child
                continue
            if node >= 0 and trie.answer[node] >= 0 and a < len(termn) and termn[a]:
                greedy[i] = trie.answer[node]
            break
    return res, greedy


def _bytes_per_row(model, length: int, n_keep: int, vocab: int) -> int:
    cfg = _unwrap(model).config
    heads = getattr(cfg, "num_attention_heads", 16)
    hidden = getattr(cfg, "hidden_size", 1024)
    inter = getattr(cfg, "intermediate_size", 4 * hidden)
    attn = 3 * heads * length * length * 4  # scores + softmax + mask
    act = length * (4 * hidden + 3 * inter) * 4
    logits = 3 * n_keep * vocab * 4
    return attn + act + logits


@torch.no_grad()
def answer_distribution(
    model,
    tokenizer,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    answers: Sequence[str] | Trie,
    temperatures: Sequence[float] = (1.0,),
    *,
    terminator_ids: Sequence[int] | None = None,
    non_digit_terminates: bool = True,
    share_prefix: bool | int = False,
    batch_size: int = 16,
    max_batch_tokens: int = 16384,
    max_seq_tokens: int = 4096,
    memory_budget_bytes: int = 2 << 30,
    add_special_tokens: bool = False,
    check_tokenization: bool = True,
) -> AnswerDistribution:
    """Exact distribution over ``answers`` for every prompt, for every temperature.

    ``prompts``: fully formatted prompt texts (chat template applied, ending with the
    assistant header) tokenised with ``add_special_tokens``, or lists of token ids.
    ``answers``: answer strings (or a prebuilt :class:`Trie`; then ``terminator_ids`` /
    ``non_digit_terminates`` are ignored). ``share_prefix``: ``True`` (min 16 tokens) or an
    int minimum: prompts sharing a token prefix (a respondent's persona/system turn) are
    packed into one tree sequence: the prefix tree of their token sequences (every distinct
    prefix computed once, so nested sharing such as "common system text" > "persona" >
    "question" is exploited) with an answer trie below each prompt; each branch sees only its
    own ancestors, so results equal the unshared computation up to float rounding. Batches: sequences are sorted by length and grouped so
    that ``rows <= batch_size``, ``rows * length <= max_batch_tokens`` and an activation
    estimate stays within ``memory_budget_bytes``. See the module docstring for the exact
    definition of ``P_t``.
    """
    temperatures = [float(t) for t in temperatures]
    vocab = _output_size(model)
    trie = (
        answers
        if isinstance(answers, Trie)
        else build_answer_trie(
            tokenizer,
            answers,
            terminator_ids,
            non_digit_terminates=non_digit_terminates,
            vocab_size=vocab,
        )
    )
    if prompts and isinstance(prompts[0], str):
        ids = [
            list(tokenizer(p, add_special_tokens=add_special_tokens)["input_ids"]) for p in prompts
        ]
        if check_tokenization:
            p0 = prompts[0]
            bad = [
                a
                for a, at in zip(trie.answers, trie.answer_tokens, strict=True)
                if tokenizer(p0 + a, add_special_tokens=add_special_tokens)["input_ids"]
                != ids[0] + at
            ]
            if bad:
                warnings.warn(
                    f"prompt + answer does not tokenise as prompt tokens + answer tokens for "
                    f"{len(bad)} answers (e.g. {bad[:3]}); the trie scores the separately "
                    "tokenised answers",
                    stacklevel=2,
                )
    else:
        ids = [list(map(int, p)) for p in prompts]
    if any(len(x) == 0 for x in ids):
        raise ValueError("empty prompt")
    n = len(ids)
    if share_prefix:
        min_shared = 16 if share_prefix is True else int(share_prefix)
        groups = group_shared_prefixes(ids, min_shared, trie.n_nodes, max_seq_tokens)
    else:
        groups = [[i] for i in range(n)]
    seqs = [_group_sequence(ids, m, trie) for m in groups]
    order = sorted(range(len(seqs)), key=lambda g: -len(seqs[g][0]))

    probs = {t: np.zeros((n, trie.n_answers)) for t in temperatures if t > 0}
    greedy = np.full(n, -1, dtype=np.int64)
    tokens = np.zeros(n)
    padded = 0
    n_forward = 0
    mdtype = _mask_dtype(model)
    device = next(model.parameters()).device
    k = trie.n_nodes + 1
    i = 0
    while i < len(order):
        length = len(seqs[order[i]][0])
        per_row = _bytes_per_row(model, length, k * len(seqs[order[i]][1]), vocab)
        rows = max(
            1,
            min(
                batch_size,
                max_batch_tokens // max(length, 1),
                memory_budget_bytes // max(per_row, 1),
            ),
        )
        batch = order[i : i + rows]
        i += rows
        inputs = collate_tree_sequences([seqs[g][0] for g in batch], pad_token_id=0, dtype=mdtype)
        inputs = {key: v.to(device) for key, v in inputs.items()}
        padded += inputs["input_ids"].numel()
        n_forward += 1
        members, rr, cc = [], [], []
        for b, g in enumerate(batch):
            for m, pred, own in seqs[g][1]:
                members.append(m)
                rr.append(np.full(k, b))
                cc.append(pred)
                tokens[m] = own
        rr_t = torch.from_numpy(np.concatenate(rr)).to(device)
        cc_t = torch.from_numpy(np.concatenate(cc)).to(device)
        logits = model_logits_at(model, inputs, rr_t, cc_t).view(len(members), k, -1)
        res, greedy[members] = _scores(logits, trie, temperatures)
        for t, p in res.items():
            probs[t][members] = p
    if 0.0 in temperatures:
        onehot = np.zeros((n, trie.n_answers))
        ok = greedy >= 0
        onehot[np.nonzero(ok)[0], greedy[ok]] = 1.0
        probs[0.0] = onehot
    leave = {t: np.clip(1.0 - p.sum(1), 0.0, 1.0) for t, p in probs.items()}
    return AnswerDistribution(
        answers=list(trie.answers),
        probs=probs,
        leave=leave,
        greedy=greedy,
        tokens=tokens,
        padded_tokens=int(padded),
        n_forward=n_forward,
    )


def parse_leading_answer(token_ids: Sequence[int], trie: Trie) -> int:
    """Strict parser matching the exact definition: index of the answer that the generated
    ``token_ids`` begin with, followed by a terminator (see ``build_answer_trie``); -1
    otherwise. Whatever follows the terminator (e.g. padding after eos) is ignored; a generation
    that ends (max length) right after an answer's tokens without terminator counts as -1."""
    node = -1
    term = trie.terminal_mask
    for a in token_ids:
        a = int(a)
        child = trie.children[node + 1].get(a)
        if child is not None:
            node = child
            continue
        if node >= 0 and trie.answer[node] >= 0 and bool(term[a]):
            return int(trie.answer[node])
        return -1
    return -1
