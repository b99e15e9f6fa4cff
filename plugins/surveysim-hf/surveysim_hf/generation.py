"""Answering: batched generation with greedy decoding or ancestral sampling.

Every prompt gets its own random stream, seeded from (seed, prompt index), and draws one uniform
number per generated token; so a prompt's sampled answer does not depend on the batch it lands
in, the batch size or the number of processes. Prompts are split across processes with
Accelerate and the answers gathered back into the original order.
"""

from __future__ import annotations

import inspect
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from surveysim_core.protocols import Prompt
from surveysim_hf.texts import encode_prompts, end_of_turn

#: seconds one chunk of exact answer distributions aims at (the progress bar moves per chunk)
CHUNK_SECONDS = 5.0


def prompt_seed(seed: int, index: int) -> int:
    return (int(seed) * 1_000_003 + int(index) * 7_919 + 12_345) % (2**63 - 1)


def stop_token_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    turn_end = end_of_turn(tokenizer, Prompt("", "x"))
    if turn_end:
        turn_ids = tokenizer(turn_end, add_special_tokens=False)["input_ids"]
        if len(turn_ids) == 1:
            ids.add(turn_ids[0])
    return ids


@torch.no_grad()
def _accepts_logits_to_keep(model: Any) -> bool:
    from surveysim_hf.forward import unwrap

    return "logits_to_keep" in inspect.signature(unwrap(model).forward).parameters


def generate_ids(
    model: Any,
    prompt_ids: Sequence[Sequence[int]],
    seeds: Sequence[int],
    temperature: float,
    max_new_tokens: int,
    pad_token_id: int,
    stop_ids: set[int],
) -> list[list[int]]:
    """New token ids for each prompt (left-padded batch, KV cache, stop at a stop token)."""
    device = next(model.parameters()).device
    n = len(prompt_ids)
    width = max(len(p) for p in prompt_ids)
    input_ids = torch.full((n, width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for row, ids in enumerate(prompt_ids):
        input_ids[row, width - len(ids) :] = torch.tensor(list(ids), dtype=torch.long)
        mask[row, width - len(ids) :] = 1
    input_ids, mask = input_ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    generators = [torch.Generator().manual_seed(s) for s in seeds] if temperature > 0 else []
    stops = torch.tensor(sorted(stop_ids), dtype=torch.long, device=device)
    finished = torch.zeros(n, dtype=torch.bool, device=device)
    out: list[list[int]] = [[] for _ in range(n)]
    past = None
    step_ids, step_positions = input_ids, positions
    # only the last position's logits are used: skip the LM head (and a (batch, width, vocab)
    # tensor) for the rest of the prompt where the model supports it
    keep = {"logits_to_keep": 1} if _accepts_logits_to_keep(model) else {}
    for _ in range(max_new_tokens):
        result = model(
            input_ids=step_ids,
            attention_mask=mask,
            position_ids=step_positions,
            past_key_values=past,
            use_cache=True,
            **keep,
        )
        past = result.past_key_values
        logits = result.logits[:, -1, :].float()
        if temperature > 0:
            probs = torch.softmax(logits / temperature, dim=-1).double().cpu()
            cdf = probs.cumsum(-1)
            uniforms = torch.stack(
                [torch.rand(1, generator=g, dtype=torch.float64) for g in generators]
            )
            chosen = torch.searchsorted(cdf, uniforms * cdf[:, -1:]).squeeze(-1)
            chosen = chosen.clamp(max=logits.size(-1) - 1).to(device)
        else:
            chosen = logits.argmax(-1)
        chosen = torch.where(finished, torch.full_like(chosen, pad_token_id), chosen)
        for row in range(n):
            if not finished[row]:
                out[row].append(int(chosen[row]))
        if len(stops):
            finished |= torch.isin(chosen, stops)
        if bool(finished.all()):
            break
        step_ids = chosen.unsqueeze(-1)
        step_positions = step_positions[:, -1:] + 1
        mask = torch.cat([mask, torch.ones((n, 1), dtype=mask.dtype, device=device)], dim=-1)
    return out


class HFModel:
    """A loaded causal LM (with or without adapter) that answers survey prompts."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        accelerator: Any,
        batch_size: int = 16,
        progress_bars: bool = True,
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.accelerator = accelerator
        self.batch_size = batch_size
        self.progress_bars = progress_bars
        self.stop_ids = stop_token_ids(model, tokenizer)
        #: positions run through the model by answer_distribution (padding included)
        self.exact_tokens = 0
        #: positions run through the model by generation (padding included)
        self.generated_tokens = 0

    @property
    def forward_tokens(self) -> int:
        """Every position this model has run forward while answering (the core divides it by
        the answering time for the run's forward tokens/s)."""
        return self.exact_tokens + self.generated_tokens

    def prompt_ids(self, prompts: Sequence[Prompt]) -> list[list[int]]:
        """Token ids of each prompt in the model's chat format, ending where the answer starts."""
        return encode_prompts(self.tokenizer, prompts)

    def generate_local(
        self,
        prompts: Sequence[Prompt],
        indices: Sequence[int],
        temperature: float,
        max_new_tokens: int,
        seed: int,
    ) -> list[str]:
        """Answers for the given prompts in this process; ``indices`` seed each prompt's stream."""
        ids = self.prompt_ids(prompts)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # less padding per batch
        texts: list[str] = [""] * len(ids)
        bar = tqdm(
            total=len(ids),
            desc=f"answering t={temperature:g}",
            unit="prompt",
            file=sys.stderr,
            disable=not (self.progress_bars and self.accelerator.is_local_main_process),
        )
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            new = generate_ids(
                self.model,
                [ids[i] for i in rows],
                [prompt_seed(seed, indices[i]) for i in rows],
                temperature,
                max_new_tokens,
                self.tokenizer.pad_token_id,
                self.stop_ids,
            )
            # the padded prompt once, then one position per row and generated step
            steps = max((len(t) for t in new), default=0)
            self.generated_tokens += len(rows) * (
                max(len(ids[i]) for i in rows) + max(steps - 1, 0)
            )
            for row, tokens in zip(rows, new, strict=True):
                texts[row] = self.tokenizer.decode(tokens, skip_special_tokens=True)
            bar.update(len(rows))
        bar.close()
        return texts

    def generate(
        self, prompts: Sequence[Prompt], temperature: float, max_new_tokens: int, seed: int
    ) -> list[str]:
        """One generated continuation per prompt, in order; temperature 0 is greedy.

        With several processes each answers its share and every process gets all answers.
        """
        from accelerate.utils import gather_object

        prompts = list(prompts)
        acc = self.accelerator
        if acc.num_processes == 1:
            return self.generate_local(
                prompts, range(len(prompts)), temperature, max_new_tokens, seed
            )
        with acc.split_between_processes(list(range(len(prompts)))) as mine:
            local = self.generate_local(
                [prompts[i] for i in mine], mine, temperature, max_new_tokens, seed
            )
            pairs = list(zip(mine, local, strict=True))
        merged = gather_object(pairs)
        answers: dict[int, str] = {}
        for index, text in merged:
            if index in answers:
                raise RuntimeError(f"prompt {index} was answered by two processes")
            answers[index] = text
        missing = [i for i in range(len(prompts)) if i not in answers]
        if missing:
            raise RuntimeError(f"{len(missing)} prompts got no answer (first: {missing[0]})")
        return [answers[i] for i in range(len(prompts))]

    def answer_distribution(
        self,
        prompts: Sequence[Prompt],
        answers: Sequence[str],
        temperatures: Sequence[float],
        share_prefix: bool | int = True,
    ) -> dict[float, np.ndarray]:
        """Exact probability of each answer string per prompt and temperature.

        Digit strings are numbers (ended by any non-digit token); other strings are words such
        as option labels, ended by a stop token (:mod:`surveysim_hf.labels`). Computed by
        :func:`surveysim_hf.exact.answer_distribution`: one tree-attention pass per
        batch gives every temperature. Prompts are sorted by (system, user) text so that prompts
        of the same persona are neighbours, then split across processes in contiguous runs of
        that order (a persona's prompts stay on one process and share their prefix,
        ``share_prefix``), answered in chunks (progress bar) and gathered back in order.
        """
        from accelerate.utils import gather_object

        prompts = list(prompts)
        temps = [float(t) for t in temperatures]
        order = sorted(range(len(prompts)), key=lambda i: (prompts[i].system, prompts[i].user))
        acc = self.accelerator
        if acc.num_processes == 1:
            local = self._distribution_local(
                [prompts[i] for i in order], answers, temps, share_prefix
            )
            pairs = list(zip(order, local, strict=True))
        else:
            with acc.split_between_processes(order) as mine:
                local = self._distribution_local(
                    [prompts[i] for i in mine], answers, temps, share_prefix
                )
                pairs = list(zip(mine, local, strict=True))
            pairs = gather_object(pairs)
        rows: dict[int, np.ndarray] = {}
        for index, row in pairs:
            if index in rows:
                raise RuntimeError(f"prompt {index} was answered by two processes")
            rows[index] = row
        if len(rows) != len(prompts):
            raise RuntimeError(f"{len(prompts) - len(rows)} prompts got no answer distribution")
        k = len(answers)
        return {
            t: np.array([rows[i][j] for i in range(len(prompts))]).reshape(len(prompts), k)
            for j, t in enumerate(temps)
        }

    def _distribution_local(
        self,
        prompts: list[Prompt],
        answers: Sequence[str],
        temperatures: list[float],
        share_prefix: bool | int,
    ) -> list[np.ndarray]:
        """One ``(n_temperatures, K)`` array per prompt; prompts arrive sorted by persona."""
        from surveysim_hf.exact import answer_distribution
        from surveysim_hf.forward import output_size
        from surveysim_hf.labels import answer_trie

        if not prompts:
            return []
        ids = self.prompt_ids(prompts)
        # digits end at a non-digit token; labels at a stop token, where generate() stops
        trie, columns = answer_trie(
            self.tokenizer, list(answers), self.stop_ids, vocab_size=output_size(self.model)
        )
        # chunks of whole personas (so sharing is not cut), sized for the bar: the first is one
        # batch, timed; later ones aim at CHUNK_SECONDS each (at most 8 batches), so that the bar
        # and its ETA move every few seconds on a slow CPU too
        smallest, largest = max(1, self.batch_size), max(1, 8 * self.batch_size)
        step = smallest

        def next_end(start: int, step: int) -> int:
            end = min(len(prompts), start + step)
            while end < len(prompts) and prompts[end].system == prompts[end - 1].system:
                end += 1
            return end

        out: list[np.ndarray] = []
        bar = tqdm(
            total=len(prompts),
            desc="exact answer distribution",
            unit="prompt",
            file=sys.stderr,
            disable=not (self.progress_bars and self.accelerator.is_local_main_process),
        )
        start = 0
        while start < len(prompts):
            end = next_end(start, step)
            tick = time.perf_counter()
            result = answer_distribution(
                self.model,
                self.tokenizer,
                ids[start:end],
                trie,
                temperatures,
                share_prefix=share_prefix,
                batch_size=self.batch_size,
                # long packed sequences cost attention (quadratic) and a large mask; measured
                # on SmolLM2 / CPU: 1024 beats both 4096 and no sharing
                max_seq_tokens=1024,
            )
            self.exact_tokens += int(result.padded_tokens)
            stacked = np.zeros((end - start, len(temperatures), len(answers)))
            for j, t in enumerate(temperatures):
                stacked[:, j, columns] = result.probs[t]
            out.extend(stacked)
            bar.update(end - start)
            seconds = max(time.perf_counter() - tick, 1e-6)
            step = int(min(largest, max(smallest, (end - start) / seconds * CHUNK_SECONDS)))
            start = end
        bar.close()
        return out
