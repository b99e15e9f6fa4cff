"""The fidelity issue's targets (item 5), on the TEST split, read from finished runs.

Nothing is computed again: every figure comes from what the runs wrote (``summary.json``: the
test-split metrics with 95% bootstrap CIs over test respondents, the baselines' settings chosen
on validation; ``status.json``: the run's own clock and throughput; the pilot validation's
``validation.json``). Each target prints its figure, the reference and whether it is met.

    surveysim run surveys/evshift.yaml                      # the default run
    surveysim run surveys/evshift-memory.yaml               # the same with respondent memory
    python benchmarks/pilot_validation.py --run runs/evshift/<run> --holdout none --personas 200
    python benchmarks/fidelity_targets.py --run runs/evshift/<run> \\
        --memory-run runs/evshift-memory/<run> --pilot runs/pilot-validation

``--memory-run`` and ``--pilot`` are optional; a target whose run is not given, or whose
reference baseline the run did not fit, prints as not measured.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SYSTEM = "fine_tuned"
INITIAL, POST = "initial_preference", "post_intervention_preference"
QUESTIONS = (INITIAL, POST)
NO_MARGINAL = "the marginal baseline's: the run has none (add `- name: marginal` to baselines)"


@dataclass
class Target:
    name: str
    figure: str
    reference: str
    met: bool | None  # None: not measured

    def line(self) -> str:
        verdict = {True: "met", False: "NOT met", None: "not measured"}[self.met]
        return f"| {self.name} | {self.figure} | {self.reference} | {verdict} |"


def load_run(run: Path) -> dict[str, Any]:
    summary = run / "summary.json"
    if not summary.is_file():
        raise SystemExit(f"{run}: no summary.json; is it a finished run directory?")
    out = json.loads(summary.read_text())
    config = run / "config.yaml"  # the run's resolved configuration
    out["run_config"] = yaml.safe_load(config.read_text()) if config.is_file() else {}
    return out


def pick(summary: dict[str, Any], system: str, question: str, metric: str, **where: Any) -> dict:
    """The one result row of ``system`` for ``question`` and ``metric``; for a baseline with
    several settings, the setting chosen on validation for that metric."""
    rows = [
        r
        for r in summary["results"]
        if r["system"] == system
        and r["question"] == question
        and r["metric"] == metric
        and all(r.get(k) == v for k, v in where.items())
    ]
    if len(rows) > 1:
        rows = [r for r in rows if r.get("chosen_on") == "validation"] or rows
    if not rows and system != SYSTEM:
        return {}  # a baseline the run did not fit: its targets print as not measured
    if len(rows) != 1:
        raise SystemExit(
            f"{summary.get('run_dir')}: expected one {system} {metric} row for {question}"
            f" ({where}), found {len(rows)}"
        )
    return rows[0]


def with_ci(row: dict[str, Any], digits: int = 3) -> str:
    if row.get("ci_low") is None:
        return f"{row['value']:.{digits}f}"
    return f"{row['value']:.{digits}f} [{row['ci_low']:.{digits}f}, {row['ci_high']:.{digits}f}]"


def calibrated_temperature(summary: dict[str, Any], question: str) -> float:
    return pick(summary, SYSTEM, question, "kl", readout="calibrated")["temperature"]


def default_targets(summary: dict[str, Any], status: dict[str, Any], minutes: float) -> list:
    out = []
    r = pick(summary, SYSTEM, INITIAL, "pearson", readout="expected", temperature=1.0)
    out.append(
        Target(
            "initial: pearson of `expected` (t = 1)",
            with_ci(r, 2),
            ">= 0.45, CI lower bound > 0",
            bool(r["value"] >= 0.45 and (r["ci_low"] or 0) > 0),
        )
    )
    r = pick(summary, SYSTEM, POST, "pearson", readout="expected", temperature=1.0)
    out.append(Target("post: pearson of `expected` (t = 1)", with_ci(r, 2), ">= 0.35",
                      bool(r["value"] >= 0.35)))  # fmt: skip
    for q in QUESTIONS:
        r = pick(summary, SYSTEM, q, "rmse", readout="expected", temperature=1.0)
        # like with like: the marginal's mean as its point prediction, not its sampled answers
        m = pick(summary, "marginal", q, "rmse", readout="expected")
        out.append(
            Target(
                f"{q}: RMSE of `expected` (t = 1)",
                with_ci(r, 1),
                f"below the marginal's `expected` {m['value']:.1f}" if m else NO_MARGINAL,
                bool(r["value"] < m["value"]) if m else None,
            )
        )
    for q in QUESTIONS:
        r = pick(summary, SYSTEM, q, "spread", readout="expected", temperature=1.0)
        h = pick(summary, "floor:humans", q, "spread")
        humans = f" (humans {h['value']:.1f})" if h else ""
        out.append(
            Target(
                f"{q}: SD of `expected` across test respondents",
                f"{r['value']:.1f}",
                f">= 5 points{humans}",
                bool(r["value"] >= 5),
            )
        )
    for q in QUESTIONS:
        r = pick(summary, SYSTEM, q, "kl", readout="calibrated")
        m = pick(summary, "marginal", q, "kl", readout="answer")
        out.append(
            Target(
                f"{q}: KL at `calibrated` (t = {r['temperature']:g})",
                with_ci(r),
                f"<= marginal {m['value']:.3f} + 0.02" if m else NO_MARGINAL,
                bool(r["value"] <= m["value"] + 0.02) if m else None,
            )
        )
    total = float(status["timings_s"]["total"])
    rates = ", ".join(f"{k} {v:g}" for k, v in status.get("throughput", {}).items())
    out.append(
        Target(
            "default run time (the run's own clock)",
            f"{total / 60:.1f} min ({rates})",
            f"<= {minutes:g} min",
            total <= minutes * 60,
        )
    )
    return out


def memory_target(summary: dict[str, Any] | None) -> Target:
    name = "with memory (known respondent): post RMSE of `expected`"
    if summary is None:
        return Target(name, "-", "below CatBoost's", None)
    r = pick(summary, SYSTEM, POST, "rmse", readout="expected", temperature=1.0)
    c = pick(summary, "catboost", POST, "rmse")
    if not c:
        return Target(
            name, with_ci(r, 1), "below CatBoost's: the run has no catboost baseline", None
        )
    sees = (
        "with the previous answer as a feature, as the model has it"
        if catboost_history(summary)
        else "demographics and intervention only; `history: true` gives it the previous answer"
    )
    return Target(
        name,
        with_ci(r, 1),
        f"below CatBoost's {with_ci(c, 1)} ({c['setting']}, chosen on validation; {sees})",
        bool(r["value"] < c["value"]),
    )


def catboost_history(summary: dict[str, Any]) -> bool:
    """Whether the run's CatBoost baseline saw the respondent's previous answer."""
    for baseline in summary.get("run_config", {}).get("baselines") or []:
        if baseline.get("name") == "catboost":
            return bool((baseline.get("options") or {}).get("history"))
    return False


def pilot_target(validation: dict[str, Any] | None) -> Target:
    name = "per intervention: Spearman of predicted vs true population mean shift"
    if validation is None:
        return Target(name, "-", ">= 0.6", None)
    rho = validation["pilot"]["shift"]["spearman_all"]
    n = validation["pilot"]["shift"]["n_all"]
    others = []
    for key, label in (("catboost", "CatBoost"), ("human_test_sample", "human test sample")):
        if key in validation:
            value = validation[key]["shift"]["spearman_all"]
            others.append(f"{label} {'undefined' if value is None else f'{value:.2f}'}")
    figure = "undefined (constant)" if rho is None else f"{rho:.2f}"
    figure += f" over {n} statements, {validation['personas']} personas"
    held = validation.get("holdout") or []
    if held:
        figure += f" ({len(held)} statements held out of training)"
    return Target(name, figure, ">= 0.6; " + "; ".join(others), rho is not None and rho >= 0.6)


def segment_gap_target(run: Path, low: str = "Strongly conservative",
                       high: str = "Strongly liberal") -> Target:  # fmt: skip
    """Does the model tell the political extremes apart as much as the humans do? The
    difference of mean E[a] (t = 1, initial question) between the two segments' test
    respondents, against the humans' difference with its 95% CI (normal, unequal variances)."""
    name = f"initial: mean E[a] of {high.lower()} minus {low.lower()} (t = 1)"
    dist = run / "systems" / SYSTEM / "distributions.parquet"
    responses = run / "data" / "responses.csv"
    if not (dist.is_file() and responses.is_file()):
        return Target(name, "-", "the run has no distributions.parquet or data/responses.csv", None)
    import numpy as np
    import pandas as pd

    d = pd.read_parquet(dist)
    d = d[(d["temperature"] == 1.0) & (d["question"] == INITIAL)].copy()
    people = pd.read_csv(responses, dtype={"subject_id": str}).drop_duplicates("subject_id")
    d["segment"] = d["subject_id"].astype(str).map(people.set_index("subject_id")["political"])
    d["expected"] = [
        float(np.dot(p, a) / np.sum(p)) if np.sum(p) > 0 else np.nan
        for p, a in zip(d["probs"], d["answers"], strict=True)
    ]
    groups = {g: d[d["segment"] == g] for g in (high, low)}
    if any(len(g) < 2 for g in groups.values()):
        sizes = ", ".join(f"{k} {len(v)}" for k, v in groups.items())
        return Target(name, "-", f"fewer than 2 test respondents in a segment ({sizes})", None)
    model = groups[high]["expected"].mean() - groups[low]["expected"].mean()
    human = groups[high]["true_answer"].mean() - groups[low]["true_answer"].mean()
    se = float(np.sqrt(sum(g["true_answer"].var(ddof=1) / len(g) for g in groups.values())))
    ci = (human - 1.96 * se, human + 1.96 * se)
    sizes = f"n = {len(groups[high])} / {len(groups[low])}"
    return Target(
        name, f"{model:.1f}", f"within the humans' {human:.1f} [{ci[0]:.1f}, {ci[1]:.1f}] ({sizes})",
        bool(ci[0] <= model <= ci[1]),
    )  # fmt: skip


def main(argv: list[str] | None = None) -> list[Target]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished default run")
    parser.add_argument("--memory-run", type=Path, default=None)
    parser.add_argument("--pilot", type=Path, default=None, help="pilot_validation.py --out")
    parser.add_argument("--minutes", type=float, default=15.0)
    args = parser.parse_args(argv)
    summary = load_run(args.run)
    status = json.loads((args.run / "status.json").read_text())
    targets = default_targets(summary, status, args.minutes)
    targets.append(segment_gap_target(args.run))
    targets.append(memory_target(load_run(args.memory_run) if args.memory_run else None))
    validation = None
    if args.pilot is not None:
        path = args.pilot / "validation.json"
        if not path.is_file():
            raise SystemExit(f"{args.pilot}: no validation.json (run pilot_validation.py first)")
        validation = json.loads(path.read_text())
    targets.append(pilot_target(validation))
    print(f"Test split of {args.run} (95% bootstrap CIs over test respondents)\n")
    print("| target | figure [95% CI] | reference | verdict |")
    print("| --- | --- | --- | --- |")
    for target in targets:
        print(target.line())
    return targets


if __name__ == "__main__":
    main(sys.argv[1:])
