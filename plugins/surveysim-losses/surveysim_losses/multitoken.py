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

The loss runs the model itself: the trainer calls it as every loss, ``loss(model, batch)``, with
a padded batch (it does not score packed batches, so ``packing: true`` falls back to them).
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
    token_nll_sum: torch.Tensor  # summed -log p over the label tokens
    label_tokens: int


class MultiTokenNumericPenaltyLoss(Loss):
    """Numeric penalty over exact full-string answer probabilities (see the module docstring)."""

    Options = MultiTokenNumericPenaltyOptions
    #: the loss runs the model itself over prompt + answer trie
    needs_answer_trie = True
    supports_packing = False

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
            aset = self.answer_set(batch.answer_types[b], question, vocab)
            trie = aset.trie
            answer = batch.answer_texts[b]
            if answer not in trie.answers:
                raise ValueError(f"answer {answer!r} of question {question!r} is not in its set")
            index = trie.answers.index(answer)
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
            lp = log_p[at : at + len(cols_b)]  # (n_nodes + 1, V): root, then every node
            at += len(cols_b)
            trie = aset.trie
            step = lp[aset.parent_row.to(device), torch.from_numpy(trie.token).to(device)]
            prefix = aset.path_matrix.to(device) @ step  # log prob of each node's token path
            ends = lp[torch.from_numpy(trie.answer_node + 1).to(device)]
            stop = ends[:, aset.terminal_ids.to(device)].logsumexp(dim=-1)
            log_probs.append(prefix[torch.from_numpy(trie.answer_node).to(device)] + stop)
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
        """The loss of one padded batch, running ``model`` over prompt + answer trie itself."""
        if isinstance(batch, PackedBatch):
            raise TypeError(
                "numeric_penalty_multitoken scores padded batches only (supports_packing is"
                " false); the trainer gives it padded batches"
            )
        return self.loss_from_scores(self.trie_scores(model, batch), batch)
