"""LoRA / QLoRA fine-tuning loop: Accelerate, best epoch by validation loss, resumable.

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
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from surveysim_core.files import atomic_write, replace_directory
from surveysim_core.protocols import Example
from surveysim_hf import checkpoint as ckpt
from surveysim_hf.frozen import frozen_split
from surveysim_hf.losses import LossBatch, collate, compute_loss
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


def pack_by_respondent(
    encoded: Sequence[EncodedExample], examples: Sequence[Example], max_tokens: int
) -> list[dict[str, Any]]:
    """One packed tree sequence per respondent (``subject_id``; examples without one stay
    alone), split where it would exceed ``max_tokens``; in order of first appearance. Each
    unit's ``members`` are the indices of its examples, in branch order."""
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
            }
            for i in members
        ]
        if is_conversation(rows):  # respondent memory: the history once, in a token trie
            whole = pack_trie(rows)
            packs = [whole] if len(whole["input_ids"]) <= max_tokens else []
            chunk: list[dict] = []
            for row in rows if not packs else []:  # too long: split between turns
                if chunk and len(pack_trie([*chunk, row])["input_ids"]) > max_tokens:
                    packs.append(pack_trie(chunk))
                    chunk = []
                chunk.append(row)
            if chunk:
                packs.append(pack_trie(chunk))
        else:
            packs = pack_respondent(rows, max_tokens)
        for pack in packs:  # pack_respondent keeps the order and splits between examples
            pack["members"], members = members[: pack["n_branches"]], members[pack["n_branches"] :]
        units.extend(packs)
    return units


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
    )
    return get_peft_model(model, config)


def make_scheduler(optimizer: Any, options: HFOptions, total_steps: int) -> Any:
    warmup = options.warmup_steps

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / (warmup + 1)
        if options.lr_scheduler == "constant":
            return 1.0
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


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
    """Train LoRA adapters on ``base_model`` and return where the best epoch's adapter is.

    ``on_step(global_step)`` is called after every optimizer step (and after any checkpoint at
    that step); an exception raised there interrupts training as a crash would.
    """
    from peft import set_peft_model_state_dict
    from peft.utils import get_peft_model_state_dict

    if not train:
        raise ValueError("fine-tuning needs at least one training example")
    out_dir = Path(out_dir)
    main = accelerator.is_main_process
    rank, world = accelerator.process_index, accelerator.num_processes
    ckpt_dir = out_dir / "checkpoint"
    summary_path = out_dir / "training.json"
    print_ = report if main else (lambda message: None)
    stamp = fingerprint(options, loss_fn, train, val)

    # -- where to start --------------------------------------------------------------------
    state: dict[str, Any] | None = None
    if resume and summary_path.is_file():
        summary = ckpt.read_json(summary_path)
        if summary.get("fingerprint") == stamp and all(
            (out_dir / f).is_file() for f in ADAPTER_FILES
        ):
            print_(f"fine-tuning already finished in {out_dir}; using its adapter")
            return TrainResult(
                out_dir,
                summary["best_epoch"],
                summary["val_losses"],
                summary["steps"],
                summary["tokens_per_second"],
            )
    if resume:  # a kill during a save may have left the newest copy under another name
        if main:
            ckpt.recover(ckpt_dir)
        accelerator.wait_for_everyone()
    if resume and (ckpt_dir / "trainer.json").is_file():
        state = ckpt.load_checkpoint(ckpt_dir)
        if state["trainer"]["fingerprint"] != stamp:
            raise ResumeMismatch(
                f"{ckpt_dir} was written for other options or data; run without resume or"
                " use another run directory"
            )
    accelerator.wait_for_everyone()
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        if state is None:
            for stale in ("checkpoint", "checkpoint.tmp", "checkpoint.old", "epochs"):
                shutil.rmtree(out_dir / stale, ignore_errors=True)
            for stale in (*ADAPTER_FILES, "training.json"):
                (out_dir / stale).unlink(missing_ok=True)
    accelerator.wait_for_everyone()

    # -- data --------------------------------------------------------------------------------
    loss_fn.prepare(tokenizer)
    encode = [encode_example(tokenizer, e, options.loss_on, options.max_length) for e in train]
    val_encoded = [encode_example(tokenizer, e, options.loss_on, options.max_length) for e in val]
    cut = sum(e.truncated for e in encode) + sum(e.truncated for e in val_encoded)
    if cut:
        print_(f"{cut} training/validation texts were longer than max_length; prompts cut")
    pad_id = tokenizer.pad_token_id
    packed = options.packing and bool(getattr(loss_fn, "supports_packing", False))
    if options.packing and not packed:
        print_(
            f"loss {type(loss_fn).__name__} does not support packed batches;"
            " training on separate examples"
        )
    units: list[dict[str, Any]] = []
    val_units: list[dict[str, Any]] = []
    unit_batch, eval_unit_batch = options.batch_size, options.eval_batch_size
    if packed:
        units = pack_by_respondent(encode, train, options.pack_max_tokens)
        val_units = pack_by_respondent(val_encoded, val, options.pack_max_tokens)
        # about batch_size examples per forward pass, as without packing
        per_unit = len(train) / len(units)
        unit_batch = max(1, round(options.batch_size / per_unit))
        eval_unit_batch = max(1, round(options.eval_batch_size / per_unit))
        saved = 1 - sum(len(u["input_ids"]) for u in units) / sum(len(e.input_ids) for e in encode)
        print_(
            f"packed {len(train)} examples into {len(units)} respondent sequences"
            f" ({saved:.0%} fewer tokens)"
        )
    n_units = len(units) if packed else len(train)
    global_batch = unit_batch * world
    batches_per_epoch = math.ceil(n_units / global_batch)
    steps_per_epoch = math.ceil(batches_per_epoch / options.gradient_accumulation_steps)
    total_steps = steps_per_epoch * options.epochs
    if options.max_steps is not None:
        total_steps = min(total_steps, options.max_steps)

    # -- model, optimizer --------------------------------------------------------------------
    torch.manual_seed(options.seed)
    model = add_lora(base_model, options)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=options.learning_rate, weight_decay=options.weight_decay
    )
    scheduler = make_scheduler(optimizer, options, total_steps)
    trainer: dict[str, Any] = {
        "fingerprint": stamp,
        "epoch": 0,  # epochs completed
        "batches_done": 0,  # micro-batches done in the current epoch
        "global_step": 0,
        "val_losses": [],
        "log_rows": 0,
        "seconds": 0.0,
        "tokens": 0,
    }
    if state is not None:
        set_peft_model_state_dict(model, state["adapter"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        trainer = state["trainer"]
        print_(
            f"resuming from step {trainer['global_step']}"
            f" (epoch {trainer['epoch'] + 1}, batch {trainer['batches_done']})"
        )
    mask_dtype = model.get_input_embeddings().weight.dtype
    if not mask_dtype.is_floating_point:
        mask_dtype = torch.float32
    model, optimizer = accelerator.prepare(model, optimizer)
    log = (
        TrainLog(out_dir / "train_log.csv", trainer["log_rows"] if state else None)
        if main
        else None
    )
    # the RNG state is restored last, after everything that draws random numbers at start-up
    torch.manual_seed(options.seed + 7919 * (rank + 1))
    if state is not None:
        saved_rng = ckpt.load_rng(ckpt_dir, rank)
        if saved_rng is not None:
            ckpt.set_rng_state(saved_rng)
    accelerator.wait_for_everyone()

    def save_state() -> None:
        accelerator.wait_for_everyone()
        if main:
            ckpt.begin_checkpoint(ckpt_dir)
        accelerator.wait_for_everyone()
        ckpt.save_rng(ckpt.staging(ckpt_dir), rank)
        accelerator.wait_for_everyone()
        if main:
            trainer["log_rows"] = log.rows
            ckpt.finish_checkpoint(
                ckpt_dir,
                get_peft_model_state_dict(accelerator.unwrap_model(model)),
                optimizer.state_dict(),
                scheduler.state_dict(),
                trainer,
            )
        accelerator.wait_for_everyone()

    # -- frozen lower layers: their output computed once (surveysim_hf.frozen) ---------------
    frozen = None
    states: dict[bool, list[torch.Tensor]] = {}
    if packed and options.lora_layers is not None and options.cache_frozen_layers:
        frozen, why = frozen_split(model)
        print_(f"frozen-layer cache: {why}")
    if frozen is not None:
        tick = time.perf_counter()
        for training, packs in ((True, units), (False, val_units)):
            cached = []
            for start in range(0, len(packs), eval_unit_batch):
                chosen = packs[start : start + eval_unit_batch]
                batch = collate_packed(chosen, pad_id, mask_dtype)
                hidden = frozen.lower_states(
                    {key: value.to(accelerator.device) for key, value in batch.items()}
                )
                cached += [hidden[i, : len(p["input_ids"])].clone() for i, p in enumerate(chosen)]
            states[training] = cached
        print_(
            f"cached the output of {frozen.k} frozen layers for {len(units) + len(val_units)}"
            f" sequences in {time.perf_counter() - tick:.1f}s"
        )

    def batch_of(indices: list[int], encoded: list[EncodedExample], examples) -> LossBatch:
        return collate([encoded[i] for i in indices], [examples[i] for i in indices], pad_id).to(
            accelerator.device
        )

    def packed_of(indices: list[int], training: bool) -> dict[str, Any]:
        packs, encoded, examples = (
            (units, encode, train) if training else (val_units, val_encoded, val)
        )
        chosen = [packs[i] for i in indices]
        batch = collate_packed(chosen, pad_id, mask_dtype)
        batch = {key: value.to(accelerator.device) for key, value in batch.items()}
        batch["tokens"] = sum(len(p["input_ids"]) for p in chosen)
        if frozen is not None:
            cached = [states[training][i] for i in indices]
            embeds = cached[0].new_zeros(
                (len(cached), batch["input_ids"].shape[1], cached[0].shape[-1])
            )
            for row, hidden in enumerate(cached):
                embeds[row, : len(hidden)] = hidden
            batch["inputs_embeds"] = embeds
        # what each branch's answer means, in the order of answer_predictor >= 0
        members = [m for p in chosen for m in p["members"]]
        batch["answers"] = collate(
            [encoded[m] for m in members], [examples[m] for m in members], pad_id
        ).to(accelerator.device)
        return batch

    def forward_loss(indices: list[int], training: bool) -> tuple[torch.Tensor, int, float]:
        """Loss of a micro-batch, tokens run through the model, label weight (for averaging)."""
        if packed:
            pbatch = packed_of(indices, training)
            with frozen.upper() if frozen is not None else nullcontext():
                value = loss_fn.packed(model, pbatch)
            return (
                value,
                pbatch["tokens"],
                float(pbatch["loss_weight"].sum()),
            )
        batch = (
            batch_of(indices, encode, train) if training else batch_of(indices, val_encoded, val)
        )
        return (
            compute_loss(model, loss_fn, batch),
            int(batch.attention_mask.sum()),
            float(batch.label_tokens()),
        )

    val_tokens = (
        sum(len(u["input_ids"]) for u in val_units)
        if packed
        else sum(len(e.input_ids) for e in val_encoded)
    )

    def validate() -> float | None:
        if not val:
            return None
        model.eval()
        n_val = len(val_units) if packed else len(val)
        per = math.ceil(n_val / world)
        mine = list(range(rank * per, min(n_val, (rank + 1) * per)))
        total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
        with torch.no_grad():
            for start in range(0, len(mine), eval_unit_batch):
                value, _, n = forward_loss(mine[start : start + eval_unit_batch], False)
                total[0] += float(value) * n
                total[1] += n
        model.train()
        total = accelerator.reduce(total, reduction="sum")
        return float(total[0] / total[1]) if total[1] > 0 else None

    def finish_epoch(epoch: int) -> None:
        val_loss = validate()
        trainer["val_losses"].append(val_loss)
        if main:
            if val_loss is not None:
                log.write(
                    epoch + 1,
                    trainer["global_step"],
                    "val",
                    val_loss,
                    val_tokens,
                    trainer["seconds"],
                )
            folder = out_dir / "epochs" / f"epoch-{epoch + 1}"
            # written beside, then moved into place: a kill leaves no half-written epoch
            staging = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
            shutil.rmtree(staging, ignore_errors=True)
            accelerator.unwrap_model(model).save_pretrained(staging, safe_serialization=True)
            shutil.rmtree(folder, ignore_errors=True)
            replace_directory(staging, folder)
        shown = "n/a" if val_loss is None else f"{val_loss:.4f}"
        print_(f"epoch {epoch + 1}: validation loss {shown}")

    # -- loop ----------------------------------------------------------------------------------
    model.train()
    bar = tqdm(
        total=total_steps,
        initial=trainer["global_step"],
        desc="fine-tuning",
        unit="step",
        file=sys.stderr,
        disable=not (main and options.progress_bars),
    )
    accum = options.gradient_accumulation_steps
    stopped = trainer["global_step"] >= total_steps
    session_start = time.perf_counter() - trainer["seconds"]
    while trainer["epoch"] < options.epochs and not stopped:
        epoch = trainer["epoch"]
        order = epoch_order(n_units, options.seed, epoch)
        chunks = [order[i : i + global_batch] for i in range(0, len(order), global_batch)]
        step_losses: list[float] = []
        step_tokens = 0
        for b in range(trainer["batches_done"], len(chunks)):
            indices, weight = rank_slice(chunks[b], rank, world)
            group_start = b - b % accum
            group_size = min(accum, len(chunks) - group_start)
            sync = (b + 1 - group_start) == group_size
            context = accelerator.no_sync(model) if not sync else nullcontext()
            with context:
                value, batch_tokens, _ = forward_loss(indices, True)
                loss = value * weight
                accelerator.backward(loss / group_size)
            step_losses.append(float(loss.detach()))
            step_tokens += batch_tokens if weight else 0
            trainer["batches_done"] = b + 1
            if not sync:
                continue
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            trainer["global_step"] += 1
            stats = torch.tensor(
                [sum(step_losses) / len(step_losses), float(step_tokens)],
                dtype=torch.float64,
                device=accelerator.device,
            )
            stats = accelerator.gather(stats.unsqueeze(0))
            step_loss, tokens = float(stats[:, 0].mean()), int(stats[:, 1].sum())
            step_losses, step_tokens = [], 0
            trainer["tokens"] += tokens
            trainer["seconds"] = time.perf_counter() - session_start
            if main:
                log.write(
                    epoch + 1,
                    trainer["global_step"],
                    "train",
                    step_loss,
                    tokens,
                    trainer["seconds"],
                )
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4f}", epoch=epoch + 1)
            stopped = trainer["global_step"] >= total_steps
            epoch_done = trainer["batches_done"] == len(chunks) or stopped
            if epoch_done:
                finish_epoch(epoch)
                trainer["epoch"] = epoch + 1
                trainer["batches_done"] = 0
                trainer["seconds"] = time.perf_counter() - session_start
                save_state()
            elif (
                options.checkpoint_every and trainer["global_step"] % options.checkpoint_every == 0
            ):
                save_state()
            if on_step is not None:
                on_step(trainer["global_step"])
            if stopped:
                break
    bar.close()

    # -- keep the best epoch ------------------------------------------------------------------
    losses = trainer["val_losses"]
    scored = [(loss, i) for i, loss in enumerate(losses) if loss is not None]
    best_index = min(scored)[1] if scored else len(losses) - 1
    best_epoch = best_index + 1
    seconds = trainer["seconds"]
    tokens_per_second = trainer["tokens"] / seconds if seconds > 0 else 0.0
    if main:
        source = out_dir / "epochs" / f"epoch-{best_epoch}"
        for name in ADAPTER_FILES:
            atomic_write(out_dir / name, lambda tmp, name=name: shutil.copyfile(source / name, tmp))
        ckpt.write_json(
            summary_path,
            {
                "fingerprint": stamp,
                "best_epoch": best_epoch,
                "val_losses": losses,
                "steps": trainer["global_step"],
                "tokens": trainer["tokens"],
                "seconds": seconds,
                "tokens_per_second": tokens_per_second,
            },
        )
        print_(
            f"fine-tuned {trainer['global_step']} steps, {tokens_per_second:.0f} tokens/s;"
            f" keeping epoch {best_epoch}"
        )
    accelerator.wait_for_everyone()
    return TrainResult(out_dir, best_epoch, losses, trainer["global_step"], tokens_per_second)
