"""Fidelity of the fine-tuned model on the VALIDATION split: does it learn who answers what?

One fine-tune per call, on ``--train`` training respondents of the default EV-shift config, then
exact answer distributions for ``--measure`` validation respondents (never the test split). For
every question it prints, per readout, the correlation of the point prediction with the true
answer (``pearson``), its RMSE, KL of the answer histogram and the mean negative log-likelihood;
and the same for references fitted on the same training respondents: CatBoost (one default model
per question on the demographics and the intervention) and the training marginal.

Readouts of an exact distribution ``p_t(a)`` (renormalised over valid answers):
``expected`` = E[a] at t = 1; ``calibrated`` = E[a] and KL at the temperature with the lowest
NLL on the epoch-selection respondents; ``greedy`` = the argmax.

    .venv/bin/python benchmarks/fidelity.py --train 100 --set epochs=2 --tag default
    .venv/bin/python benchmarks/fidelity.py --train 200 --set learning_rate=2e-3 --persona compact

Each call appends one JSON line to ``--results`` (default runs/fidelity/results.jsonl), so a
sweep is a loop over calls; ``--table`` prints every stored result as one table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TEMPERATURES = [0.0, 0.5, 0.7, 0.85, 1.0, 1.2, 1.5]
ATTENTION = {"q_proj", "k_proj", "v_proj", "o_proj"}


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.std(x[ok]) == 0 or np.std(y[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(x[ok], y[ok])[0, 1])


def bootstrap_ci(x, y, stat, draws: int = 1000, seed: int = 0, groups=None) -> tuple[float, float]:
    """Percentile CI of ``stat(x, y)`` resampling respondents (``groups``) with replacement."""
    rng = np.random.default_rng(seed)
    groups = np.arange(len(x)) if groups is None else np.asarray(groups)
    ids = np.unique(groups)
    rows = {g: np.nonzero(groups == g)[0] for g in ids}
    values = []
    for _ in range(draws):
        pick = np.concatenate([rows[g] for g in rng.choice(ids, len(ids))])
        values.append(stat(x[pick], y[pick]))
    return tuple(float(v) for v in np.nanpercentile(values, [2.5, 97.5]))


def kl_hist(human: np.ndarray, probs: np.ndarray, answer) -> float:
    """KL(human || model) of the answer histograms, as the core's ``kl`` metric defines it."""
    from surveysim_std.metrics import KL

    from surveysim_core.answers import AnswerDistribution

    return KL()(human, AnswerDistribution(probs, True), answer)


def readouts(probs: np.ndarray, support: np.ndarray) -> dict[str, np.ndarray]:
    mass = probs.sum(1, keepdims=True)
    p = probs / np.where(mass > 0, mass, 1)
    return {"expected": p @ support, "greedy": support[p.argmax(1)], "coverage": mass[:, 0]}


def setup(args):
    from surveysim_core.config import load_config
    from surveysim_core.items import build_items, load_data
    from surveysim_core.plan import plan_run
    from surveysim_core.plugins import get_plugins
    from surveysim_core.protocols import Progress
    from surveysim_core.split import split_by_subject

    source = str(Path(args.config).resolve())
    overrides = [f"survey={args.survey}"]
    if args.persona != "paper":
        overrides.append(f"prompts.persona={args.persona}")
    if args.persona_position != "system":
        overrides.append(f"prompts.persona_position={args.persona_position}")
    if args.memory:
        overrides.append("prompts.memory=true")
    config = load_config(source, overrides)
    plugins = get_plugins()
    plan = plan_run(config, source, plugins)
    datadir = ROOT / "runs" / "fidelity" / f"data-{args.survey}"
    datadir.mkdir(parents=True, exist_ok=True)
    data = load_data(plan, datadir, plugins, Progress(lambda m: print(m, file=sys.stderr)))
    s = config.split
    splits = split_by_subject(
        data.respondents.index,
        {"train": s.train, "val": s.val, "test": s.test},
        s.seed,
        caps={"train": args.train, "val": None, "test": 1},
    )
    val = list(splits["val"])
    select, measure = val[: args.select], val[args.select : args.select + args.measure]
    return (
        plan,
        data,
        build_items(plan, data, splits["train"]),
        build_items(plan, data, select),
        build_items(plan, data, measure),
        datadir,
    )


def catboost_reference(train, measure, history: bool = False) -> np.ndarray:
    """One default CatBoost per question on the demographics and the intervention; with
    ``history`` (``--memory``: the model sees the earlier answers) also on the respondent's
    previous answer, as the baselines' ``history`` option gives it."""
    from catboost import CatBoostRegressor
    from surveysim_sklearn.features import PREVIOUS, previous_answers

    out = np.full(len(measure), np.nan)
    fields = list(train.respondents.columns)
    frames = []
    for items in (train, measure):
        frame = items.features().reset_index(drop=True)
        if history:
            frame[PREVIOUS] = previous_answers(items)
        frames.append(frame)
    for qid in train.items["question"].unique():
        tr = frames[0][frames[0]["question"] == qid]
        mask = (frames[1]["question"] == qid).to_numpy()
        te = frames[1][mask]
        cols = fields + (
            ["intervention"] if "intervention" in tr and tr["intervention"].notna().any() else []
        )
        numeric = [PREVIOUS] if history and tr[PREVIOUS].notna().any() else []
        X, X_test = tr[cols].astype(str), te[cols].astype(str)
        for col in numeric:
            X[col], X_test[col] = tr[col].to_numpy(float), te[col].to_numpy(float)
        model = CatBoostRegressor(verbose=0, random_seed=0, thread_count=2, iterations=300)
        model.fit(X, tr["answer"].to_numpy(float), cat_features=list(range(len(cols))))
        out[mask] = model.predict(X_test)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=100, help="training respondents")
    parser.add_argument(
        "--select", type=int, default=10, help="validation respondents for the epoch"
    )
    parser.add_argument("--measure", type=int, default=60, help="validation respondents measured")
    parser.add_argument("--survey", default="evshift")
    parser.add_argument(
        "--config", default=str(ROOT / "surveys" / "evshift.yaml"),
        help="run configuration whose data, split, segments and backend options are the base"
        " (default surveys/evshift.yaml; surveys/anes96.yaml with --survey anes96)",
    )  # fmt: skip
    parser.add_argument("--persona", default="paper", help="paper (brace list) or compact")
    parser.add_argument(
        "--persona-position", default="system", choices=["system", "question"],
        help="the persona in the system prompt (default) or next to each question",
    )  # fmt: skip
    parser.add_argument(
        "--memory", action="store_true", help="respondent memory (known respondent)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="OPTION=VALUE",
        help="hf backend option, e.g. learning_rate=1e-3 (repeatable)",
    )
    parser.add_argument("--loss", default="cross_entropy")
    parser.add_argument(
        "--loss-set", action="append", default=[], metavar="OPTION=VALUE",
        help="loss option, e.g. beta=1 for numeric_penalty_multitoken (repeatable)",
    )  # fmt: skip
    parser.add_argument("--tag", default="")
    parser.add_argument("--results", default=str(ROOT / "runs" / "fidelity" / "results.jsonl"))
    parser.add_argument("--table", action="store_true", help="print stored results and exit")
    parser.add_argument("--no-reference", action="store_true")
    args = parser.parse_args()  # fmt: skip
    if args.table:
        print_table(Path(args.results))
        return

    import yaml
    from surveysim_hf.backend import HFBackend
    from surveysim_hf.options import HFOptions

    from surveysim_core.items import examples, parse_with

    started = time.perf_counter()
    plan, _data, train, select, measure, _datadir = setup(args)
    base = dict(plan.config.backend.options)
    for item in args.set:
        key, _, raw = item.partition("=")
        base[key] = yaml.safe_load(raw)
    options = HFOptions.model_validate({**base, "progress_bars": False})
    from surveysim_core.plugins import get_plugins

    plugins = get_plugins()
    loss_cls = plugins.losses.get(args.loss, where="--loss")
    loss_options = None
    if args.loss_set:
        from surveysim_core.config import validate_options

        raw = {k: yaml.safe_load(v) for k, _, v in (x.partition("=") for x in args.loss_set)}
        loss_options = validate_options(loss_cls, raw, "--loss-set", "benchmarks/fidelity.py")
    work = Path(args.results).parent / f"work-{time.strftime('%Y%m%d-%H%M%S')}"
    backend = HFBackend(options, work)
    tick = time.perf_counter()
    adapter = backend.fine_tune(
        examples(train), examples(select), loss_cls(loss_options), work / "adapter", False
    )
    train_s = time.perf_counter() - tick
    training = json.loads((adapter / "training.json").read_text())
    model = backend.load(adapter)
    tick = time.perf_counter()
    result = {
        "tag": args.tag, "survey": args.survey, "train": args.train, "persona": args.persona,
        "persona_position": args.persona_position,
        "memory": args.memory,
        "loss": args.loss, "loss_options": dict(
            (k, yaml.safe_load(v)) for k, _, v in (x.partition("=") for x in args.loss_set)
        ), "options": {k: base[k] for k in sorted(base)},
        "train_seconds": round(train_s, 1), "tokens_per_second": training["tokens_per_second"],
        "best_epoch": training["best_epoch"], "val_losses": training["val_losses"],
        "steps": training["steps"], "questions": {},
    }  # fmt: skip
    cat = None if args.no_reference else catboost_reference(train, measure, args.memory)
    for qid, answer in plan.answer_types.items():
        support = np.asarray(answer.support, float)
        rows = {}
        for name, items in (("select", select), ("measure", measure)):
            mask = items.question_mask(qid)
            prompts = [p for p, m in zip(items.prompts, mask, strict=True) if m]
            decoded = plan.decoder.decode(
                model, prompts, answer, parse_with(plan, qid), TEMPERATURES, 8, 0
            )
            rows[name] = (
                mask,
                {t: d.distribution.probs[:, : len(support)] for t, d in decoded.items()},
            )
        # calibrated temperature: lowest NLL on the selection respondents
        smask, sprobs = rows["select"]
        shuman = answer.index_of(select.items.loc[smask, "answer"].to_numpy(float))

        def nll(probs, idx):
            return float(-np.mean(np.log(np.clip(probs[np.arange(len(idx)), idx], 1e-12, None))))

        t_cal = min((t for t in TEMPERATURES if t > 0), key=lambda t: nll(sprobs[t], shuman))
        mmask, mprobs = rows["measure"]
        human = measure.items.loc[mmask, "answer"].to_numpy(float)
        groups = measure.items.loc[mmask, "subject_id"].to_numpy()
        idx = answer.index_of(human)
        q = {"n": int(mmask.sum()), "t_calibrated": t_cal}
        for label, t in (("expected", 1.0), ("calibrated", t_cal)):
            r = readouts(mprobs[t], support)
            point = r["expected"]
            q[label] = {
                "pearson": pearson(point, human),
                "pearson_ci": bootstrap_ci(point, human, pearson, groups=groups),
                "rmse": float(np.sqrt(np.mean((point - human) ** 2))),
                "kl": kl_hist(human, mprobs[t], answer),
                "nll": nll(mprobs[t], idx),
                "coverage": float(np.mean(r["coverage"])),
                "sd_of_prediction": float(np.std(point)),
            }
        g = readouts(mprobs[0.0], support)["greedy"]
        q["greedy"] = {"pearson": pearson(g, human), "rmse": float(np.sqrt(np.mean((g - human) ** 2))),
                       "share_mode": float(np.mean(g == np.bincount(g.astype(int)).argmax()))}  # fmt: skip
        tr = train.items.loc[train.question_mask(qid), "answer"].to_numpy(float)
        q["marginal_rmse"] = float(np.sqrt(np.mean((tr.mean() - human) ** 2)))
        if cat is not None:
            c = cat[mmask]
            q["catboost"] = {"pearson": pearson(c, human), "pearson_ci": bootstrap_ci(c, human, pearson, groups=groups),
                             "rmse": float(np.sqrt(np.mean((c - human) ** 2)))}  # fmt: skip
        result["questions"][qid] = q
    result["decode_seconds"] = round(time.perf_counter() - tick, 1)
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    out = Path(args.results)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(result) + "\n")
    print(json.dumps(result, indent=1))


def recorded(row: dict, option: str) -> Any:
    """A result's hf backend option; a row from before the option was recorded ran with
    HFOptions' default (e.g. ``seed`` 0)."""
    from surveysim_hf.options import HFOptions  # pydantic only: --table loads no torch

    if option in row["options"]:
        return row["options"][option]
    return HFOptions.model_fields[option].get_default(call_default_factory=True)


def setting(row: dict) -> str:
    """What a result measured, but for the LoRA seed: rows that share it are seed replicates."""
    options = {k: v for k, v in row["options"].items() if k != "seed"}
    fields = [row.get("survey", "evshift"), row["train"], row["persona"], row["memory"]]
    fields.append(row.get("persona_position", "system"))
    loss = [row.get("loss", "cross_entropy"), row.get("loss_options", {})]
    return json.dumps([*fields, *loss, options], sort_keys=True)


def seed_spread(rows: list[dict]) -> list[str]:
    """One line per setting measured with more than one seed: each question's pearson of E[a]
    per seed, and their range. A single run's figure is one draw of this spread."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(setting(r), []).append(r)
    lines = []
    for group in groups.values():
        seeds = {recorded(r, "seed") for r in group}
        if len(seeds) < 2:
            continue
        tags = ", ".join(f"{r['tag'] or '-'} (seed {recorded(r, 'seed')})" for r in group)
        lines.append(f"seed replicates: {tags}")
        for qid in group[0]["questions"]:
            values = [r["questions"][qid]["expected"]["pearson"] for r in group]
            shown = " ".join(f"{v:+.2f}" for v in values)
            lines.append(
                f"   {qid[:12]:<12} pearson E[a] {shown}: range {max(values) - min(values):.2f}"
                f" (mean {np.mean(values):+.2f}, min {min(values):+.2f}, max {max(values):+.2f})"
            )
        minutes = [r["train_seconds"] / 60 for r in group if "train_seconds" in r]
        if minutes:
            lines.append(f"   fine-tuning {min(minutes):.1f}-{max(minutes):.1f} min a seed")
    return lines


#: options that are levers measured against the default: shown where a row set them
LEVERS = ("init_lora_weights", "use_rslora", "use_dora", "loraplus_lr_ratio", "lr_scheduler",
          "warmup_steps", "batch_size")  # fmt: skip


def levers(row: dict) -> str:
    """The levers a result set away from HFOptions' defaults, and the persona's position."""
    from surveysim_hf.options import HFOptions

    fields = HFOptions.model_fields
    shown = [
        f"{name}={row['options'][name]}"
        for name in LEVERS
        if name in row["options"]
        and row["options"][name] != fields[name].get_default(call_default_factory=True)
    ]
    if row.get("persona_position", "system") != "system":
        shown.append(f"persona_position={row['persona_position']}")
    return " ".join(shown) + " " if shown else ""


def print_table(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for r in rows:
        opts = r["options"]
        modules = "attn" if set(recorded(r, "target_modules")) <= ATTENTION else "attn+mlp"
        head = (
            f"{r['tag'] or '-':<18} {r.get('survey', 'evshift')} train={r['train']:<4} "
            f"lr={opts.get('learning_rate')} ep={opts.get('epochs')} r={opts.get('lora_r')} "
            f"{modules} seed={recorded(r, 'seed')} persona={r['persona']} {levers(r)}"
            f"best={r['best_epoch']} {r['train_seconds']:.0f}s {r['tokens_per_second']:.0f}tok/s"
        )
        print(head)
        for qid, q in r["questions"].items():
            e, c = q["expected"], q["calibrated"]
            cat = q.get("catboost", {})
            print(
                f"   {qid[:12]:<12} pearson E[a] {e['pearson']:+.2f} "
                f"[{e['pearson_ci'][0]:+.2f},{e['pearson_ci'][1]:+.2f}] rmse {e['rmse']:.1f} "
                f"kl(t=1) {e['kl']:.3f} | t_cal {q['t_calibrated']} kl {c['kl']:.3f} "
                f"| marg rmse {q['marginal_rmse']:.1f} | cat r {cat.get('pearson', float('nan')):+.2f} "
                f"rmse {cat.get('rmse', float('nan')):.1f}"
            )
    for line in seed_spread(rows):
        print(line)


if __name__ == "__main__":
    main()
