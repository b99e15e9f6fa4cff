"""benchmarks/fidelity_targets.py: verdicts on hand-built run outputs."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
INITIAL, POST = "initial_preference", "post_intervention_preference"


@pytest.fixture(scope="module")
def ft():
    spec = importlib.util.spec_from_file_location(
        "fidelity_targets", REPO / "benchmarks" / "fidelity_targets.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


def row(system, question, metric, value, readout="answer", t=None, setting="s", chosen=None,
        ci=(None, None)):  # fmt: skip
    return {"system": system, "question": question, "metric": metric, "value": value,
            "readout": readout, "temperature": t, "setting": setting, "chosen_on": chosen,
            "ci_low": ci[0], "ci_high": ci[1]}  # fmt: skip


def write_run(path: Path, pearson, ci_low, post_kl, total_s, memory_rmse=30.0, spread=8.0) -> Path:
    results = [
        row("fine_tuned", INITIAL, "pearson", pearson, "expected", 1.0, ci=(ci_low, 0.9)),
        row("fine_tuned", POST, "pearson", 0.4, "expected", 1.0, ci=(0.1, 0.6)),
        row("fine_tuned", INITIAL, "rmse", 20.0, "expected", 1.0),
        row("fine_tuned", POST, "rmse", memory_rmse, "expected", 1.0),
        row("fine_tuned", INITIAL, "spread", spread, "expected", 1.0),
        row("fine_tuned", POST, "spread", spread, "expected", 1.0),
        row("fine_tuned", INITIAL, "kl", 0.10, "calibrated", 0.85),
        row("fine_tuned", POST, "kl", post_kl, "calibrated", 0.85),
        # the marginal's sampled answers and its mean (``expected``): RMSE against the mean
        row("marginal", INITIAL, "rmse", 35.0), row("marginal", POST, "rmse", 33.0),
        row("marginal", INITIAL, "rmse", 27.0, "expected"),
        row("marginal", POST, "rmse", 31.0, "expected"),
        row("marginal", INITIAL, "kl", 0.15), row("marginal", POST, "kl", 0.05),
        row("floor:humans", INITIAL, "spread", 25.0, ""),
        row("floor:humans", POST, "spread", 24.0, ""),
        # two CatBoost settings: the one chosen on validation is the reference, not the lower
        row("catboost", POST, "rmse", 15.0, setting="oracle"),
        row("catboost", POST, "rmse", 20.0, setting="chosen", chosen="validation"),
    ]  # fmt: skip
    path.mkdir()
    (path / "summary.json").write_text(json.dumps({"run_dir": str(path), "results": results}))
    status = {"timings_s": {"total": total_s}, "throughput": {"adapter: training tokens/s": 500}}
    (path / "status.json").write_text(json.dumps(status))
    return path


def verdicts(targets):
    return [t.met for t in targets]


def test_each_target_met_and_missed(ft, tmp_path, capsys):
    good = write_run(tmp_path / "good", 0.5, 0.1, 0.06, 800)
    memory = write_run(tmp_path / "memory", 0.5, 0.1, 0.06, 800, memory_rmse=10.0)
    pilot = tmp_path / "pilot"
    pilot.mkdir()
    shift = {"spearman_all": 0.7, "n_all": 35}
    (pilot / "validation.json").write_text(json.dumps({
        "personas": 200, "holdout": [], "pilot": {"shift": shift},
        "catboost": {"shift": {"spearman_all": 0.5}}}))  # fmt: skip
    targets = ft.main(["--run", str(good), "--memory-run", str(memory), "--pilot", str(pilot)])
    assert verdicts(targets) == [True] * 9 + [None, True, True]  # no distributions here
    printed = capsys.readouterr().out
    assert "below the marginal's `expected` 31.0" in printed and "(humans 24.0)" in printed
    assert "0.70 over 35 statements, 200 personas" in printed and "CatBoost 0.50" in printed
    assert "chosen, chosen on validation" in printed  # the validation-chosen CatBoost
    assert "demographics and intervention only" in printed  # the method's CatBoost

    # a CatBoost given the previous answer (baselines' history option) is named as such
    (memory / "config.yaml").write_text(
        "baselines:\n- name: catboost\n  options:\n    history: true\n"
    )
    ft.main(["--run", str(good), "--memory-run", str(memory)])
    assert "with the previous answer as a feature" in capsys.readouterr().out

    # pearson 0.5 with a CI reaching 0; post RMSE 32 is below the marginal's sampled answers
    # (33) but not its mean (31); everyone within 1 point; post KL 0.08 > 0.05 + 0.02;
    # 16 minutes; memory RMSE 32 is above the chosen CatBoost's 20
    bad = write_run(tmp_path / "bad", 0.5, -0.01, 0.08, 960, memory_rmse=32.0, spread=1.0)
    targets = ft.main(["--run", str(bad), "--memory-run", str(bad)])
    assert verdicts(targets) == [
        False, True, True, False, False, False, True, False, False, None, False, None
    ]  # fmt: skip


def test_a_folder_that_is_no_run_is_named(ft, tmp_path):
    with pytest.raises(SystemExit, match=r"no summary\.json"):
        ft.main(["--run", str(tmp_path)])


def test_a_run_without_the_reference_baselines_prints_them_as_not_measured(ft, tmp_path, capsys):
    """A run that fitted no marginal or CatBoost baseline (the pilot validation's training run)
    still gets its own figures; the targets that compare with a baseline say what is missing."""
    run = write_run(tmp_path / "run", 0.72, 0.54, 0.12, 1500)
    summary = json.loads((run / "summary.json").read_text())
    summary["results"] = [r for r in summary["results"] if r["system"] == "fine_tuned"]
    (run / "summary.json").write_text(json.dumps(summary))
    targets = ft.main(["--run", str(run), "--memory-run", str(run)])
    assert verdicts(targets) == [
        True, True, None, None, True, True, None, None, False, None, None, None
    ]  # fmt: skip
    printed = capsys.readouterr().out
    assert "0.72 [0.54, 0.90]" in printed and "the run has none" in printed
    assert "no catboost baseline" in printed
    # the fine-tuned model's own rows are still required
    summary["results"] = [r for r in summary["results"] if r["metric"] != "pearson"]
    (run / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(SystemExit, match="expected one fine_tuned pearson row"):
        ft.main(["--run", str(run)])


def test_the_segment_gap_against_the_humans_ci_worked_by_hand(ft, tmp_path):
    import pandas as pd

    run = tmp_path / "run"
    (run / "systems" / "fine_tuned").mkdir(parents=True)
    (run / "data").mkdir()
    # liberals answer 80 and 90, conservatives 40 and 50: a difference of 40, se
    # sqrt(50/2 + 50/2) = sqrt(50), CI 40 +- 1.96 * 7.07 = [26.1, 53.9]
    people = pd.DataFrame(
        {
            "subject_id": ["a", "b", "c", "d"],
            "political": ["Strongly liberal"] * 2 + ["Strongly conservative"] * 2,
        }
    )
    people.to_csv(run / "data" / "responses.csv", index=False)

    def write(expected):  # one answer with all the mass: E[a] is that answer
        rows = [
            {
                "temperature": 1.0,
                "subject_id": s,
                "question": INITIAL,
                "true_answer": y,
                "answers": [0.0, 100.0],
                "probs": [1 - e / 100, e / 100],
            }
            for s, y, e in zip("abcd", (80, 90, 40, 50), expected, strict=True)
        ]
        pd.DataFrame(rows).to_parquet(run / "systems" / "fine_tuned" / "distributions.parquet")

    write([70, 70, 40, 40])  # a gap of 30: inside [26.1, 53.9]
    target = ft.segment_gap_target(run)
    assert target.met is True and target.figure == "30.0"
    assert "40.0 [26.1, 53.9]" in target.reference and "n = 2 / 2" in target.reference
    write([61, 61, 60.9, 60.9])  # the marginal sampler: everyone alike
    assert ft.segment_gap_target(run).met is False
