"""LoRA / QLoRA fine-tuning (:class:`Trainer`): Accelerate, best epoch by validation loss,
resumable.

Layout of the output folder (``out_dir``)::

    adapter_config.json, adapter_model.safetensors   the best epoch's adapter (what load() uses)
    epochs/epoch-<n>/                                 the adapter after each epoch
    checkpoint/                                       the last resumable state (see checkpoint.py)
    train_log.csv                                     epoch, step, split, loss, tokens, seconds
    training.json                                     summary: best epoch, validation losses, ...

Data order is a seeded permutation per epoch, so a resumed run sees the same batches as an
uninterrupted one; with several processes each optimizer step takes ``batch_size`` examples per
process from one global batch.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from surveysim_core.errors import OutputError
from surveysim_core.files import atomic_write, output_errors, replace_directory
from surveysim_core.protocols import Example
from surveysim_hf import checkpoint as ckpt
from surveysim_hf.batches import Batch, PackedBatch, PaddedBatch, collate
from surveysim_hf.forward import output_size
from surveysim_hf.frozen import FrozenPrefix, FrozenStore, frozen_split
from surveysim_hf.losses import as_loss
from surveysim_hf.models import surveysim_cache
from surveysim_hf.options import HFOptions
from surveysim_hf.packing import collate_packed, is_conversation, pack_respondent, pack_trie
from surveysim_hf.texts import EncodedExample, encode_example

LOG_COLUMNS = ["epoch", "step", "split", "loss", "tokens", "seconds"]
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
#: options that do not change what is trained (may differ between a run and its resumption)
NOT_FINGERPRINTED = {
    "threads",
    "progress_bars",
    "generation_batch_size",
    "eval_batch_size",
    "cache_frozen_layers",  # exact: the same loss and gradients either way
    "store_frozen_layers",  # where the cached states are kept
}


class ResumeMismatch(RuntimeError):
    """A checkpoint was written for different options or data than the run resuming it."""


@dataclass
class TrainResult:
    adapter_dir: Path
    best_epoch: int
    val_losses: list[float]
    steps: int
    tokens_per_second: float


def fingerprint(
    options: HFOptions, loss: Any, train: Sequence[Example], val: Sequence[Example]
) -> str:
    digest = hashlib.sha256()
    opts = {k: v for k, v in options.model_dump().items() if k not in NOT_FINGERPRINTED}
    loss_opts = loss.options.model_dump() if getattr(loss, "options", None) is not None else None
    digest.update(json.dumps([opts, type(loss).__name__, loss_opts], sort_keys=True).encode())
    for split in (train, val):
        digest.update(f"|{len(split)}|".encode())
        for e in split:
            digest.update(f"{e.prompt.system}\0{e.prompt.user}\0{e.answer_text}\0".encode())
    return digest.hexdigest()


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator).tolist()


def rank_slice(chunk: list[int], rank: int, world: int) -> tuple[list[int], float]:
    """This process's share of one global batch, and a weight (0 for a padding share)."""
    per = math.ceil(len(chunk) / world)
    mine = chunk[rank * per : (rank + 1) * per]
    if not mine:  # fewer examples than processes: repeat one, contributing nothing
        return chunk[-1:], 0.0
    return mine, 1.0


def respondents_per_batch(batch_size: int, examples: int, units: int) -> int:
    """Packed units (respondents) per forward pass: as many as hold at most ``batch_size``
    examples on average, at least one.

    Rounding down, not to the nearest, keeps the optimizer steps per epoch from halving when
    respondents answer a few items fewer: with ``batch_size`` 8, 6 answers a respondent and 5.3
    (a held-out statement's answers removed) both give one respondent a step, where rounding
    gave one and two."""
    return max(1, int(batch_size * units // max(examples, 1)))


def pack_by_respondent(
    encoded: Sequence[EncodedExample],
    examples: Sequence[Example],
    max_tokens: int,
    pack: Callable[[list[dict[str, Any]], list[Example]], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One packed tree sequence per respondent (``subject_id``; examples without one stay
    alone), split where it would exceed ``max_tokens``; in order of first appearance. Each
    unit's ``members`` are the indices of its examples, in branch order.

    ``pack(rows, examples)``, when given, packs a list of examples into one sequence instead of
    :func:`~surveysim_hf.packing.pack_respondent` / ``pack_trie`` (a loss's own layout, e.g.
    answer tries: ``loss.pack_unit``); a respondent it packs too long is split between
    examples."""
    groups: dict[str, list[int]] = {}
    for i, example in enumerate(examples):
        groups.setdefault(example.subject_id or f"\0{i}", []).append(i)
    units: list[dict[str, Any]] = []
    for members in groups.values():
        rows = [
            {
                "input_ids": encoded[i].input_ids,
                "labels": encoded[i].labels,
                "answer_start": encoded[i].answer_start,
                "answer_length": encoded[i].answer_length,
            }
            for i in members
        ]
        layout = pack
        if layout is None and is_conversation(rows):
            # respondent memory: the history once, in a token trie (too long: split between turns)
            layout = _trie_only
        if layout is not None:
            units.extend(
                _pack_split(rows, [examples[i] for i in members], members, max_tokens, layout)
            )
            continue
        packs = pack_respondent(rows, max_tokens)
        for unit in packs:  # pack_respondent keeps the order and splits between examples
            unit["members"], members = members[: unit["n_branches"]], members[unit["n_branches"] :]
        units.extend(packs)
    return units


def _trie_only(rows: list[dict[str, Any]], _examples: list[Example]) -> dict[str, Any]:
    return pack_trie(rows)


def _pack_split(
    rows: list[dict[str, Any]],
    chosen: list[Example],
    members: list[int],
    max_tokens: int,
    pack: Callable[[list[dict[str, Any]], list[Example]], dict[str, Any]],
) -> list[dict[str, Any]]:
    """``pack`` the rows into one unit, or greedily into several within ``max_tokens``."""
    whole = pack(rows, chosen)
    if len(whole["input_ids"]) <= max_tokens:
        return [{**whole, "members": list(members)}]
    units, chunk = [], []
    for k in range(len(rows)):
        if chunk and len(pack(*_pick(rows, chosen, [*chunk, k]))["input_ids"]) > max_tokens:
            units.append({**pack(*_pick(rows, chosen, chunk)), "members": _at(members, chunk)})
            chunk = []
        chunk.append(k)
    units.append({**pack(*_pick(rows, chosen, chunk)), "members": _at(members, chunk)})
    return units


def _at(items: list[Any], where: list[int]) -> list[Any]:
    return [items[k] for k in where]


def _pick(rows: list[Any], chosen: list[Any], where: list[int]) -> tuple[list[Any], list[Any]]:
    return _at(rows, where), _at(chosen, where)


class TrainLog:
    """``train_log.csv``, rewritten to the checkpoint's row count when a run resumes."""

    def __init__(self, path: Path, keep_rows: int | None):
        self.path = path
        rows: list[list[str]] = []
        if keep_rows is not None and path.is_file():
            with path.open(newline="", encoding="utf-8") as handle:
                rows = list(csv.reader(handle))[1 : keep_rows + 1]
        self.rows = len(rows)

        def rewrite(tmp: Path) -> None:
            with tmp.open("w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(LOG_COLUMNS)
                writer.writerows(rows)

        # rows are appended one per step after this; a kill can tear only the last one, which
        # the next resume drops (it keeps the checkpoint's row count)
        atomic_write(path, rewrite)

    def write(self, epoch: int, step: int, split: str, loss: float, tokens: int, seconds: float):
        with self.path.open("a", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerow(
                [epoch, step, split, f"{loss:.6f}", tokens, f"{seconds:.3f}"]
            )
        self.rows += 1


def read_train_log(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``train_log.csv`` with numbers parsed."""
    with Path(path).open(newline="", encoding="utf-8") as handle:
        return [
            {
                "epoch": int(r["epoch"]),
                "step": int(r["step"]),
                "split": r["split"],
                "loss": float(r["loss"]),
                "tokens": int(r["tokens"]),
                "seconds": float(r["seconds"]),
            }
            for r in csv.DictReader(handle)
        ]


def add_lora(model: Any, options: HFOptions) -> Any:
    from surveysim_hf.quiet import library_noise

    with library_noise(options.quantization):
        return _add_lora(model, options)


def _add_lora(model: Any, options: HFOptions) -> Any:
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if options.quantization == "nf4":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    from surveysim_hf.frozen import layers_to_transform

    top = layers_to_transform(model, options.lora_layers)
    config = LoraConfig(
        r=options.lora_r,
        lora_alpha=options.lora_alpha,
        lora_dropout=options.lora_dropout,
        target_modules=list(options.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
        layers_to_transform=top,
        layers_pattern="layers" if top is not None else None,
        init_lora_weights=True
        if options.init_lora_weights == "default"
        else options.init_lora_weights,
        use_rslora=options.use_rslora,
        use_dora=options.use_dora,
    )
    return get_peft_model(model, config)


def mutates_base(options: HFOptions) -> bool:
    """Whether the adapter's initialisation moves part of the base weights into it (PiSSA,
    OLoRA): its trained adapter then applies to the unchanged base only after conversion."""
    return options.init_lora_weights in ("pissa", "olora")


def make_optimizer(model: Any, options: HFOptions) -> Any:
    """AdamW over the adapter's parameters; with ``loraplus_lr_ratio``, peft's LoRA+ groups
    (the B matrices at ratio x the learning rate)."""
    if options.loraplus_lr_ratio is not None:
        from peft.optimizers import create_loraplus_optimizer

        return create_loraplus_optimizer(
            model,
            torch.optim.AdamW,
            lr=options.learning_rate,
            loraplus_lr_ratio=options.loraplus_lr_ratio,
            weight_decay=options.weight_decay,
        )
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=options.learning_rate, weight_decay=options.weight_decay)


def make_scheduler(optimizer: Any, options: HFOptions, total_steps: int) -> Any:
    warmup = options.warmup_steps

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / (warmup + 1)
        if options.lr_scheduler == "constant":
            return 1.0
        left = max(0.0, (total_steps - step) / max(1, total_steps - warmup))
        if options.lr_scheduler == "cosine":
            return 0.5 * (1.0 - math.cos(math.pi * left))
        return left

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class Progress:
    """Where a run stands: what ``checkpoint/trainer.json`` holds (same keys, same order)."""

    fingerprint: str
    epoch: int = 0  # epochs completed
    batches_done: int = 0  # micro-batches done in the current epoch
    global_step: int = 0
    val_losses: list[float | None] = field(default_factory=list)
    log_rows: int = 0
    seconds: float = 0.0
    tokens: int = 0


class Trainer:
    """One fine-tuning run of LoRA adapters on ``base_model`` (see the module docstring).

    The options pick the batch type: packed respondent sequences (:class:`PackedBatch`) when
    ``packing`` is on and the loss ``supports_packing``, else padded examples
    (:class:`PaddedBatch`); every batch, training and validation, is scored as
    ``loss(model, batch)``. ``on_step(global_step)`` is called after every optimizer step (and
    after any checkpoint at that step); an exception raised there interrupts training as a crash
    would.
    """

    def __init__(
        self,
        base_model: Any,
        tokenizer: Any,
        train: Sequence[Example],
        val: Sequence[Example],
        loss_fn: Any,
        options: HFOptions,
        out_dir: Path,
        resume: bool,
        accelerator: Any,
        report: Callable[[str], None] = print,
        on_step: Callable[[int], None] | None = None,
    ):
        if not train:
            raise ValueError("fine-tuning needs at least one training example")
        self.base_model = base_model
        self.tokenizer = tokenizer
        self.train, self.val = train, val
        self.loss_fn = loss_fn  # as given: its class and options enter the fingerprint
        self.loss = as_loss(loss_fn)  # as called, loss(model, batch)
        self.options = options
        self.out_dir = Path(out_dir)
        self.resume = resume
        self.accelerator = accelerator
        self.report = report
        self.on_step = on_step
        self.main = accelerator.is_main_process
        self.rank, self.world = accelerator.process_index, accelerator.num_processes
        self.ckpt_dir = self.out_dir / "checkpoint"
        self.summary_path = self.out_dir / "training.json"
        self.stamp = fingerprint(options, loss_fn, train, val)
        # set up by run()
        self.checkpoint: dict[str, Any] | None = None  # the state resumed from
        self.packed = False
        self.frozen: FrozenPrefix | None = None
        self.log: TrainLog | None = None

    def say(self, message: str) -> None:
        """Report ``message`` once (from the main process)."""
        if self.main:
            self.report(message)

    # -- the run -----------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """Train (or resume, or find the run already finished) and keep the best epoch."""
        finished = self.start()
        if finished is not None:
            return finished
        self.prepare_data()
        self.build_model()
        self.cache_frozen_layers()
        self.train_epochs()
        return self.keep_best_epoch()

    def start(self) -> TrainResult | None:
        """Where to start: the finished result, a checkpoint to resume (``self.checkpoint``), or
        a clean output folder."""
        accelerator, out_dir, ckpt_dir = self.accelerator, self.out_dir, self.ckpt_dir
        if self.resume and self.summary_path.is_file():
            summary = ckpt.read_json(self.summary_path)
            if summary.get("fingerprint") == self.stamp and all(
                (out_dir / f).is_file() for f in ADAPTER_FILES
            ):
                self.say(f"fine-tuning already finished in {out_dir}; using its adapter")
                return TrainResult(
                    out_dir,
                    summary["best_epoch"],
                    summary["val_losses"],
                    summary["steps"],
                    summary["tokens_per_second"],
                )
        if self.resume:  # a kill during a save may have left the newest copy under another name
            if self.main:
                ckpt.recover(ckpt_dir)
            accelerator.wait_for_everyone()
        if self.resume and (ckpt_dir / "trainer.json").is_file():
            self.checkpoint = ckpt.load_checkpoint(ckpt_dir)
            if self.checkpoint["trainer"]["fingerprint"] != self.stamp:
                raise ResumeMismatch(
                    f"{ckpt_dir} was written for other options or data; run without resume or"
                    " use another run directory"
                )
        accelerator.wait_for_everyone()
        if self.main:
            out_dir.mkdir(parents=True, exist_ok=True)
            if self.checkpoint is None:
                for stale in (
                    "checkpoint",
                    "checkpoint.tmp",
                    "checkpoint.old",
                    "epochs",
                    "initial-adapter",
                ):
                    shutil.rmtree(out_dir / stale, ignore_errors=True)
                for stale in (*ADAPTER_FILES, "training.json"):
                    (out_dir / stale).unlink(missing_ok=True)
        accelerator.wait_for_everyone()
        return None

    def prepare_data(self) -> None:
        """Encode the texts, pick the batch type, pack respondents when packing, size the run."""
        options, train, val = self.options, self.train, self.val
        self.loss.prepare(self.tokenizer)
        encode = [
            encode_example(self.tokenizer, e, options.loss_on, options.max_length) for e in train
        ]
        val_encoded = [
            encode_example(self.tokenizer, e, options.loss_on, options.max_length) for e in val
        ]
        self.encoded = {True: encode, False: val_encoded}
        cut = sum(e.truncated for e in encode) + sum(e.truncated for e in val_encoded)
        if cut:
            self.say(f"{cut} training/validation texts were longer than max_length; prompts cut")
        self.pad_id = self.tokenizer.pad_token_id
        self.packed = options.packing and bool(getattr(self.loss, "supports_packing", False))
        if options.packing and not self.packed:
            self.say(
                f"loss {type(self.loss_fn).__name__} does not support packed batches;"
                " training on separate examples"
            )
        self.units: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
        self.unit_batch, self.eval_unit_batch = options.batch_size, options.eval_batch_size
        if self.packed:
            pack = None
            if callable(getattr(self.loss, "pack_unit", None)):  # the loss's own layout
                vocab = output_size(self.base_model)

                def pack(rows, chosen):
                    return self.loss.pack_unit(rows, chosen, vocab)

            units = pack_by_respondent(encode, train, options.pack_max_tokens, pack)
            self.units = {
                True: units,
                False: pack_by_respondent(val_encoded, val, options.pack_max_tokens, pack),
            }
            # at most batch_size examples per forward pass (on average), as without packing
            self.unit_batch = respondents_per_batch(options.batch_size, len(train), len(units))
            self.eval_unit_batch = respondents_per_batch(
                options.eval_batch_size, len(train), len(units)
            )
            # against the same examples unpacked (for a loss with answer tries: with theirs)
            saved = 1 - sum(len(u["input_ids"]) for u in units) / sum(
                u["separate_tokens"] for u in units
            )
            self.say(
                f"packed {len(train)} examples into {len(units)} respondent sequences"
                f" ({saved:.0%} fewer tokens)"
            )
        self.n_units = len(self.units[True]) if self.packed else len(train)
        self.n_val_units = len(self.units[False]) if self.packed else len(val)
        self.val_tokens = (
            sum(len(u["input_ids"]) for u in self.units[False])
            if self.packed
            else sum(len(e.input_ids) for e in val_encoded)
        )
        self.global_batch = self.unit_batch * self.world
        batches_per_epoch = math.ceil(self.n_units / self.global_batch)
        steps_per_epoch = math.ceil(batches_per_epoch / options.gradient_accumulation_steps)
        self.total_steps = steps_per_epoch * options.epochs
        if options.max_steps is not None:
            self.total_steps = min(self.total_steps, options.max_steps)
        # what learning depends on is steps and answers, not respondents (docs/fidelity.md):
        # the same 400 respondents give a survey with fewer answers each fewer answers a step
        self.say(
            f"fine-tuning plan: {self.total_steps} optimizer steps over {options.epochs}"
            f" epoch(s) of {len(train)} answers from {len({e.subject_id for e in train})}"
            f" respondents ({len(train) * options.epochs / max(1, self.total_steps):.1f} answers"
            " a step)"
        )

    def build_model(self) -> None:
        """LoRA adapters, optimizer and scheduler, restored from the checkpoint when resuming,
        then the random state."""
        from surveysim_hf.quiet import library_noise

        with library_noise(self.options.quantization):  # peft imports bitsandbytes
            from peft import set_peft_model_state_dict

        options, accelerator, state = self.options, self.accelerator, self.checkpoint
        torch.manual_seed(options.seed)
        model = add_lora(self.base_model, options)
        self.initial_adapter = None
        if mutates_base(options):
            # the adapter as initialised (deterministic, so the same on resuming): the saved
            # epochs are converted against it to apply to the unchanged base model
            self.initial_adapter = self.out_dir / "initial-adapter"
            if self.main:
                with output_errors(self.initial_adapter):
                    model.save_pretrained(self.initial_adapter, safe_serialization=True)
            self.accelerator.wait_for_everyone()
        optimizer = make_optimizer(model, options)
        self.scheduler = make_scheduler(optimizer, options, self.total_steps)
        self.progress = Progress(fingerprint=self.stamp)
        if state is not None:
            set_peft_model_state_dict(model, state["adapter"])
            optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.progress = Progress(**state["trainer"])
            self.say(
                f"resuming from step {self.progress.global_step}"
                f" (epoch {self.progress.epoch + 1}, batch {self.progress.batches_done})"
            )
        self.mask_dtype = model.get_input_embeddings().weight.dtype
        if not self.mask_dtype.is_floating_point:
            self.mask_dtype = torch.float32
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        if self.main:
            keep = self.progress.log_rows if state else None
            self.log = TrainLog(self.out_dir / "train_log.csv", keep)
        # the RNG state is restored last, after everything that draws random numbers at start-up
        torch.manual_seed(options.seed + 7919 * (self.rank + 1))
        if state is not None:
            saved_rng = ckpt.load_rng(self.ckpt_dir, self.rank)
            if saved_rng is not None:
                ckpt.set_rng_state(saved_rng)
        accelerator.wait_for_everyone()

    def cache_frozen_layers(self) -> None:
        """With packing and adapters on the top layers only, the frozen lower layers' output,
        computed once per sequence (:mod:`surveysim_hf.frozen`)."""
        options = self.options
        self.states: dict[bool, list[torch.Tensor]] = {}
        if self.packed and options.lora_layers is not None and options.cache_frozen_layers:
            self.frozen, why = frozen_split(self.model)
            self.say(f"frozen-layer cache: {why}")
        if self.frozen is None:
            return
        tick = time.perf_counter()
        n_units = len(self.units[True]) + len(self.units[False])
        device = self.accelerator.device
        store, key = None, ""
        if options.store_frozen_layers:
            store = FrozenStore(surveysim_cache() / "frozen")
            key = store.key(self.frozen, self.units, self.eval_unit_batch, self.mask_dtype, device)
            lengths = {t: [len(u["input_ids"]) for u in self.units[t]] for t in (True, False)}
            stored, why = store.load(key, lengths)
            if stored is not None:
                self.states = {t: [s.to(device) for s in stored[t]] for t in (True, False)}
                self.say(
                    f"read the output of {self.frozen.k} frozen layers for {n_units} sequences"
                    f" from {store.paths(key)[0]} in {time.perf_counter() - tick:.1f}s"
                )
                return
            if why:
                self.say(f"frozen-layer store: {why}")
        # minutes at a few hundred respondents on a CPU: a bar in sequences, as fine-tuning has
        bar = tqdm(
            total=n_units,
            desc=f"frozen layers 0-{self.frozen.k - 1}",
            unit="seq",
            file=sys.stderr,
            disable=not (self.main and options.progress_bars),
        )
        for training in (True, False):
            packs, cached = self.units[training], []
            for start in range(0, len(packs), self.eval_unit_batch):
                chosen = packs[start : start + self.eval_unit_batch]
                batch = collate_packed(chosen, self.pad_id, self.mask_dtype)
                hidden = self.frozen.lower_states(batch.to(device))
                cached += [hidden[i, : len(p["input_ids"])].clone() for i, p in enumerate(chosen)]
                bar.update(len(chosen))
            self.states[training] = cached
        bar.close()
        self.say(
            f"cached the output of {self.frozen.k} frozen layers for {n_units}"
            f" sequences in {time.perf_counter() - tick:.1f}s"
        )
        if store is not None and self.main:
            try:
                path, size = store.save(key, self.states)
            except (OSError, OutputError) as error:  # a full disk costs the reuse, not the run
                self.say(f"frozen-layer store: could not keep the states ({error})")
            else:
                self.say(
                    f"kept them in {path} ({size / 2**30:.2f} GB) for the next fine-tune of"
                    " this data (store_frozen_layers: false turns this off)"
                )

    # -- batches -----------------------------------------------------------------------------
    def batch(self, indices: list[int], training: bool) -> Batch:
        """The batch of units ``indices`` (examples, or packed respondents) of one split."""
        if self.packed:
            return self.packed_batch(indices, training)
        return self.padded_batch(indices, training)

    def padded_batch(self, indices: list[int], training: bool) -> PaddedBatch:
        encoded, examples = self.encoded[training], self.train if training else self.val
        return collate(
            [encoded[i] for i in indices], [examples[i] for i in indices], self.pad_id
        ).to(self.accelerator.device)

    def packed_batch(self, indices: list[int], training: bool) -> PackedBatch:
        encoded, examples = self.encoded[training], self.train if training else self.val
        chosen = [self.units[training][i] for i in indices]
        batch = collate_packed(chosen, self.pad_id, self.mask_dtype).to(self.accelerator.device)
        if self.frozen is not None:
            cached = [self.states[training][i] for i in indices]
            embeds = cached[0].new_zeros(
                (len(cached), batch.input_ids.shape[1], cached[0].shape[-1])
            )
            for row, hidden in enumerate(cached):
                embeds[row, : len(hidden)] = hidden
            batch.inputs_embeds = embeds
        # what each branch's answer means, in the order of answer_predictor >= 0
        members = [m for p in chosen for m in p["members"]]
        batch.answers = collate(
            [encoded[m] for m in members], [examples[m] for m in members], self.pad_id
        ).to(self.accelerator.device)
        return batch

    def forward_loss(self, indices: list[int], training: bool) -> tuple[torch.Tensor, int, float]:
        """Loss of a micro-batch, tokens run through the model, label weight (for averaging)."""
        batch = self.batch(indices, training)
        with self.frozen.upper() if self.frozen is not None else nullcontext():
            value = self.loss(self.model, batch)
        return value, batch.tokens(), batch.label_weight()

    # -- epochs and steps --------------------------------------------------------------------
    def train_epochs(self) -> None:
        """The training loop, from where the run stands to the last epoch or ``max_steps``."""
        options, progress = self.options, self.progress
        self.model.train()
        self.bar = tqdm(
            total=self.total_steps,
            initial=progress.global_step,
            desc="fine-tuning",
            unit="step",
            file=sys.stderr,
            disable=not (self.main and options.progress_bars),
        )
        self.session_start = time.perf_counter() - progress.seconds
        stopped = progress.global_step >= self.total_steps
        while progress.epoch < options.epochs and not stopped:
            stopped = self.train_epoch(progress.epoch)
        self.bar.close()

    def train_epoch(self, epoch: int) -> bool:
        """The rest of epoch ``epoch``; whether ``max_steps`` stopped it."""
        accelerator, progress, accum = (
            self.accelerator,
            self.progress,
            self.options.gradient_accumulation_steps,
        )
        order = epoch_order(self.n_units, self.options.seed, epoch)
        chunks = [order[i : i + self.global_batch] for i in range(0, len(order), self.global_batch)]
        step_losses: list[float] = []
        step_tokens = 0
        for b in range(progress.batches_done, len(chunks)):
            indices, weight = rank_slice(chunks[b], self.rank, self.world)
            group_start = b - b % accum
            group_size = min(accum, len(chunks) - group_start)
            sync = (b + 1 - group_start) == group_size
            context = accelerator.no_sync(self.model) if not sync else nullcontext()
            with context:
                value, batch_tokens, _ = self.forward_loss(indices, True)
                loss = value * weight
                accelerator.backward(loss / group_size)
            step_losses.append(float(loss.detach()))
            step_tokens += batch_tokens if weight else 0
            progress.batches_done = b + 1
            if not sync:
                continue
            self.optimizer_step(epoch, step_losses, step_tokens)
            step_losses, step_tokens = [], 0
            stopped = progress.global_step >= self.total_steps
            if progress.batches_done == len(chunks) or stopped:
                self.finish_epoch(epoch)
                progress.epoch = epoch + 1
                progress.batches_done = 0
                progress.seconds = time.perf_counter() - self.session_start
                self.save_state()
            elif (
                self.options.checkpoint_every
                and progress.global_step % self.options.checkpoint_every == 0
            ):
                self.save_state()
            if self.on_step is not None:
                self.on_step(progress.global_step)
            if stopped:
                return True
        return False

    def optimizer_step(self, epoch: int, step_losses: list[float], step_tokens: int) -> None:
        """Apply the accumulated gradients and log the step (loss and tokens over processes)."""
        progress = self.progress
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        progress.global_step += 1
        stats = torch.tensor(
            [sum(step_losses) / len(step_losses), float(step_tokens)],
            dtype=torch.float64,
            device=self.accelerator.device,
        )
        stats = self.accelerator.gather(stats.unsqueeze(0))
        step_loss, tokens = float(stats[:, 0].mean()), int(stats[:, 1].sum())
        progress.tokens += tokens
        progress.seconds = time.perf_counter() - self.session_start
        if self.log is not None:
            self.log.write(
                epoch + 1, progress.global_step, "train", step_loss, tokens, progress.seconds
            )
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{step_loss:.4f}", epoch=epoch + 1)
        if progress.global_step in self.eta_steps():
            self.say(self.eta_line())

    def eta_steps(self) -> set[int]:
        """The steps after which the log says how long fine-tuning has left: once the first
        20 steps give a rate, then at each quarter."""
        total = self.total_steps
        return ({min(20, total)} | {round(total * q / 4) for q in (1, 2, 3)}) - {0, total}

    def eta_line(self) -> str:
        """Measured training tokens/s in this session and the time left at that rate."""
        progress = self.progress
        rate = progress.tokens / progress.seconds if progress.seconds > 0 else 0.0
        per_step = progress.seconds / max(1, progress.global_step)
        left = per_step * (self.total_steps - progress.global_step)
        return (
            f"fine-tuning: step {progress.global_step}/{self.total_steps},"
            f" {rate:.0f} training tokens/s, about {left / 60:.1f} min left"
        )

    def validate(self) -> float | None:
        """Validation loss: the mean over batches weighted by label tokens, over processes."""
        if not self.val:
            return None
        accelerator = self.accelerator
        self.model.eval()
        per = math.ceil(self.n_val_units / self.world)
        mine = list(range(self.rank * per, min(self.n_val_units, (self.rank + 1) * per)))
        total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
        with torch.no_grad():
            for start in range(0, len(mine), self.eval_unit_batch):
                value, _, n = self.forward_loss(mine[start : start + self.eval_unit_batch], False)
                total[0] += float(value) * n
                total[1] += n
        self.model.train()
        total = accelerator.reduce(total, reduction="sum")
        return float(total[0] / total[1]) if total[1] > 0 else None

    def finish_epoch(self, epoch: int) -> None:
        """Validate, log, and save the epoch's adapter under ``epochs/epoch-<n>``."""
        val_loss = self.validate()
        self.progress.val_losses.append(val_loss)
        if self.log is not None:
            if val_loss is not None:
                self.log.write(
                    epoch + 1,
                    self.progress.global_step,
                    "val",
                    val_loss,
                    self.val_tokens,
                    self.progress.seconds,
                )
            folder = self.out_dir / "epochs" / f"epoch-{epoch + 1}"
            # written beside, then moved into place: a kill leaves no half-written epoch
            staging = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
            shutil.rmtree(staging, ignore_errors=True)
            try:
                # a full disk inside peft/safetensors: a named error; the staging copy goes
                with output_errors(staging):
                    conversion = {}
                    if self.initial_adapter is not None:
                        conversion["path_initial_model_for_weight_conversion"] = str(
                            self.initial_adapter
                        )
                    with warnings.catch_warnings():
                        # peft's own conversion loads the initial adapter beside the trained
                        # one and then warns that PiSSA/OLoRA should be converted: it is
                        warnings.filterwarnings("ignore", "(PiSSA|OLoRA) changes the base weights")
                        self.accelerator.unwrap_model(self.model).save_pretrained(
                            staging, safe_serialization=True, **conversion
                        )
            except OutputError:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            shutil.rmtree(folder, ignore_errors=True)
            replace_directory(staging, folder)
        shown = "n/a" if val_loss is None else f"{val_loss:.4f}"
        self.say(f"epoch {epoch + 1}: validation loss {shown}")

    def save_state(self) -> None:
        """A resumable checkpoint (see :mod:`surveysim_hf.checkpoint`), written by every process
        in step."""
        from peft.utils import get_peft_model_state_dict

        accelerator = self.accelerator
        accelerator.wait_for_everyone()
        if self.main:
            ckpt.begin_checkpoint(self.ckpt_dir)
        accelerator.wait_for_everyone()
        ckpt.save_rng(ckpt.staging(self.ckpt_dir), self.rank)
        accelerator.wait_for_everyone()
        if self.log is not None:
            self.progress.log_rows = self.log.rows
            ckpt.finish_checkpoint(
                self.ckpt_dir,
                get_peft_model_state_dict(accelerator.unwrap_model(self.model)),
                self.optimizer.state_dict(),
                self.scheduler.state_dict(),
                asdict(self.progress),
            )
        accelerator.wait_for_everyone()

    def keep_best_epoch(self) -> TrainResult:
        """Copy the epoch with the lowest validation loss (the last without validation) to the
        output folder's adapter files and write ``training.json``."""
        progress = self.progress
        losses = progress.val_losses
        scored = [(loss, i) for i, loss in enumerate(losses) if loss is not None]
        best_index = min(scored)[1] if scored else len(losses) - 1
        best_epoch = best_index + 1
        seconds = progress.seconds
        tokens_per_second = progress.tokens / seconds if seconds > 0 else 0.0
        if self.main:
            source = self.out_dir / "epochs" / f"epoch-{best_epoch}"
            for name in ADAPTER_FILES:
                atomic_write(
                    self.out_dir / name, lambda tmp, name=name: shutil.copyfile(source / name, tmp)
                )
            ckpt.write_json(
                self.summary_path,
                {
                    "fingerprint": self.stamp,
                    "best_epoch": best_epoch,
                    "val_losses": losses,
                    "steps": progress.global_step,
                    "tokens": progress.tokens,
                    "seconds": seconds,
                    "tokens_per_second": tokens_per_second,
                },
            )
            self.say(
                f"fine-tuned {progress.global_step} steps, {tokens_per_second:.0f} tokens/s;"
                f" keeping epoch {best_epoch}"
            )
        self.accelerator.wait_for_everyone()
        return TrainResult(
            self.out_dir, best_epoch, losses, progress.global_step, tokens_per_second
        )


def fine_tune(
    base_model: Any,
    tokenizer: Any,
    train: Sequence[Example],
    val: Sequence[Example],
    loss_fn: Any,
    options: HFOptions,
    out_dir: Path,
    resume: bool,
    accelerator: Any,
    report: Callable[[str], None] = print,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train LoRA adapters on ``base_model`` and return where the best epoch's adapter is
    (a :class:`Trainer` run; see there for ``on_step``)."""
    trainer = Trainer(
        base_model,
        tokenizer,
        train,
        val,
        loss_fn,
        options,
        out_dir,
        resume,
        accelerator,
        report=report,
        on_step=on_step,
    )
    return trainer.run()
