"""Compare fine-tuning losses on the synthetic EV-shift data with the real default model.

Every arm fine-tunes SmolLM2-135M-Instruct (offline) with the same subjects, epochs, learning
rate and seed, answers the test prompts with the exact decoder at t=0 and t=1, and the script
prints one table (loss x question: KL and RMSE at t=0 and t=1, segment "all") read from each
run's metrics.csv. Arms already finished under --out are read, not re-run.

    .venv/bin/python plugins/surveysim-losses/experiments/compare_penalties.py --out /tmp/pen

Arms on evshift-0to9 (0-9 scale): cross_entropy; numeric_penalty with d = 2, 5, 10;
numeric_penalty_multitoken with d = 5 (all at alpha 0.5). ``--wide`` adds a pair on the 0-100
scale (evshift): cross_entropy and numeric_penalty_multitoken with d = 55 (5 on 0-9).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from surveysim_hf.options import HFOptions

REPO = Path(__file__).resolve().parents[3]
CLI = REPO / ".venv" / "bin" / "surveysim"

ARMS = {  # name: (survey, loss, loss options)
    "cross_entropy": ("evshift-0to9", "cross_entropy", {}),
    "penalty_d2": ("evshift-0to9", "numeric_penalty", {"alpha": 0.5, "d": 2}),
    "penalty_d5": ("evshift-0to9", "numeric_penalty", {"alpha": 0.5, "d": 5}),
    "penalty_d10": ("evshift-0to9", "numeric_penalty", {"alpha": 0.5, "d": 10}),
    "multitoken_d5": ("evshift-0to9", "numeric_penalty_multitoken", {"alpha": 0.5, "d": 5}),
}
WIDE = {
    "cross_entropy_0to100": ("evshift", "cross_entropy", {}),
    "multitoken_d55_0to100": ("evshift", "numeric_penalty_multitoken", {"alpha": 0.5, "d": 55}),
}


def command(arm: str, spec, args) -> list[str]:
    survey, loss, options = spec
    sets = {
        "survey": survey,
        "backend.name": "hf",
        "backend.systems": "[fine_tuned]",
        "backend.loss.name": loss,
        "backend.options.model": "smollm2-135m-instruct",
        "backend.options.epochs": args.epochs,
        "backend.options.learning_rate": args.lr,
        "backend.options.seed": args.seed,
        "split.seed": args.seed,
        "backend.options.progress_bars": "false",
        "decoding.decoder": "exact",
        "decoding.temperatures": "[0.0, 1.0]",
        "split.max_train_subjects": args.train_subjects,
        "split.max_val_subjects": args.val_subjects,
        "split.max_test_subjects": args.test_subjects,
        "baselines": "[]",
        "evaluation.bootstrap": 2,
        "output.dir": str(Path(args.out) / arm),
    }
    if "packing" in HFOptions.model_fields:
        # packed training batches by respondent, which only some losses support: train every
        # arm on separate examples so that all see the same batches and optimizer steps
        sets["backend.options.packing"] = "false"
    sets.update({f"backend.loss.options.{k}": v for k, v in options.items()})
    cmd = [str(CLI), "run", str(REPO / "surveys" / "evshift.yaml")]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={value}"]
    return cmd


def finished(arm: str, out: Path) -> Path | None:
    found = sorted((out / arm).glob("*/systems/fine_tuned/metrics.csv"))
    return found[-1] if found else None


def table(arms: dict, out: Path) -> pd.DataFrame:
    """One row per arm and question (segment "all"), then the floors of each survey's test
    split (a uniform answer and the training marginal, from the first finished arm)."""
    rows, floor_rows, floors_done = [], [], set()
    metrics = ["kl", "rmse", "success_rate"]
    for arm, (survey, _, _) in arms.items():
        path = finished(arm, out)
        if path is None:
            continue
        m = pd.read_csv(path)
        m = m[(m["segment"] == "all") & m["metric"].isin(metrics)]
        for question, part in m.groupby("question"):
            row = {"arm": arm, "question": question}
            for _, r in part.iterrows():
                row[f"{r['metric']} t={float(r['temperature']):g}"] = r["value"]
            rows.append(row)
        if survey not in floors_done:
            floors_done.add(survey)
            run = pd.read_csv(path.parents[2] / "metrics.csv")
            run = run[(run["segment"] == "all") & run["metric"].isin(metrics)]
            for (system, question), part in run.groupby(["system", "question"]):
                if system not in ("floor:uniform", "floor:marginal"):
                    continue
                row = {"arm": f"{system} ({survey})", "question": question}
                for _, r in part.iterrows():
                    for t in ("0", "1"):
                        row[f"{r['metric']} t={t}"] = r["value"]
                floor_rows.append(row)
    rows += floor_rows
    frame = pd.DataFrame(rows)
    cols = ["arm", "question", "kl t=0", "rmse t=0", "kl t=1", "rmse t=1", "success_rate t=1"]
    return frame[[c for c in cols if c in frame.columns]] if rows else frame


def markdown(frame: pd.DataFrame) -> str:
    def cell(value) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(False)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="/tmp/pen", help="folder of the arms' runs")
    parser.add_argument("--train-subjects", type=int, default=8)
    parser.add_argument("--val-subjects", type=int, default=2)
    parser.add_argument("--test-subjects", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0, help="training and split seed")
    parser.add_argument("--arms", nargs="*", help="run only these arms")
    parser.add_argument("--wide", action="store_true", help="add the 0-100 pair")
    parser.add_argument("--table-only", action="store_true", help="print the table, run nothing")
    args = parser.parse_args()
    out = Path(args.out)
    arms = {**ARMS, **(WIDE if args.wide else {})}
    if args.arms:
        arms = {a: s for a, s in {**ARMS, **WIDE}.items() if a in args.arms}
    for arm, spec in arms.items():
        if args.table_only or finished(arm, out):
            continue
        cmd = command(arm, spec, args)
        print(f"[{time.strftime('%H:%M:%S')}] {arm}: {' '.join(cmd[1:])}", flush=True)
        started = time.time()
        (out / arm).mkdir(parents=True, exist_ok=True)
        with (out / f"{arm}.log").open("w") as log:
            rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        print(f"[{time.strftime('%H:%M:%S')}] {arm}: rc={rc}, {time.time() - started:.0f}s")
        if rc:
            print(f"  see {out / f'{arm}.log'}", file=sys.stderr)
    frame = table(arms, out)
    print(markdown(frame) if len(frame) else "no finished arms")


if __name__ == "__main__":
    main()
