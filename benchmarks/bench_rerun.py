#!/usr/bin/env python
"""Benchmark of reruns through the result cache (issue 12, item 10).

Runs a configuration (default: ``surveys/evshift.yaml``) once with an empty cache, then:

1. again with one extra baseline, one extra metric and one extra segment: should take < 5% of
   the first run's time, and fine-tune nothing;
2. again with one extra temperature: only the LM systems' decoding passes for the new
   temperature run (no fine-tuning);
3. a 2x2 sweep over ``backend.options.lora_r`` x ``backend.options.learning_rate``, with an
   empty cache of its own: 4 fine-tunes and 1 shared zero-shot pass.

Counts come from each run's ``status.json`` ("cache": what was reused, what was computed).
Every run gets its own run directory under a temporary folder, and one private cache
(``SURVEYSIM_CACHE``), so the user's cache is neither read nor filled.

This fine-tunes a model (the default config's, several times for step 3): run it on a machine
meant for it, not on a shared CPU.

    .venv/bin/python benchmarks/bench_rerun.py                       # steps 1 and 2
    .venv/bin/python benchmarks/bench_rerun.py --sweep               # and step 3
    .venv/bin/python benchmarks/bench_rerun.py --set split.max_train_subjects=40
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_once(config_file: str, overrides: list[str], out: Path, name: str) -> dict:
    from surveysim_core.config import load_config
    from surveysim_core.plugins import get_plugins
    from surveysim_core.run import execute

    config = load_config(config_file, [*overrides, f"output.dir={out}"])
    started = time.perf_counter()
    run = execute(config, config_file, get_plugins(), run_dir=str(out / name))
    seconds = time.perf_counter() - started
    status = json.loads((run.dir / "status.json").read_text())
    computed = status["cache"].get("computed", [])
    return {
        "name": name,
        "seconds": round(seconds, 2),
        "fine_tunes": sum(item.endswith(": adapter") for item in computed),
        "answer_passes": [c for c in computed if ": answers at t=" in c],
        "reused": status["cache"].get("reused", []),
        "computed": computed,
        "systems": sorted(set(run.metrics["system"])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "surveys" / "evshift.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--extra-baseline", default="random")
    parser.add_argument("--extra-metric", default="accuracy")
    parser.add_argument("--extra-segment", default=None, help="default: none added")
    parser.add_argument("--extra-temperature", type=float, default=0.5)
    parser.add_argument("--sweep", action="store_true", help="also run the 2x2 sweep (4 trainings)")
    parser.add_argument("--json", dest="json_out", default=None, help="write the results here")
    parser.add_argument(
        "--no-extra", action="store_true",
        help="skip step 1 (its figure is in docs/performance.md); steps 2 and 3 count passes",
    )  # fmt: skip
    args = parser.parse_args()

    from surveysim_core.config import load_config

    work = Path(tempfile.mkdtemp(prefix="bench-rerun-"))
    os.environ["SURVEYSIM_CACHE"] = str(work / "cache")
    base = load_config(args.config, args.overrides)
    # the first run lacks the extra baseline (where the config lists it), so that step 1 adds it
    baselines = [b.model_dump(mode="json") for b in base.baselines]
    without = [b for b in baselines if b["name"] != args.extra_baseline]
    first = [*args.overrides, f"baselines={json.dumps(without)}"]
    results = [run_once(args.config, first, work, "first")]
    if args.no_extra:
        args.overrides = first
    extra = [
        *args.overrides,
        f"baselines={json.dumps([*without, {'name': args.extra_baseline}])}",
    ]
    metrics = base.evaluation.metrics
    if metrics is not None and args.extra_metric not in metrics:
        extra.append(f"evaluation.metrics={json.dumps([*metrics, args.extra_metric])}")
    if args.extra_segment:
        segments = [*base.evaluation.segments, args.extra_segment]
        extra.append(f"evaluation.segments={json.dumps(segments)}")
    if not args.no_extra:
        results.append(run_once(args.config, extra, work, "extra-baseline-metric-segment"))

    temps = [*base.decoding.temperatures, args.extra_temperature]
    more = [*args.overrides, f"decoding.temperatures={json.dumps(temps)}"]
    results.append(run_once(args.config, more, work, "extra-temperature"))

    if args.sweep:
        # its own empty cache: the sweep alone must cost 4 fine-tunes and 1 zero-shot pass
        os.environ["SURVEYSIM_CACHE"] = str(work / "cache-sweep")
        sweep = [
            *args.overrides,
            "sweep.backend.options.lora_r=[4, 8]",
            "sweep.backend.options.learning_rate=[0.0001, 0.0002]",
        ]
        results.append(run_once(args.config, sweep, work, "sweep-2x2"))

    first = results[0]["seconds"]
    print(f"\n{'run':<32} {'seconds':>8} {'share':>7} {'fine-tunes':>10}  answer passes")
    for r in results:
        share = r["seconds"] / first if first else float("nan")
        passes = "; ".join(r["answer_passes"]) or "-"
        print(f"{r['name']:<32} {r['seconds']:>8.1f} {share:>7.1%} {r['fine_tunes']:>10}  {passes}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))
    print(f"\nrun directories and cache: {work}", file=sys.stderr)


if __name__ == "__main__":
    main()
