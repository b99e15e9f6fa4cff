#!/usr/bin/env python
"""Eager vs sdpa attention for the hf backend's three hot paths, in one run, on one machine.

For each attention implementation, on the same model (SmolLM2-135M-Instruct by default) and the
same EV-shift respondents:

1. one training step (forward + backward, LoRA) on one respondent's answers as separate padded
   examples (full logits, loss on the answer), and on the same answers prefix-packed (tree mask);
2. the exact answer distribution (prompt tree + answer tries, 5 temperatures) of the test
   prompts;
3. sampling one answer per test prompt at t = 1 with ``HFModel.generate``.

Each figure is the best of ``--repeats`` runs after one warm-up. This is what the backend's
``attention: auto`` choice rests on; run it again on a new machine before changing it.

    .venv/bin/python benchmarks/bench_attention.py [--test-respondents 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_fast_paths import TEMPERATURES, load_avg, survey_data


def best_of(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(impl: str, args, train, test, work: Path) -> dict[str, float]:
    """Best-of-``args.repeats`` seconds of the four hot paths with attention ``impl``."""
    import torch
    from surveysim_hf.backend import HFBackend
    from surveysim_hf.losses import collate, token_cross_entropy
    from surveysim_hf.options import HFOptions
    from surveysim_hf.packing import collate_packed, packed_loss
    from surveysim_hf.texts import encode_example
    from surveysim_hf.train import add_lora, pack_by_respondent

    options = HFOptions(model=args.model, progress_bars=False, attention=impl)
    backend = HFBackend(options, work / impl)
    answering = backend.load(None)
    model, tok = backend.load_base()
    torch.manual_seed(0)
    model = add_lora(model, options).train()
    encoded = [encode_example(tok, e, "answer", options.max_length) for e in train]
    separate = collate(encoded, train, tok.pad_token_id)
    packed = collate_packed(pack_by_respondent(encoded, train, 4096), tok.pad_token_id)
    answers = [str(a) for a in range(101)]

    def step_separate():
        logits = model(input_ids=separate.input_ids, attention_mask=separate.attention_mask)
        token_cross_entropy(logits.logits, separate.labels).backward()

    return {
        "train step, separate": best_of(step_separate, args.repeats),
        "train step, packed": best_of(lambda: packed_loss(model, packed).backward(), args.repeats),
        "exact, 5 temperatures": best_of(
            lambda: answering.answer_distribution(test.prompts, answers, TEMPERATURES),
            args.repeats,
        ),
        "sampling, t=1": best_of(lambda: answering.generate(test.prompts, 1.0, 8, 0), args.repeats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test-respondents", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    args = parser.parse_args()

    import torch

    work = Path(tempfile.mkdtemp(prefix="bench-attention-"))
    _, train, test = survey_data(1, args.test_respondents, work / "data")
    print(f"load average at start: {load_avg()}; {torch.get_num_threads()} threads", flush=True)
    rows = {}
    for impl in ("eager", "sdpa"):
        rows[impl] = measure(impl, args, train, test, work)
        print(f"{impl}: done; load {load_avg()}", flush=True)
    print()
    print(
        f"{len(train)} training answers (1 respondent), {len(test)} test prompts;"
        f" load average at end {load_avg()}"
    )
    print()
    print(f"| seconds (best of {args.repeats}) | eager | sdpa | eager / sdpa |")
    print("|---|---|---|---|")
    for key, eager in rows["eager"].items():
        sdpa = rows["sdpa"][key]
        print(f"| {key} | {eager:.2f} | {sdpa:.2f} | {eager / sdpa:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
