"""``numeric_penalty_multitoken``: the numeric penalty on whole answer strings, no rescaling.

For every example the model runs once over ``prompt + answer trie``: the prompt's tokens as a
chain, below its last token the trie of every answer string of the question (``0`` ... ``100``
on ``evshift``), and below the true answer's node the tokens that follow it in the training text
(the end-of-turn token). A tree attention mask and depth position ids (``surveysim_hf.tree``)
make every trie node compute exactly the state it has after ``prompt + its prefix`` alone, so
one forward pass gives the exact full-string probability of every answer, with the definition
of ``surveysim_hf.exact`` at temperature 1::

    P(a) = prod_k p(a_k | x, a_<k) * P(terminate | x, a)

where ``p`` is the softmax over the full vocabulary and ``P(terminate | x, a)`` the summed
probability of every token that does not begin with a digit (end-of-turn, eos, text ...),
which is what makes the integer parser read exactly ``a`` (``"1"`` is complete only if no digit
follows: it competes with ``"10"``, ``"100"``, ``"1000"``). Then, with the triangular kernel ``w``
over the answer codes (``d`` in answer units, e.g. 0-100)::

    L_pen = - mean over examples of  sum_a [ w(a, â) / sum_a' w(a', â) ] * log P(a)
    L_dist = mean over examples of  ((E_Q[a] - â) / span)^2,   Q = P renormalised on the answers
    L = (1 - alpha) * CE + alpha * L_pen + beta * L_dist

``CE`` is by default (``cross_entropy: tokens``) the usual mean token cross-entropy over the
label tokens of the training text, read from the same forward pass (the true answer's path in
the trie plus its end-of-turn token), so ``alpha = beta = 0`` is ``cross_entropy`` up to float
rounding; ``cross_entropy: exact`` uses ``-log P(â)`` (the full string including termination).

The loss runs the model itself: the trainer calls it as every loss, ``loss(model, batch)``.
With ``packing: true`` the trainer packs a respondent's examples with :meth:`pack_unit` into one
tree sequence (:func:`surveysim_hf.packing.pack_answer_tries`: the prompts as a token trie, so
the shared persona once, and every example's answer trie below its own prompt) and the loss reads
the same logits from that sequence (``PackedBatch.trie_index``), so packed and padded batches
give the same loss and gradients.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from surveysim_hf.batches import Batch, PackedBatch, PaddedBatch
from surveysim_hf.exact import model_logits_at
from surveysim_hf.forward import mask_dtype, output_size
from surveysim_hf.losses import Loss
from surveysim_hf.packing import pack_answer_tries, packed_logits
from surveysim_hf.texts import IGNORE_INDEX
from surveysim_hf.tree import (
    TreeSequence,
    Trie,
    ancestor_matrix,
    build_answer_trie,
    collate_tree_sequences,
)

from surveysim_losses.kernel import triangular_weights
from surveysim_losses.options import MultiTokenNumericPenaltyOptions


@dataclass
class AnswerSet:
    """An answer type's trie with what the loss needs to score it."""

    trie: Trie
    codes: torch.Tensor  # (n_answers,) float64 answer codes, in trie.answers order
    span: float
    path_matrix: torch.Tensor  # (n_nodes, n_nodes): [n, m] = 1 if m is n or an ancestor of n
    parent_row: torch.Tensor  # (n_nodes,) row of each node's predictor: 0 root, n + 1 node n
    terminal_ids: torch.Tensor  # token ids that end an answer


@dataclass
class TrieScores:
    """What one forward pass over ``prompt + answer trie`` gives for a batch."""

    log_probs: list[torch.Tensor]  # per example (n_answers,): log P(a), full strings
    true_index: list[int]  # per example: index of the true answer in its answer set
    answer_sets: list[AnswerSet]
    token_nll_sum: torch.Tensor  # summed -log p over the label tokens (weighted when packed)
    label_tokens: float  # label tokens (packed: their summed weight)


class MultiTokenNumericPenaltyLoss(Loss):
    """Numeric penalty over exact full-string answer probabilities (see the module docstring)."""

    Options = MultiTokenNumericPenaltyOptions
    #: the loss runs the model itself over prompt + answer trie
    needs_answer_trie = True
    #: packed batches must come from pack_unit (the trainer does that)
    supports_packing = True

    def __init__(self, options: MultiTokenNumericPenaltyOptions | None = None):
        super().__init__(options or MultiTokenNumericPenaltyOptions())
        self.tokenizer: Any = None
        self._sets: dict[tuple, AnswerSet] = {}

    def prepare(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._sets = {}

    # -- answer sets ---------------------------------------------------------------------------
    def answer_set(self, answer_type: Any, question: str, vocab_size: int) -> AnswerSet:
        if answer_type is None or not getattr(answer_type, "ordered", False):
            raise ValueError(
                f"numeric_penalty_multitoken needs an ordered numeric answer type, but question"
                f" {question!r} has {getattr(answer_type, 'describe', lambda: 'none')()}"
            )
        labels = tuple(str(label) for label in answer_type.labels)
        key = (labels, vocab_size)
        if key not in self._sets:
            if self.tokenizer is None:
                raise RuntimeError("call prepare(tokenizer) before computing the loss")
            # the exact decoder's default: a token that does not begin with a digit ends a number
            trie = build_answer_trie(self.tokenizer, labels, vocab_size=vocab_size)
            self._sets[key] = AnswerSet(
                trie=trie,
                codes=torch.tensor(np.asarray(answer_type.support, dtype=float)),
                span=float(answer_type.span),
                path_matrix=torch.from_numpy(ancestor_matrix(trie.parent).astype(np.float32)),
                parent_row=torch.from_numpy(trie.parent + 1),
                terminal_ids=torch.nonzero(trie.terminal_mask).flatten(),
            )
        return self._sets[key]

    def true_answer(self, example: Any, vocab_size: int) -> tuple[AnswerSet, int]:
        """The answer set of ``example``'s question (an ``Example`` or anything with
        ``answer_type``, ``question`` and ``answer_text``) and the index of its answer."""
        question = getattr(example, "question", None) or "?"
        aset = self.answer_set(example.answer_type, question, vocab_size)
        if example.answer_text not in aset.trie.answers:
            raise ValueError(
                f"answer {example.answer_text!r} of question {question!r} is not in its set"
            )
        return aset, aset.trie.answers.index(example.answer_text)

    # -- packed respondents --------------------------------------------------------------------
    def pack_unit(
        self, rows: list[dict[str, Any]], examples: list[Any], vocab_size: int
    ) -> dict[str, list]:
        """One packed tree sequence of ``rows`` (encoded examples: ``input_ids``, ``labels``,
        ``answer_start``, ``answer_length``) with the answer trie of each example's question
        (``examples``, same order) below its prompt: what the trainer packs a respondent into
        with ``packing: true`` (see :func:`surveysim_hf.packing.pack_answer_tries`)."""
        found = [self.true_answer(e, vocab_size) for e in examples]
        return pack_answer_tries(rows, [a.trie for a, _ in found], [i for _, i in found])

    def packed_trie_scores(self, model: Any, batch: PackedBatch) -> TrieScores:
        """What :meth:`trie_scores` gives for the same examples, from one forward pass over a
        batch packed with :meth:`pack_unit` (``batch.inputs_embeds``, the frozen layers' cached
        output, is used when present)."""
        if batch.trie_index is None or batch.answers is None:
            raise TypeError(
                "numeric_penalty_multitoken needs a packed batch with answer tries (trie_index"
                " and answers), packed with its pack_unit; the trainer does that"
            )
        vocab = output_size(model)
        answers = batch.answers
        found = [
            self.true_answer(_Answer(t, q, a), vocab)
            for t, q, a in zip(
                answers.answer_types,
                answers.questions or ["?"] * len(answers.answer_texts),
                answers.answer_texts,
                strict=True,
            )
        ]
        sizes = [aset.trie.n_nodes + 1 for aset, _ in found]
        rows, slots = torch.nonzero(batch.trie_index >= 0, as_tuple=True)
        if len(rows) != sum(sizes):
            raise ValueError(
                f"the packed batch scores {len(rows)} trie positions but its branches' answer"
                f" sets have {sum(sizes)}"
            )
        # the tokens at the trie positions must be the tries' own (a unit packed for other
        # answer sets or another tokenizer)
        tokens = batch.input_ids[rows, batch.trie_index[rows, slots]]
        for (aset, _), chunk in zip(found, tokens.split(sizes), strict=True):
            if not torch.equal(chunk[1:].cpu(), torch.from_numpy(aset.trie.token)):
                raise ValueError("the packed batch's trie tokens are not its answer set's")
        label_logits, node_logits = packed_logits(model, batch, batch.trie_index)
        sel = batch.predictor_index >= 0
        targets, weights = batch.labels[sel], batch.loss_weight[sel]
        label_lp = torch.log_softmax(label_logits.float(), dim=-1)  # full vocabulary, t = 1
        nll = -(label_lp.gather(1, targets[:, None])[:, 0] * weights.to(label_lp.dtype)).sum()
        node_lp = torch.log_softmax(node_logits.float(), dim=-1)
        log_probs = [
            answer_log_probs(lp, aset)
            for lp, (aset, _) in zip(node_lp.split(sizes), found, strict=True)
        ]
        return TrieScores(
            log_probs,
            [i for _, i in found],
            [aset for aset, _ in found],
            nll,
            float(weights.sum()),
        )

    # -- the forward pass over prompt + answer trie --------------------------------------------
    def trie_scores(self, model: Any, batch: PaddedBatch) -> TrieScores:
        """Run ``model`` once over every example's ``prompt + answer trie + tail`` and return the
        exact log-probability of every answer string and the token cross-entropy terms."""
        vocab = output_size(model)
        seqs, sets, true_index, score_cols, targets = [], [], [], [], []
        lengths = batch.attention_mask.sum(dim=1).tolist()
        for b, n in enumerate(lengths):
            ids = batch.input_ids[b, :n].tolist()
            labels = batch.labels[b, :n].tolist()
            start, length = int(batch.answer_start[b]), int(batch.answer_length[b])
            question = batch.questions[b] if batch.questions else "?"
            answer = batch.answer_texts[b]
            aset, index = self.true_answer(_Answer(batch.answer_types[b], question, answer), vocab)
            trie = aset.trie
            if ids[start : start + length] != trie.answer_tokens[index]:
                raise ValueError(
                    f"answer {answer!r} is tokenised differently in the training text"
                    f" ({ids[start : start + length]}) and on its own ({trie.answer_tokens[index]})"
                )
            path, node = [], -1
            for token in trie.answer_tokens[index]:
                node = trie.children[node + 1][token]
                path.append(node)
            offset, tail = start, ids[start + length :]
            tail_at = offset + trie.n_nodes
            parents = list(range(-1, start - 1))
            parents += trie.tree_parents(start - 1, offset)
            parents += [offset + path[-1], *range(tail_at, tail_at + len(tail) - 1)]
            tokens = ids[:start] + trie.token.tolist() + tail
            seqs.append(TreeSequence(tokens, parents[: len(tokens)]))
            # tree index of every token of the training text: prompt, answer path, tail
            where = [*range(start), *(offset + node for node in path)]
            where += range(tail_at, tail_at + len(tail))
            for i in range(1, n):
                if labels[i] != IGNORE_INDEX:
                    targets.append((b, seqs[-1].parents[where[i]], labels[i]))
            score_cols.append([start - 1, *range(offset, offset + trie.n_nodes)])
            sets.append(aset)
            true_index.append(index)

        device = batch.input_ids.device
        inputs = collate_tree_sequences(seqs, pad_token_id=0, dtype=mask_dtype(model))
        inputs = {key: value.to(device) for key, value in inputs.items()}
        rows = [b for b, cols in enumerate(score_cols) for _ in cols]
        cols = [c for c_list in score_cols for c in c_list]
        rows += [t[0] for t in targets]
        cols += [t[1] for t in targets]
        logits = model_logits_at(
            model,
            inputs,
            torch.tensor(rows, dtype=torch.long, device=device),
            torch.tensor(cols, dtype=torch.long, device=device),
        )
        log_p = torch.log_softmax(logits.float(), dim=-1)  # full vocabulary, t = 1

        n_scored = sum(len(c) for c in score_cols)
        target_ids = torch.tensor([t[2] for t in targets], dtype=torch.long, device=device)
        nll = -log_p[torch.arange(n_scored, len(rows), device=device), target_ids].sum()

        log_probs, at = [], 0
        for aset, cols_b in zip(sets, score_cols, strict=True):
            log_probs.append(answer_log_probs(log_p[at : at + len(cols_b)], aset))
            at += len(cols_b)
        return TrieScores(log_probs, true_index, sets, nll, len(targets))

    # -- the loss ------------------------------------------------------------------------------
    def loss_from_scores(self, scores: TrieScores, batch: PaddedBatch) -> torch.Tensor:
        opts = self.options
        device = scores.token_nll_sum.device
        if opts.cross_entropy == "tokens":
            ce = scores.token_nll_sum / max(scores.label_tokens, 1)
        else:
            ce = -torch.stack(
                [lp[i] for lp, i in zip(scores.log_probs, scores.true_index, strict=True)]
            ).mean()
        if opts.alpha == 0 and opts.beta == 0:
            return ce
        pens, dists = [], []
        for lp, aset, true in zip(
            scores.log_probs, scores.answer_sets, batch.answer_codes.tolist(), strict=True
        ):
            codes = aset.codes.to(device)
            weights = triangular_weights(codes, torch.tensor([true], device=device), opts.d)[0]
            pens.append(-(weights.to(lp.dtype) * lp).sum())
            expected = (torch.softmax(lp, dim=0) * codes.to(lp.dtype)).sum()
            dists.append(((expected - true) / aset.span) ** 2)
        loss = (1 - opts.alpha) * ce + opts.alpha * torch.stack(pens).mean()
        if opts.beta:
            loss = loss + opts.beta * torch.stack(dists).mean()
        return loss

    def __call__(self, model: Any, batch: Batch) -> torch.Tensor:
        """The loss of one batch, running ``model`` over prompt + answer trie itself: each
        padded example on its own, or each packed respondent (from :meth:`pack_unit`) at once."""
        if isinstance(batch, PackedBatch):
            return self.loss_from_scores(self.packed_trie_scores(model, batch), batch.answers)
        return self.loss_from_scores(self.trie_scores(model, batch), batch)


@dataclass
class _Answer:
    """What :meth:`MultiTokenNumericPenaltyLoss.true_answer` reads from an example."""

    answer_type: Any
    question: str
    answer_text: str


def answer_log_probs(lp: torch.Tensor, aset: AnswerSet) -> torch.Tensor:
    """``log P(a)`` of every answer of ``aset`` from the log-softmax rows ``lp``
    ``(n_nodes + 1, V)``: at the prompt's last token (the root), then at every trie node."""
    device = lp.device
    trie = aset.trie
    step = lp[aset.parent_row.to(device), torch.from_numpy(trie.token).to(device)]
    prefix = aset.path_matrix.to(device) @ step  # log prob of each node's token path
    ends = lp[torch.from_numpy(trie.answer_node + 1).to(device)]
    stop = ends[:, aset.terminal_ids.to(device)].logsumexp(dim=-1)
    return prefix[torch.from_numpy(trie.answer_node).to(device)] + stop
