#!/usr/bin/env python
"""Speed levers for fine-tuning, each against today's trainer in the same run on one machine.

Every arm trains the same examples (the default EV-shift config's prompts) for ``--epochs``
epochs with the hf backend's packed trainer and reports the wall time of ``fine_tune`` (model
load, LoRA, tokenising, caching, checkpoints included), tokens per second of training text, and
the ratio against the reference arm:

* ``reference``: LoRA on the attention of every layer (the trainer before these levers);
* ``top-N``: LoRA on the top N decoder layers only (``lora_layers``), backward stops early;
* ``top-N + cache``: the same, with the frozen layers' output computed once and reused every
  epoch (``cache_frozen_layers``, exact: tests/plugins/test_hf_frozen.py);
* ``top-N attention+MLP + cache (default)``: the default run's settings;
* ``compact persona``: the reference trainer on the compact persona rendering
  (``prompts.persona: compact``), which shortens every training sequence;
* ``threads=1``: the reference with one thread instead of the machine's cores.

With ``--multitoken`` it runs two other arms instead, both on the default run's settings with the
``numeric_penalty_multitoken`` loss: ``packing: false`` (each example its own prompt + answer
trie) and ``packing: true`` (one tree per respondent, the frozen-layer cache on), and prints the
packed arm's tokens and wall time as ratios of the unpacked one's. Tokens here are the tokens
run through the model, answer tries included (the unpacked arm's ``train_log.csv`` counts only
its texts). ``--tiny`` swaps the model for a tiny random one (a smoke test of the script);
``--count-only`` only tokenises and prints the tokens per epoch of both.

    .venv/bin/python benchmarks/bench_training_levers.py [--respondents 24] [--epochs 3]
    .venv/bin/python benchmarks/bench_training_levers.py --multitoken [--respondents 24] [--count-only]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def training_examples(respondents: int, persona: str, workdir: Path):
    from surveysim_core.config import load_config
    from surveysim_core.items import build_items, examples, load_data
    from surveysim_core.plan import plan_run
    from surveysim_core.plugins import get_plugins
    from surveysim_core.protocols import Progress
    from surveysim_core.split import split_by_subject

    source = str(ROOT / "surveys" / "evshift.yaml")
    config = load_config(source, ["data.subjects=400", f"prompts.persona={persona}"])
    plugins = get_plugins()
    plan = plan_run(config, source, plugins)
    data = load_data(plan, workdir, plugins, Progress(lambda m: None))
    splits = split_by_subject(
        data.respondents.index, {"train": 0.8, "val": 0.1, "test": 0.1}, 0,
        caps={"train": respondents, "val": 1, "test": 1},
    )  # fmt: skip
    return examples(build_items(plan, data, splits["train"])), plan


def arm(name: str, options, train, workdir: Path, loss=None) -> dict:
    from surveysim_hf.backend import HFBackend
    from surveysim_hf.losses import CrossEntropyLoss
    from surveysim_hf.train import read_train_log

    backend = HFBackend(options, workdir)
    start = time.perf_counter()
    loss = loss or CrossEntropyLoss()
    adapter = backend.fine_tune(train, [], loss, workdir / "adapter", False)
    seconds = time.perf_counter() - start
    rows = [r for r in read_train_log(adapter / "train_log.csv") if r["split"] == "train"]
    tokens = sum(r["tokens"] for r in rows)
    print(f"{name}: {seconds:.1f}s, {tokens} training tokens; load {os.getloadavg()[0]:.2f}")
    return {"seconds": seconds, "tokens": tokens}


def model_path(options) -> str:
    """The local folder of ``options.model`` (an alias such as the default is resolved)."""
    from surveysim_hf.models import resolve

    return resolve(options.model).path


def unpacked_trie_tokens(options, train, loss) -> int:
    """Tokens one epoch of the multi-token penalty runs on separate examples: each example's
    prompt + answer trie + tail (what its padded path builds)."""
    from surveysim_hf.texts import encode_example
    from transformers import AutoConfig, AutoTokenizer

    path = model_path(options)
    tokenizer, vocab = (
        AutoTokenizer.from_pretrained(path),
        AutoConfig.from_pretrained(path).vocab_size,
    )
    loss.prepare(tokenizer)
    total = 0
    for example in train:
        e = encode_example(tokenizer, example, options.loss_on, options.max_length)
        row = {"input_ids": e.input_ids, "labels": e.labels, "answer_start": e.answer_start,
               "answer_length": e.answer_length}  # fmt: skip
        total += len(loss.pack_unit([row], [example], vocab)["input_ids"])
    return total


def packed_trie_tokens(options, train, loss) -> int:
    """Tokens one epoch of the multi-token penalty runs packed (as the trainer packs)."""
    from surveysim_hf.texts import encode_example
    from surveysim_hf.train import pack_by_respondent
    from transformers import AutoConfig, AutoTokenizer

    path = model_path(options)
    tokenizer, vocab = (
        AutoTokenizer.from_pretrained(path),
        AutoConfig.from_pretrained(path).vocab_size,
    )
    loss.prepare(tokenizer)
    encoded = [encode_example(tokenizer, e, options.loss_on, options.max_length) for e in train]
    units = pack_by_respondent(
        encoded, train, options.pack_max_tokens, lambda r, c: loss.pack_unit(r, c, vocab)
    )
    return sum(len(u["input_ids"]) for u in units)


def multitoken_arms(opts: dict, train, work: Path, epochs: int, count_only: bool) -> None:
    """Packed against unpacked training with ``numeric_penalty_multitoken``."""
    from surveysim_hf.options import HFOptions
    from surveysim_losses.multitoken import MultiTokenNumericPenaltyLoss

    if count_only:  # tokenising only: no model is loaded or trained
        options = HFOptions(**opts)
        unpacked = unpacked_trie_tokens(options, train, MultiTokenNumericPenaltyLoss())
        packed = packed_trie_tokens(options, train, MultiTokenNumericPenaltyLoss())
        print(f"numeric_penalty_multitoken, {len(train)} answers, tokens per epoch: unpacked"
              f" {unpacked}, packed {packed} ({packed / unpacked:.2f}x)")  # fmt: skip
        return
    results = {}
    for name, packing in (("unpacked", False), ("packed", True)):
        options = HFOptions(**{**opts, "packing": packing})
        results[name] = arm(
            f"multitoken {name}", options, train, work / name, MultiTokenNumericPenaltyLoss()
        )
    results["unpacked"]["tokens"] = epochs * unpacked_trie_tokens(
        options, train, MultiTokenNumericPenaltyLoss()
    )
    base = results["unpacked"]
    print()
    print(f"## numeric_penalty_multitoken, {len(train)} answers, {epochs} epochs;"
          f" load average at end {os.getloadavg()[0]:.2f}")  # fmt: skip
    print()
    print("| arm | wall s | tokens run | tokens/s | tokens vs unpacked | wall vs unpacked |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['seconds']:.1f} | {r['tokens']} | {r['tokens'] / r['seconds']:.0f} |"
            f" {r['tokens'] / base['tokens']:.2f} | {r['seconds'] / base['seconds']:.2f} |"
        )
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--respondents", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--top", type=int, default=8, help="N of the top-N arms")
    parser.add_argument("--skip-threads", action="store_true")
    parser.add_argument(
        "--multitoken", action="store_true", help="numeric_penalty_multitoken packed vs unpacked"
    )
    parser.add_argument("--tiny", action="store_true", help="a tiny random model (smoke test)")
    parser.add_argument(
        "--count-only", action="store_true", help="with --multitoken: count tokens, no training"
    )
    args = parser.parse_args()

    import torch
    from surveysim_hf.options import HFOptions

    print(f"cores {os.cpu_count()}, torch threads {torch.get_num_threads()},"
          f" load {os.getloadavg()}", flush=True)  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="bench-levers-"))
    train, plan = training_examples(args.respondents, "paper", work / "data")
    opts = dict(plan.config.backend.options)
    if args.tiny:
        from surveysim_hf.testing import write_tiny_model

        opts["model"] = str(write_tiny_model(work / "tiny", layers=args.top + 2))
    if args.multitoken:
        opts.update(epochs=args.epochs, progress_bars=False, checkpoint_every=0)
        multitoken_arms(opts, train, work, args.epochs, args.count_only)
        return
    compact, _ = training_examples(args.respondents, "compact", work / "data")
    # the reference is the trainer before these levers: LoRA on the attention of every layer
    opts.pop("lora_layers", None)
    opts["target_modules"] = ["q_proj", "k_proj", "v_proj", "o_proj"]
    opts.update(epochs=args.epochs, progress_bars=False, checkpoint_every=0)
    mlp = [*opts["target_modules"], "gate_proj", "up_proj", "down_proj"]
    results: dict[str, dict] = {}
    results["reference"] = arm("reference", HFOptions(**opts), train, work / "ref")
    results[f"top-{args.top}"] = arm(
        f"top-{args.top}",
        HFOptions(**opts, lora_layers=args.top, cache_frozen_layers=False),
        train,
        work / "top",
    )
    results[f"top-{args.top} + cache"] = arm(
        f"top-{args.top} + cache", HFOptions(**opts, lora_layers=args.top), train, work / "cache"
    )
    results[f"top-{args.top} attention+MLP + cache (default)"] = arm(
        "default", HFOptions(**{**opts, "target_modules": mlp}, lora_layers=args.top), train,
        work / "default",
    )  # fmt: skip
    results["compact persona"] = arm(
        "compact persona", HFOptions(**opts), compact, work / "compact"
    )
    # the reference again, last: the first arm also pays the machine's warm-up (file cache,
    # allocator), so the ratios use the faster of its two runs
    again = arm("reference (again)", HFOptions(**opts), train, work / "ref2")
    if again["seconds"] < results["reference"]["seconds"]:
        results["reference"] = again
    if not args.skip_threads:
        results["threads=1"] = arm("threads=1", HFOptions(**opts, threads=1), train, work / "t1")

    ref = results["reference"]["seconds"]
    print()
    print(f"## {args.respondents} respondents, {len(train)} answers, {args.epochs} epochs;"
          f" load average at end {os.getloadavg()[0]:.2f}")  # fmt: skip
    print()
    print("| arm | wall s | training tokens | tokens/s | speed-up vs reference |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['seconds']:.1f} | {r['tokens']} | {r['tokens'] / r['seconds']:.0f} |"
            f" {ref / r['seconds']:.2f}x |"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
