#!/usr/bin/env python
"""Benchmark of the hf backend's fast paths against the plain ways, in one run, on one machine.

1. Fine-tuning, one epoch on the same examples: our trainer (prefix-packed, loss on the answer;
   and unpacked) vs a plain Hugging Face ``Trainer`` + PEFT LoRA loop (padding to the longest,
   loss on the whole text).
2. KL and RMSE at 5 temperatures on a test split: the exact decoder (one pass gives every
   temperature) vs sampling one answer per prompt per temperature with ``HFModel.generate``;
   both through the core's decoders (``surveysim_std.decoders``) and metric classes.
3. Achieved FLOP/s as a share of a float32 matmul peak measured here, and the peak resident
   memory of each phase (sampled from ``/proc/self/statm`` every 20 ms). Positions are counted
   by hooks on the model while it runs (padding included): ``body`` positions through the
   decoder, ``head`` positions through the LM head. FLOPs = 2 x (N_body x body + N_head x head)
   for a forward pass; training with frozen base weights (LoRA) adds the input gradients only,
   so 4 x (...). N_body: parameters outside the embedding and LM head; N_head: the LM head's;
   attention scores and LoRA's own matmuls are not counted.

Data: the synthetic EV-shift population, split and rendered by the core's run machinery.
Model: the plugin's default (SmolLM2-135M-Instruct, offline GGUF converted once and cached).

    .venv/bin/python benchmarks/bench_fast_paths.py [--respondents 24] [--test-respondents 20]
    .venv/bin/python benchmarks/bench_fast_paths.py --quick
    .venv/bin/python benchmarks/bench_fast_paths.py --survey evshift-0to9 --decoding-only
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPERATURES = [0.0, 0.5, 0.75, 1.0, 1.25]


class PeakRSS:
    """Peak resident memory (MiB) while the ``with`` block runs, sampled every 20 ms (falls
    back to the process's lifetime peak from ``getrusage`` where there is no /proc)."""

    def __enter__(self) -> PeakRSS:
        self.peak = self._now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._now())

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._now())

    @staticmethod
    def _now() -> float:
        try:
            pages = int(Path("/proc/self/statm").read_text().split()[1])
            return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
        except (OSError, ValueError):
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Positions:
    """Counts positions run through every attached model's decoder and LM head."""

    def __init__(self) -> None:
        self.body = self.head = 0

    def reset(self) -> None:
        self.body = self.head = 0

    def attach(self, model) -> None:
        from surveysim_hf.forward import unwrap

        base = unwrap(model)
        base.get_decoder().register_forward_pre_hook(self._on_body, with_kwargs=True)
        base.get_output_embeddings().register_forward_pre_hook(self._on_head)

    def _on_body(self, module, args, kwargs) -> None:
        x = kwargs.get("input_ids")
        if x is None:
            x = kwargs.get("inputs_embeds", args[0] if args else None)
        self.body += int(x.shape[0] * x.shape[1])

    def _on_head(self, module, args) -> None:
        self.head += int(args[0].shape[:-1].numel())


POSITIONS = Positions()


def count_positions() -> None:
    """Attach ``POSITIONS`` to every model the hf backend loads from now on."""
    from surveysim_hf.backend import HFBackend

    original = HFBackend.load_base

    def load_base(self):
        model, tokenizer = original(self)
        POSITIONS.attach(model)
        return model, tokenizer

    HFBackend.load_base = load_base


def model_sizes(model) -> tuple[int, int]:
    """(N_body, N_head): parameters outside the embedding and LM head, and the LM head's."""
    from surveysim_hf.forward import unwrap

    base = unwrap(model)
    embed = base.get_input_embeddings().weight
    head = base.get_output_embeddings().weight
    total = sum(p.numel() for p in base.parameters())  # tied weights are listed once
    tied = head.data_ptr() == embed.data_ptr()
    return total - embed.numel() - (0 if tied else head.numel()), head.numel()


def flops(sizes: tuple[int, int], body: int, head: int, training: bool) -> float:
    n_body, n_head = sizes
    return (4 if training else 2) * (n_body * body + n_head * head)


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


def survey_data(train_n: int, test_n: int, workdir: Path, survey: str = "evshift"):
    """Training examples and the test ItemSet, built by the core's run machinery."""
    from surveysim_core.config import load_config
    from surveysim_core.items import build_items, examples, load_data
    from surveysim_core.plan import plan_run
    from surveysim_core.plugins import get_plugins
    from surveysim_core.protocols import Progress
    from surveysim_core.split import split_by_subject

    source = str(ROOT / "surveys" / "evshift.yaml")
    config = load_config(source, ["backend.name=hf", "data.subjects=400", f"survey={survey}"])
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
    return plan, examples(train), test


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
            model=model,
            args=args,
            train_dataset=[dict(r) for r in rows],
            data_collator=DataCollatorForLanguageModeling(tok, mlm=False),
        )
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "real_tokens": sum(len(r["input_ids"]) for r in rows)}


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
        "real_tokens": sum(r["tokens"] for r in rows),
        "adapter": adapter,
        "backend": backend,
    }


def phase(name: str, results: dict, run) -> dict:
    """Run one phase, recording its positions and peak memory under ``results[name]``."""
    POSITIONS.reset()
    with PeakRSS() as rss:
        result = run()
    result.update(body=POSITIONS.body, head=POSITIONS.head, rss=rss.peak)
    results[name] = result
    print(f"{name}: {result['seconds']:.1f}s; load {load_avg()}", flush=True)
    return result


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
    return {"seconds": seconds, "metrics": means}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--respondents", type=int, default=24, help="training respondents")
    parser.add_argument("--test-respondents", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--quick", action="store_true", help="6 + 4 respondents (CPU minutes)")
    parser.add_argument("--skip-hf-trainer", action="store_true")
    parser.add_argument(
        "--survey", default="evshift", help="evshift (0-100) or evshift-0to9 (0-9 answers)"
    )
    parser.add_argument(
        "--decoding-only",
        action="store_true",
        help="fine-tune the packed model only (the decoders need it); skip the other trainers",
    )
    args = parser.parse_args()
    if args.quick:
        args.respondents, args.test_respondents = 6, 4

    import torch
    from surveysim_hf.backend import HFBackend
    from surveysim_hf.options import HFOptions
    from surveysim_std.decoders import ExactDecoder, SampleDecoder

    print(f"load average at start (1/5/15 min): {load_avg()}; cores: {os.cpu_count()}", flush=True)
    count_positions()
    work = Path(tempfile.mkdtemp(prefix="bench-fast-paths-"))
    plan, train, test = survey_data(
        args.respondents, args.test_respondents, work / "data", args.survey
    )
    print(
        f"data: {len(train)} training answers ({args.respondents} respondents),"
        f" {len(test)} test prompts ({args.test_respondents} respondents),"
        f" temperatures {TEMPERATURES}",
        flush=True,
    )
    peak = matmul_peak()
    print(f"float32 matmul peak (2048^2, best of 8): {peak / 1e9:.1f} GFLOP/s", flush=True)

    base = dict(model=args.model, epochs=1, batch_size=args.batch_size, progress_bars=False)
    fit: dict[str, dict] = {}
    packed = phase(
        "ours packed",
        fit,
        lambda: our_epoch(HFBackend, HFOptions(**base, packing=True), train, work / "packed"),
    )
    if not args.decoding_only:
        phase(
            "ours unpacked",
            fit,
            lambda: our_epoch(
                HFBackend, HFOptions(**base, packing=False), train, work / "unpacked"
            ),
        )
    if not (args.skip_hf_trainer or args.decoding_only):  # plain Trainer, default attention
        reference = HFBackend(HFOptions(**base), work / "hf")
        phase("HF Trainer", fit, lambda: hf_trainer_epoch(reference, train, args.batch_size))

    model = packed["backend"].load(packed["adapter"])
    sizes = model_sizes(model.model)
    answer: dict[str, dict] = {}
    exact = phase("exact decoder", answer, lambda: evaluate(plan, model, test, ExactDecoder()))
    sample = phase(
        "sampling (HFModel.generate)", answer, lambda: evaluate(plan, model, test, SampleDecoder())
    )

    print()
    print(f"## Results (load average at end: {load_avg()}; {torch.get_num_threads()} threads)")
    print(
        f"model {args.model}: N_body {sizes[0] / 1e6:.1f}M, N_head {sizes[1] / 1e6:.1f}M"
        f" parameters; matmul peak {peak / 1e9:.1f} GFLOP/s"
    )
    print()
    print(
        "| fine-tuning, 1 epoch | wall s | loop s | real tokens | positions run | head positions"
        " | positions/s | FLOP/s | % peak | peak RSS MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in fit.items():
        secs = r.get("loop_seconds", r["seconds"])
        rate = flops(sizes, r["body"], r["head"], training=True) / secs
        print(
            f"| {name} | {r['seconds']:.1f} | {secs:.1f} | {r['real_tokens']} | {r['body']} |"
            f" {r['head']} | {r['body'] / secs:.0f} | {rate / 1e9:.1f} G |"
            f" {100 * rate / peak:.0f}% | {r['rss']:.0f} |"
        )
    if "HF Trainer" in fit:
        ratio = fit["HF Trainer"]["seconds"] / packed["seconds"]
        print(f"\nspeed-up per epoch, ours packed vs HF Trainer: {ratio:.2f}x (target >= 2x)")
    if "ours unpacked" in fit:
        ratio_u = fit["ours unpacked"]["seconds"] / packed["seconds"]
        print(f"speed-up per epoch, packed vs unpacked (our trainer): {ratio_u:.2f}x")
    print()
    print(
        "| KL/RMSE at 5 temperatures | wall s | positions run | head positions | FLOP/s | % peak"
        " | peak RSS MiB |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, r in answer.items():
        rate = flops(sizes, r["body"], r["head"], training=False) / r["seconds"]
        print(
            f"| {name} | {r['seconds']:.1f} | {r['body']} | {r['head']} | {rate / 1e9:.1f} G |"
            f" {100 * rate / peak:.0f}% | {r['rss']:.0f} |"
        )
    print(
        f"\nspeed-up, exact vs sampling: {sample['seconds'] / exact['seconds']:.2f}x (target >= 5x)"
    )
    print()
    print(
        "| t | KL exact | KL sampled | RMSE exact | RMSE sampled | success exact | success sampled |"
    )
    print("|---|---|---|---|---|---|---|")
    for t in TEMPERATURES:
        (ke, re_, se), (ks, rs, ss) = exact["metrics"][t], sample["metrics"][t]
        print(f"| {t:g} | {ke:.3f} | {ks:.3f} | {re_:.2f} | {rs:.2f} | {se:.3f} | {ss:.3f} |")


if __name__ == "__main__":
    sys.exit(main())
