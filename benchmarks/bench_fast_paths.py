#!/usr/bin/env python
"""Benchmark of the hf backend's fast paths against the plain ways, in one run, on one machine.

1. Fine-tuning, one epoch on the same examples: our trainer (prefix-packed, loss on the answer;
   and unpacked) vs a plain Hugging Face ``Trainer`` + PEFT LoRA loop (padding to the longest,
   loss on the whole text).
2. KL and RMSE at 5 temperatures on a test split: the exact decoder (one pass gives every
   temperature) vs sampling one answer per prompt per temperature with ``HFModel.generate``;
   both through the core's decoders (``surveysim_std.decoders``) and metric classes.
3. Achieved FLOP/s (approximation: 2 x N x positions for a forward pass, 6 x N x positions for
   training, N = all parameters, attention ignored) as a share of a float32 matmul peak measured
   here, and peak resident memory (``getrusage``).

Data: the synthetic EV-shift population, split and rendered by the core's run machinery.
Model: the plugin's default (SmolLM2-135M-Instruct, offline GGUF converted once and cached).

    .venv/bin/python benchmarks/bench_fast_paths.py [--respondents 24] [--test-respondents 20]
    .venv/bin/python benchmarks/bench_fast_paths.py --quick
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPERATURES = [0.0, 0.5, 0.75, 1.0, 1.25]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def matmul_peak(n: int = 2048, repeats: int = 8) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def survey_data(train_n: int, test_n: int, workdir: Path):
    """Training examples and the test ItemSet, built by the core's run machinery."""
    from surveysim_core.config import load_config
    from surveysim_core.plugins import get_plugins
    from surveysim_core.protocols import Progress
    from surveysim_core.run import _examples, build_items, load_data, plan_run
    from surveysim_core.split import split_by_subject

    source = str(ROOT / "surveys" / "evshift.yaml")
    config = load_config(source, ["backend.name=hf", "data.subjects=400"])
    plugins = get_plugins()
    plan = plan_run(config, source, plugins)
    data = load_data(plan, workdir, plugins, Progress())
    splits = split_by_subject(
        data.respondents.index,
        {"train": 0.8, "val": 0.1, "test": 0.1},
        0,
        caps={"train": train_n, "val": 1, "test": test_n},
    )
    train = build_items(plan, data, splits["train"])
    test = build_items(plan, data, splits["test"])
    return plan, _examples(train), test


def hf_trainer_epoch(backend, examples, batch_size: int) -> dict:
    """One epoch of a plain HF Trainer + PEFT LoRA: pad to the longest, loss on every token."""
    import torch
    from peft import LoraConfig, get_peft_model
    from surveysim_hf.texts import end_of_turn, prompt_text
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    model, tok = backend.load_base()
    o = backend.options
    model = get_peft_model(
        model,
        LoraConfig(
            r=o.lora_r,
            lora_alpha=o.lora_alpha,
            lora_dropout=o.lora_dropout,
            target_modules=list(o.target_modules),
            task_type="CAUSAL_LM",
        ),
    )
    texts = [
        prompt_text(tok, e.prompt) + e.answer_text + end_of_turn(tok, e.prompt) for e in examples
    ]
    rows = [tok(t, add_special_tokens=False) for t in texts]
    collator = DataCollatorForLanguageModeling(tok, mlm=False)
    positions = 0
    for start in range(0, len(rows), batch_size):  # what the collator pads each batch to
        chunk = rows[start : start + batch_size]
        positions += len(chunk) * max(len(r["input_ids"]) for r in chunk)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=batch_size,
            num_train_epochs=1,
            learning_rate=o.learning_rate,
            save_strategy="no",
            report_to=[],
            logging_strategy="no",
            disable_tqdm=True,
            use_cpu=not torch.cuda.is_available(),
            dataloader_num_workers=0,
            seed=0,
        )
        trainer = Trainer(
            model=model, args=args, train_dataset=[dict(r) for r in rows], data_collator=collator
        )
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "positions": positions,
        "real_tokens": sum(len(r["input_ids"]) for r in rows),
        "params": sum(p.numel() for p in model.parameters()),
    }


def our_epoch(backend_cls, options, examples, workdir: Path) -> dict:
    from surveysim_hf.losses import CrossEntropyLoss
    from surveysim_hf.train import read_train_log

    backend = backend_cls(options, workdir)
    start = time.perf_counter()
    adapter = backend.fine_tune(examples, [], CrossEntropyLoss(), workdir / "adapter", False)
    seconds = time.perf_counter() - start
    rows = [r for r in read_train_log(adapter / "train_log.csv") if r["split"] == "train"]
    return {
        "seconds": seconds,
        "loop_seconds": rows[-1]["seconds"],
        "positions": sum(r["tokens"] for r in rows),
        "adapter": adapter,
        "backend": backend,
    }


def evaluate(plan, model, test, decoder) -> tuple[float, dict]:
    """Decode every question at TEMPERATURES and score KL and RMSE with the core's metrics."""
    import numpy as np
    from surveysim_std.metrics import KL, RMSE, SuccessRate

    from surveysim_core.run import parse_with

    start = time.perf_counter()
    scores: dict[float, list] = {t: [] for t in TEMPERATURES}
    for qid, answer in plan.answer_types.items():
        mask = test.question_mask(qid)
        if not mask.any():
            continue
        prompts = [p for p, m in zip(test.prompts, mask, strict=True) if m]
        human = test.items.loc[mask, "answer"].to_numpy(float)
        decoded = decoder.decode(model, prompts, answer, parse_with(plan, qid), TEMPERATURES, 8, 0)
        for t, d in decoded.items():
            dist = d.distribution
            scores[t].append(
                (
                    KL()(human, dist, answer),
                    RMSE()(human, dist, answer),
                    SuccessRate()(human, dist, answer),
                )
            )
    seconds = time.perf_counter() - start
    means = {
        t: tuple(float(np.nanmean([s[i] for s in v])) for i in range(3)) for t, v in scores.items()
    }
    return seconds, means


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--respondents", type=int, default=24, help="training respondents")
    parser.add_argument("--test-respondents", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--quick", action="store_true", help="6 + 4 respondents (CPU minutes)")
    parser.add_argument("--skip-hf-trainer", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.respondents, args.test_respondents = 6, 4

    import torch
    from surveysim_hf.backend import HFBackend
    from surveysim_hf.options import HFOptions
    from surveysim_std.decoders import ExactDecoder, SampleDecoder

    print(f"load average at start (1/5/15 min): {load_avg()}; cores: {os.cpu_count()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench-fast-paths-"))
    plan, train, test = survey_data(args.respondents, args.test_respondents, work / "data")
    print(
        f"data: {len(train)} training answers ({args.respondents} respondents),"
        f" {len(test)} test prompts ({args.test_respondents} respondents),"
        f" temperatures {TEMPERATURES}",
        flush=True,
    )
    peak = matmul_peak()
    print(f"float32 matmul peak (2048^2, best of 8): {peak / 1e9:.1f} GFLOP/s", flush=True)

    base = dict(model=args.model, epochs=1, batch_size=args.batch_size, progress_bars=False)
    results = {}
    results["ours packed"] = our_epoch(
        HFBackend, HFOptions(**base, packing=True), train, work / "packed"
    )
    results["ours packed"]["rss"] = peak_rss_mib()
    print(f"ours packed: {results['ours packed']['seconds']:.1f}s; load {load_avg()}", flush=True)
    results["ours unpacked"] = our_epoch(
        HFBackend, HFOptions(**base, packing=False), train, work / "unpacked"
    )
    results["ours unpacked"]["rss"] = peak_rss_mib()
    print(
        f"ours unpacked: {results['ours unpacked']['seconds']:.1f}s; load {load_avg()}", flush=True
    )
    # a plain Trainer loop gets the model's default attention (sdpa)
    ref_backend = HFBackend(HFOptions(**base, attention="sdpa"), work / "hf")
    if not args.skip_hf_trainer:
        results["HF Trainer"] = hf_trainer_epoch(ref_backend, train, args.batch_size)
        results["HF Trainer"]["rss"] = peak_rss_mib()
        print(f"HF Trainer: {results['HF Trainer']['seconds']:.1f}s; load {load_avg()}", flush=True)

    model = results["ours packed"]["backend"].load(results["ours packed"]["adapter"])
    params = sum(p.numel() for p in model.model.parameters())
    t_exact, m_exact = evaluate(plan, model, test, ExactDecoder())
    exact_positions = model.exact_tokens
    rss_exact = peak_rss_mib()
    print(f"exact: {t_exact:.1f}s; load {load_avg()}", flush=True)
    t_sample, m_sample = evaluate(plan, model, test, SampleDecoder())
    print(f"sampling: {t_sample:.1f}s; load {load_avg()}", flush=True)
    prompt_tokens = sum(len(x) for x in model.prompt_ids(test.prompts))
    # sampling: every prompt once per temperature plus up to 8 new tokens (upper bound)
    sample_positions = len(TEMPERATURES) * (prompt_tokens + 8 * len(test.prompts))

    print()
    print(f"## Results (load average at end: {load_avg()}; {torch.get_num_threads()} threads)")
    print(
        f"model {args.model}, N = {params / 1e6:.1f}M parameters; matmul peak {peak / 1e9:.1f} GFLOP/s"
    )
    print()
    print(
        "| fine-tuning, 1 epoch | wall s | loop s | positions | positions/s | FLOP/s (6N) | % peak | peak RSS MiB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        secs = r.get("loop_seconds", r["seconds"])
        flops = 6 * params * r["positions"] / secs
        print(
            f"| {name} | {r['seconds']:.1f} | {secs:.1f} | {r['positions']} |"
            f" {r['positions'] / secs:.0f} | {flops / 1e9:.1f} G | {100 * flops / peak:.0f}% | {r['rss']:.0f} |"
        )
    if "HF Trainer" in results:
        ratio = results["HF Trainer"]["seconds"] / results["ours packed"]["seconds"]
        print(f"\nspeed-up per epoch, ours packed vs HF Trainer: {ratio:.2f}x (target >= 2x)")
    ratio_u = results["ours unpacked"]["seconds"] / results["ours packed"]["seconds"]
    print(f"speed-up per epoch, packed vs unpacked (our trainer): {ratio_u:.2f}x")
    print()
    print("| KL/RMSE at 5 temperatures | wall s | positions | FLOP/s (2N) | % peak |")
    print("|---|---|---|---|---|")
    for name, secs, pos in (
        ("exact decoder", t_exact, exact_positions),
        ("sampling (HFModel.generate)", t_sample, sample_positions),
    ):
        flops = 2 * params * pos / secs
        print(f"| {name} | {secs:.1f} | {pos} | {flops / 1e9:.1f} G | {100 * flops / peak:.0f}% |")
    print(f"\nspeed-up, exact vs sampling: {t_sample / t_exact:.2f}x (target >= 5x)")
    print(f"peak RSS after exact decoding: {rss_exact:.0f} MiB; at end: {peak_rss_mib():.0f} MiB")
    print()
    print(
        "| t | KL exact | KL sampled | RMSE exact | RMSE sampled | success exact | success sampled |"
    )
    print("|---|---|---|---|---|---|---|")
    for t in TEMPERATURES:
        (ke, re_, se), (ks, rs, ss) = m_exact[t], m_sample[t]
        print(f"| {t:g} | {ke:.3f} | {ks:.3f} | {re_:.2f} | {rs:.2f} | {se:.3f} | {ss:.3f} |")


if __name__ == "__main__":
    sys.exit(main())
