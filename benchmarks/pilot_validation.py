"""Validate ``surveysim pilot`` on the synthetic EV-shift truth (issue 15, item 5).

1. Generate the seeded synthetic EV-shift population and its ``truth.json``.
2. Leave 5 statements out (at least one cost, one environmental and one charging statement):
   every answer to them is removed from the training file, so the system never sees them.
3. Fine-tune the hf backend on the rest (``surveysim run``), or reuse a finished run (--run).
4. Pilot all 35 statements on >= 500 personas drawn from the survey's respondents.
5. Report the Spearman correlation between predicted and true population mean shift over all
   35 statements and over the 5 unseen; whether each group's segment interaction (cost x income,
   environmental x political, charging x living area) is recovered in sign and order against
   ``realised_mean_shift_by_group_segment``; and the same for CatBoost, which cannot read a
   statement's text: for an unseen statement it falls back to a text-free model (demographics
   only), so it predicts the same shift for every unseen statement.

The truth for the population mean shift is ``expected_mean_shift_by_intervention_population``:
the structural shift averaged over all generated subjects as if each had seen the statement,
which is what a pilot on the whole population estimates. In the data each post answer follows
earlier statements, and a system without respondent memory learns answers averaged over those
positions, so its shifts may carry a common offset; rank correlations are blind to it.

    python benchmarks/pilot_validation.py                 # full size (GPU; the lead runs it)
    python benchmarks/pilot_validation.py --quick         # tiny random model, minutes on a CPU
    python benchmarks/pilot_validation.py --run runs/X    # reuse a run trained without --holdout
    python benchmarks/pilot_validation.py --run runs/evshift --holdout none --personas 200
        # the default run, which saw every statement: the fidelity issue's per-intervention figure
    python benchmarks/pilot_validation.py --config surveys/evshift.yaml   # CPU-sized training

Writes ``validation.json`` and ``validation.md`` into --out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

DEFAULT_HOLDOUT = ["11", "21", "3", "25", "32"]  # cost, environmental, charging, two others
GROUP_SEGMENTS = {
    # group -> (truth key, segment field, options in their natural order, contrast pair)
    "cost": ("cost_by_income", "income",
             ["less than $10,000", "$10,001 to $40,000", "$40,001 to $80,000",
              "$80,001 to $160,000", "More than $160,000"],
             ("less than $10,000", "More than $160,000")),
    "environmental": ("environmental_by_political", "political",
                      ["Strongly liberal", "Somewhat liberal", "Somewhat conservative",
                       "Strongly conservative"],
                      ("Strongly liberal", "Strongly conservative")),
    "charging": ("charging_by_living_area", "living_area", ["Urban", "Rural"],
                 ("Rural", "Urban")),
}  # fmt: skip
DEMOGRAPHICS = [
    "living_state", "living_area", "age", "gender", "race", "highest_education",
    "marital_status", "number_of_children", "household", "employment_status", "income",
    "political", "religion", "religious_participation",
]  # fmt: skip


# -- statistics ------------------------------------------------------------------------------------
def spearman(a: pd.Series, b: pd.Series) -> float | None:
    """Spearman's rho (Pearson correlation of average ranks); None if either side is constant."""
    frame = pd.DataFrame({"a": a, "b": b}).dropna()
    if len(frame) < 2:
        return None
    ra, rb = frame["a"].rank(), frame["b"].rank()
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def spearman_p(a: pd.Series, b: pd.Series, resamples: int = 9999) -> float | None:
    """One-sided permutation p-value of Spearman's rho: the chance that a random pairing of the
    two sides correlates at least as well. Exact (every pairing) up to 8 points, where the
    5 unseen statements' rho is coarse (5 points: rho 0.9 has p = 0.042, 1.0 has 0.008); else
    ``resamples`` seeded random pairings. None where rho is undefined."""
    from scipy.stats import permutation_test

    frame = pd.DataFrame({"a": a, "b": b}).dropna()
    if spearman(frame["a"], frame["b"]) is None:
        return None
    ranks_b = frame["b"].rank().to_numpy()

    def rho(x: np.ndarray) -> float:
        return float(np.corrcoef(pd.Series(x).rank().to_numpy(), ranks_b)[0, 1])

    result = permutation_test(
        (frame["a"].to_numpy(),), rho, permutation_type="pairings", alternative="greater",
        n_resamples=np.inf if len(frame) <= 8 else resamples, random_state=0,
    )  # fmt: skip
    return float(result.pvalue)


def check_holdout(holdout: list[str], groups: dict[str, list[int]]) -> None:
    if not holdout:
        return  # --holdout none: every statement seen, for a run trained on all of them
    if len(holdout) != 5 or len(set(holdout)) != 5:
        raise SystemExit(f"--holdout: give 5 different statement ids, got {holdout}")
    for group in ("cost", "environmental", "charging"):
        if not any(int(s) in groups[group] for s in holdout):
            raise SystemExit(f"--holdout: needs at least one {group} statement ({groups[group]})")


def shift_figures(
    predicted: pd.Series, truth: dict[str, Any], holdout: list[str]
) -> dict[str, Any]:
    """Spearman of predicted vs true population mean shift, over all and over the unseen."""
    true = pd.Series(truth["expected_mean_shift_by_intervention_population"], dtype=float)
    predicted = predicted.reindex(true.index)
    return {
        "spearman_all": spearman(predicted, true),
        "spearman_unseen": spearman(predicted[holdout], true[holdout]),
        "p_all": spearman_p(predicted, true),
        "p_unseen": spearman_p(predicted[holdout], true[holdout]),
        "n_all": int(predicted.notna().sum()),
        "n_unseen": len(holdout),
        "predicted": {k: (None if pd.isna(v) else float(v)) for k, v in predicted.items()},
    }


def interaction_figures(by_segment: pd.DataFrame, truth: dict[str, Any]) -> dict[str, Any]:
    """Per group: predicted mean shift of its statements by segment option against the truth.

    ``by_segment`` has columns statement, segment, value, mean_shift. Sign: the contrast pair
    (e.g. lowest minus highest income) has the truth's sign. Order: Spearman over the ordered
    options, and whether the order is identical.
    """
    groups = truth["intervention_groups"]
    out = {}
    for group, (key, field, options, (hi, lo)) in GROUP_SEGMENTS.items():
        ids = [str(s) for s in groups[group]]
        rows = by_segment[(by_segment["segment"] == field) & by_segment["statement"].isin(ids)]
        # rounded: equal predictions averaged over different personas differ by float noise,
        # which must not count as a recovered sign or order
        pred = rows.groupby("value")["mean_shift"].mean().reindex(options).round(9)
        true = pd.Series(truth["realised_mean_shift_by_group_segment"][key], dtype=float)
        true = true.reindex(options)
        pred_contrast = float(pred[hi] - pred[lo])
        true_contrast = float(true[hi] - true[lo])
        rho = spearman(pred, true)
        both = pd.DataFrame({"p": pred, "t": true}).dropna()
        same_order = bool(
            len(both) >= 2
            and list(both["p"].rank(method="first")) == list(both["t"].rank(method="first"))
        )
        sign_ok = bool(np.sign(pred_contrast) == np.sign(true_contrast) and true_contrast != 0)
        out[f"{group} x {field}"] = {
            "predicted": {k: (None if pd.isna(v) else float(v)) for k, v in pred.items()},
            "truth": {k: (None if pd.isna(v) else float(v)) for k, v in true.items()},
            "contrast": f"{hi} - {lo}",
            "predicted_contrast": pred_contrast,
            "true_contrast": true_contrast,
            "sign_recovered": sign_ok,
            "spearman": rho,
            "order_recovered": same_order,
        }
    return out


# -- CatBoost beside it ------------------------------------------------------------------------------
def _shift_rows(responses: pd.DataFrame) -> pd.DataFrame:
    """Post-intervention answers with the answer before each (same subject, previous seq)."""
    r = responses.assign(
        seq=pd.to_numeric(responses["seq"]), answer=pd.to_numeric(responses["answer"])
    ).sort_values(["subject_id", "seq"])
    r["previous"] = r.groupby("subject_id")["answer"].shift(1)
    post = r[r["question"] == "post_intervention_preference"].dropna(subset=["previous"])
    post = post.assign(shift=post["answer"] - post["previous"])
    return post


def catboost_shifts(
    train_responses: pd.DataFrame,
    personas: pd.DataFrame,
    weights: np.ndarray,
    statements: list[str],
    seen: set[str],
    iterations: int,
    seed: int,
) -> pd.DataFrame:
    """CatBoost's predicted shift per statement and segment value (as pilot's shifts.csv rows).

    Seen statements: a regressor on demographics + statement id. Unseen: the text-free
    fallback, a regressor on demographics alone (the average shift of any statement).
    """
    from catboost import CatBoostRegressor

    rows = _shift_rows(train_responses)
    features = [f for f in DEMOGRAPHICS if f in personas.columns]

    def frame(table: pd.DataFrame) -> pd.DataFrame:
        return table[features].astype(str)

    with_id = CatBoostRegressor(
        iterations=iterations, random_seed=seed, verbose=False, allow_writing_files=False
    )
    x = frame(rows).assign(intervention=rows["intervention"].to_numpy())
    with_id.fit(x, rows["shift"].to_numpy(float), cat_features=[*features, "intervention"])
    text_free = CatBoostRegressor(
        iterations=iterations, random_seed=seed, verbose=False, allow_writing_files=False
    )
    text_free.fit(frame(rows), rows["shift"].to_numpy(float), cat_features=features)
    fallback = text_free.predict(frame(personas))
    w = np.asarray(weights, float) / np.sum(weights)
    out = []
    for s in statements:
        # an unseen statement's id means nothing to CatBoost: the text-free fallback answers
        pred = with_id.predict(frame(personas).assign(intervention=s)) if s in seen else fallback
        out.append(
            {"statement": s, "segment": "all", "value": "all", "mean_shift": float(w @ pred)}
        )
        for _group, (_key, field, options, _pair) in GROUP_SEGMENTS.items():
            col = personas[field].astype(str).to_numpy()
            for option in options:
                m = col == option
                if m.any():
                    out.append({"statement": s, "segment": field, "value": option,
                                "mean_shift": float(w[m] @ pred[m] / w[m].sum())})  # fmt: skip
    return pd.DataFrame(out)


def human_shifts(responses: pd.DataFrame, subjects: set[str]) -> pd.DataFrame:
    """The observed shift per statement among ``subjects`` (a human test sample), as rows of
    pilot's shifts.csv (segment "all")."""
    rows = _shift_rows(responses[responses["subject_id"].astype(str).isin(subjects)])
    means = rows.groupby(rows["intervention"].astype(str))["shift"].mean()
    return pd.DataFrame(
        {"statement": means.index, "segment": "all", "value": "all", "mean_shift": means.values}
    )


def run_subjects(run_dir: Path, split: str) -> set[str] | None:
    """The subjects of ``split`` in a finished run (its splits.csv), or None."""
    path = run_dir / "splits.csv"
    if not path.exists():
        return None
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    return set(table.loc[table["split"] == split, "subject_id"])


# -- the steps ---------------------------------------------------------------------------------------
def run_config(
    survey: str,
    train_csv: Path,
    out: Path,
    quick: bool,
    model: str | None,
    base: Path | None = None,
):
    """The run configuration that fine-tunes on the training file (held-out statements removed).

    ``base``: a run configuration (e.g. ``surveys/evshift.yaml``, sized for a CPU) whose
    backend options, loss, prompts and split caps are used; otherwise the backend's defaults on
    the whole training split (GPU scale)."""
    from surveysim_core.config import RunConfig, load_config

    options: dict[str, Any] = {"progress_bars": False}
    split: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    if base is not None:
        cfg = load_config(str(base), [])
        assert cfg.backend is not None, f"{base}: no backend"
        options = {**cfg.backend.options, **options}
        split = cfg.split.model_dump(mode="json")
        extra = {"prompts": cfg.prompts.model_dump(mode="json"),
                 "loss": cfg.backend.loss.model_dump(mode="json")}  # fmt: skip
    if quick:
        options |= {"model": model or str(out / "tiny-model"), "max_steps": 2}
        split = {"max_train_subjects": 40, "max_val_subjects": 10, "max_test_subjects": 10}
    elif model:
        options["model"] = model
    return RunConfig.model_validate(
        {
            "survey": survey,
            "data": {"source": "file", "path": str(train_csv)},
            "split": split,
            "backend": {
                "name": "hf",
                "systems": ["fine_tuned"],
                "options": options,
                **({"loss": extra["loss"]} if "loss" in extra else {}),
            },
            **({"prompts": extra["prompts"]} if "prompts" in extra else {}),
            "decoding": {"decoder": "exact", "temperatures": [1.0]},
            "output": {"dir": str(out / "runs")},
        }
    )


def train_run(
    survey: str,
    train_csv: Path,
    out: Path,
    quick: bool,
    model: str | None,
    plugins: Any,
    base: Path | None = None,
) -> Path:
    """Fine-tune with ``surveysim run``; a finished run in ``out/run`` is reused, an interrupted
    one resumed (from its training checkpoint and the result cache)."""
    from surveysim_core.run import execute

    run_dir = out / "run"
    status = run_dir / "status.json"
    if status.exists() and json.loads(status.read_text()).get("finished"):
        print(f"reusing the finished run {run_dir}", file=sys.stderr)
        return run_dir
    resume = run_dir.exists()
    if resume:
        print(f"resuming the unfinished run {run_dir}", file=sys.stderr)
    if quick and model is None:
        from surveysim_hf.testing import write_tiny_model

        write_tiny_model(out / "tiny-model")
    config = run_config(survey, train_csv, out, quick, model, base)
    execute(config, "pilot_validation", plugins, resume=resume, run_dir=str(run_dir))
    return run_dir


def pilot_all(
    survey: str,
    responses_csv: Path,
    run_dir: Path,
    truth: dict[str, Any],
    out: Path,
    personas: int,
    seed: int,
    bootstrap: int,
    plugins: Any,
) -> Path:
    from surveysim_pilot.config import PilotConfig
    from surveysim_pilot.pilot import pilot

    if (out / "pilot" / "shifts.csv").exists():
        print(f"reusing the finished pilot {out / 'pilot'}", file=sys.stderr)
        return out / "pilot"
    groups = {g: [str(s) for s in ids] for g, ids in truth["intervention_groups"].items()}
    config = PilotConfig.model_validate(
        {
            "survey": survey,
            "data": {"source": "file", "path": str(responses_csv)},
            "system": {"run": str(run_dir), "name": "fine_tuned"},
            "population": {"source": "respondents", "n": personas, "seed": seed},
            "pre_question": "initial_preference",
            "statements": {
                "question": "post_intervention_preference",
                "survey": "all",
                "survey_groups": groups,
            },
            "segments": ["income", "political", "living_area"],
            "bootstrap": bootstrap,
            "seed": seed,
            "output": str(out / "pilot"),
        }
    )
    return pilot(config, "pilot_validation", plugins)


def evaluate(shifts: pd.DataFrame, truth: dict[str, Any], holdout: list[str]) -> dict[str, Any]:
    shifts = shifts.assign(statement=shifts["statement"].astype(str))
    overall = shifts[shifts["segment"] == "all"].set_index("statement")["mean_shift"]
    return {
        "shift": shift_figures(overall, truth, holdout),
        "interactions": interaction_figures(shifts, truth),
    }


def markdown(result: dict[str, Any]) -> str:
    def fmt(v: Any) -> str:
        return "undefined (constant)" if v is None else f"{v:.3f}"

    def with_p(rho: Any, p: Any) -> str:
        if rho is None or p is None:
            return fmt(rho)
        return f"{rho:.3f} (p {'< 0.001' if p < 0.001 else f'= {p:.3f}'})"

    lines = [
        f"Held out: {', '.join(result['holdout']) or 'none'}; personas: {result['personas']};"
        f" survey {result['survey']}; quick: {result['quick']}",
        "",
        "| system | Spearman, all 35 | Spearman, 5 unseen |",
        "| --- | --- | --- |",
    ]
    note = (
        "p: one-sided permutation p-value (the chance that a random pairing of statements with"
        " true shifts correlates as well)"
    )
    for name in ("pilot", "catboost", "human_test_sample"):
        if name in result:
            s = result[name]["shift"]
            lines.append(
                f"| {name} | {with_p(s['spearman_all'], s.get('p_all'))} |"
                f" {with_p(s['spearman_unseen'], s.get('p_unseen'))} |"
            )
    lines += ["", note, "", "| system | interaction | contrast (pred / truth) | sign | order (rho) |",
              "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for name in ("pilot", "catboost"):
        if name not in result:
            continue
        for key, v in result[name]["interactions"].items():
            lines.append(
                f"| {name} | {key} | {v['contrast']}: {v['predicted_contrast']:.2f} /"
                f" {v['true_contrast']:.2f} | {'yes' if v['sign_recovered'] else 'no'} |"
                f" {'yes' if v['order_recovered'] else 'no'} ({fmt(v['spearman'])}) |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None, plugins: Any = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/pilot-validation"))
    parser.add_argument("--survey", default="evshift")
    parser.add_argument(
        "--holdout", default=",".join(DEFAULT_HOLDOUT),
        help="5 statement ids left out of training, or 'none' (with --run: a run trained on all)",
    )  # fmt: skip
    parser.add_argument("--subjects", type=int, default=None, help="Synthetic population size.")
    parser.add_argument("--personas", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--catboost-iterations", type=int, default=1000)
    parser.add_argument("--model", default=None, help="Base model for hf (default: the backend's).")
    parser.add_argument("--run", type=Path, default=None, help="Reuse this finished run.")
    parser.add_argument("--no-catboost", action="store_true")
    parser.add_argument("--quick", action="store_true", help="Tiny random model, small sizes.")
    parser.add_argument(
        "--config", type=Path, default=None,
        help="Train with this run config's backend options, prompts and split caps"
        " (e.g. surveys/evshift.yaml, sized for a CPU); default: the backend's defaults, GPU scale.",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.quick:
        args.subjects = args.subjects or 200
        args.personas = min(args.personas, 20)
        args.bootstrap = min(args.bootstrap, 20)
        args.catboost_iterations = min(args.catboost_iterations, 20)
    if args.personas < 500 and not args.quick:
        # allowed, for a CPU that cannot answer 36 items for 500 personas in its budget; the
        # figures then say how many personas they rest on
        print(
            f"warning: --personas {args.personas}: the validation asks for >= 500 personas",
            file=sys.stderr,
        )

    from surveysim_evshift.synth import write_population

    from surveysim_core.plugins import get_plugins

    plugins = plugins or get_plugins()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    responses_csv = data / "responses.csv"
    if not responses_csv.exists():
        write_population(data, n_subjects=args.subjects or 4045, seed=args.seed)
    truth = json.loads((data / "truth.json").read_text())
    holdout = [] if args.holdout == "none" else [s.strip() for s in args.holdout.split(",")]
    check_holdout(holdout, truth["intervention_groups"])
    # as text: "None" is a religion, not a missing value
    responses = pd.read_csv(responses_csv, dtype=str, keep_default_na=False)
    train = responses[~responses["intervention"].isin(holdout)]
    train_csv = data / "train_responses.csv"
    train.to_csv(train_csv, index=False)
    if args.survey == "evshift-0to9":
        raise SystemExit("--survey evshift-0to9: truth.json is on the 0-100 scale; use evshift")

    run_dir = args.run or train_run(
        args.survey, train_csv, out, args.quick, args.model, plugins, args.config
    )
    pilot_dir = pilot_all(
        args.survey, responses_csv, run_dir, truth, out, args.personas, args.seed,
        args.bootstrap, plugins,
    )  # fmt: skip
    shifts = pd.read_csv(pilot_dir / "shifts.csv", keep_default_na=False)
    result: dict[str, Any] = {
        "survey": args.survey, "holdout": holdout, "personas": args.personas,
        "quick": args.quick, "run": str(run_dir), "pilot": evaluate(shifts, truth, holdout),
    }  # fmt: skip
    trained_on = run_subjects(run_dir, "train")
    if trained_on is not None:
        result["train_subjects"] = len(trained_on)
    tested = run_subjects(run_dir, "test")
    if tested:
        # the run's held-out test respondents, who saw every statement (held-out ones too)
        result["human_test_sample"] = {
            "subjects": len(tested),
            "shift": shift_figures(
                human_shifts(responses, tested).set_index("statement")["mean_shift"],
                truth, holdout,
            ),
        }  # fmt: skip
    if not args.no_catboost:
        personas = pd.read_csv(pilot_dir / "personas.csv", keep_default_na=False)
        seen = {str(j) for j in range(1, 36)} - set(holdout)
        # on the respondents the language model was trained on, so that the two are comparable
        cb_train = (
            train if trained_on is None else train[train["subject_id"].astype(str).isin(trained_on)]
        )
        cb = catboost_shifts(
            cb_train, personas, personas["weight"].to_numpy(float), [str(j) for j in range(1, 36)],
            seen, args.catboost_iterations, args.seed,
        )  # fmt: skip
        result["catboost"] = evaluate(cb, truth, holdout)
    (out / "validation.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "validation.md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
