"""End to end: a survey added by an out-of-tree plugin, run with baselines into tmp_path; resume;
the real EV-shift configuration through the CLI; ``surveysim data synth``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from surveysim_core import hookimpl
from surveysim_core.config import RunConfig
from surveysim_core.errors import ConfigError, DataError
from surveysim_core.protocols import Progress
from surveysim_core.run import execute

REPO = Path(__file__).resolve().parents[1]
TIDY = ["system", "setting", "readout", "question", "temperature", "segment", "metric", "value"]
QUIET = Progress(lambda message: None)


def satisfaction_config(tmp_path: Path, **changes) -> RunConfig:
    data = {
        "survey": "satisfaction",
        "data": {"subjects": 60, "seed": 1},
        "baselines": [{"name": "random"}, {"name": "marginal"}],
        "evaluation": {"bootstrap": 20},
        "output": {"dir": str(tmp_path / "runs")},
        **changes,
    }
    return RunConfig.model_validate(data)


class ReportPlugin:
    """Writes an extra file into every finished run, as a figure-drawing plugin would."""

    def __init__(self):
        self.runs = []

    @hookimpl
    def surveysim_write_report(self, run):
        self.runs.append(run)
        (run.dir / "extra.txt").write_text(f"{len(run.metrics)} rows\n", encoding="utf-8")


@pytest.fixture
def finished_run(tmp_path, satisfaction_plugins):
    reporter = ReportPlugin()
    satisfaction_plugins.register(reporter, "report-plugin")
    run_dir = tmp_path / "run"
    config = satisfaction_config(tmp_path)
    run = execute(
        config, "satisfaction.yaml", satisfaction_plugins, run_dir=str(run_dir), progress=QUIET
    )
    yield run, run_dir, config, reporter
    satisfaction_plugins.unregister("report-plugin")


def test_run_directory_files(finished_run):
    run, run_dir, config, reporter = finished_run
    for name in ["config.yaml", "splits.csv", "metrics.csv", "report.html", "summary.txt"]:
        assert (run_dir / name).is_file(), name
    assert (run_dir / "data" / "responses.csv").is_file()  # the survey's own synthesizer ran
    saved = RunConfig.model_validate(yaml.safe_load((run_dir / "config.yaml").read_text()))
    assert saved == config
    # the report hook saw the finished run
    assert [r.dir for r in reporter.runs] == [run_dir]
    assert (run_dir / "extra.txt").read_text() == f"{len(run.metrics)} rows\n"
    assert "surveysim run: satisfaction" in (run_dir / "report.html").read_text()
    summary = (run_dir / "summary.txt").read_text()
    assert "satisfaction" in summary and "floor:uniform" in summary and "marginal" in summary


def test_splits_are_disjoint_and_complete(finished_run):
    _, run_dir, _, _ = finished_run
    splits = pd.read_csv(run_dir / "splits.csv", dtype=str)
    responses = pd.read_csv(run_dir / "data" / "responses.csv", dtype=str)
    assert splits["subject_id"].is_unique
    assert set(splits["subject_id"]) == set(responses["subject_id"])
    assert splits["split"].value_counts().to_dict() == {"train": 48, "val": 6, "test": 6}


def test_predictions_cover_every_test_item_once_per_system(finished_run):
    _, run_dir, _, _ = finished_run
    splits = pd.read_csv(run_dir / "splits.csv", dtype=str)
    responses = pd.read_csv(run_dir / "data" / "responses.csv", dtype={"subject_id": str})
    test_ids = set(splits.loc[splits["split"] == "test", "subject_id"])
    train_ids = set(splits.loc[splits["split"] == "train", "subject_id"])
    expected = responses[responses["subject_id"].isin(test_ids)]
    systems = sorted(p.name for p in (run_dir / "systems").iterdir())
    assert systems == ["marginal", "random"]
    train_answers = set(responses.loc[responses["subject_id"].isin(train_ids), "answer"])
    for system in systems:
        preds = pd.read_csv(
            run_dir / "systems" / system / "predictions.csv", dtype={"subject_id": str}
        )
        assert set(preds["system"]) == {system}
        assert not preds.duplicated(["subject_id", "question", "seq"]).any()
        assert sorted(zip(preds["subject_id"], preds["question"], strict=True)) == sorted(
            zip(expected["subject_id"], expected["question"], strict=True)
        )
        truth = expected.set_index("subject_id")["answer"]
        assert (preds["true_answer"].to_numpy() == truth.loc[preds["subject_id"]].to_numpy()).all()
        assert preds["answer"].between(1, 5).all() and preds["ok"].all()
        if system == "marginal":  # drawn from the training answers only
            assert set(preds["answer"]) <= train_answers


def test_metrics_are_tidy_with_floors_and_independently_checked_values(finished_run):
    run, run_dir, _, _ = finished_run
    metrics = pd.read_csv(run_dir / "metrics.csv", keep_default_na=False, na_values=[""])
    assert list(metrics.columns[: len(TIDY)]) == TIDY
    assert set(metrics["system"]) == {
        "random",
        "marginal",
        "floor:sampling",
        "floor:split_half",
        "floor:uniform",
        "floor:marginal",
        "floor:humans",
    }
    assert len(metrics) == len(run.metrics)
    # every system row has a bootstrap interval over respondents that covers its value
    systems = metrics[~metrics["system"].str.startswith("floor:")]
    # (a value that is undefined, such as a correlation over one answer, has no interval)
    assert (systems["value"].notna() == systems["ci_low"].notna()).all()
    systems = systems[systems["value"].notna()]
    assert systems[["ci_low", "ci_high"]].notna().all().all()
    assert (systems["ci_low"] <= systems["value"] + 1e-12).all()
    assert (systems["value"] <= systems["ci_high"] + 1e-12).all()
    # the sampling floor is there per segment too
    sampling = metrics[metrics["system"] == "floor:sampling"]
    assert {"all", "region=North", "region=South"} == set(sampling["segment"])
    # paired differences against the marginal baseline, and the log of the run
    diffs = pd.read_csv(run_dir / "differences.csv")
    random_kl = diffs[
        (diffs["system"] == "random") & (diffs["metric"] == "kl")
        & (diffs["against"] == "marginal baseline")
    ]  # fmt: skip
    assert len(random_kl) == 1 and random_kl[["ci_low", "ci_high"]].notna().all(axis=None)
    # like with like: a point prediction against the marginal's mean, answers against answers
    random_rmse = diffs[
        (diffs["system"] == "random") & (diffs["metric"] == "rmse")
        & (diffs["against"] == "marginal baseline")
    ].set_index("readout")  # fmt: skip
    assert random_rmse.loc["expected", "reference_readout"] == "expected"
    assert random_rmse.loc["answer", "reference_readout"] == "answer"
    assert "spread" not in set(diffs["metric"])  # a description: no system wins by it
    log_text = (run_dir / "run.log").read_text()
    assert "scored random" in log_text and "scored marginal" in log_text
    half = metrics[metrics["system"] == "floor:split_half"]
    assert set(half["metric"]) == {"kl", "wasserstein", "representativeness"}  # population only
    assert half["sd"].notna().all() and (half["sd"] > 0).all()
    # the survey's default segments break baselines down by region
    random_rows = metrics[metrics["system"] == "random"]
    assert {"all", "region=North", "region=South"} == set(random_rows["segment"])
    assert "nll" not in set(random_rows["metric"])  # sampled answers have no likelihood
    assert "nll" in set(metrics.loc[metrics["system"] == "floor:uniform", "metric"])

    def value(system, metric, segment="all"):
        """The row of the answers as given (not a sampling baseline's ``expected`` readout)."""
        row = metrics[
            (metrics["system"] == system)
            & (metrics["metric"] == metric)
            & (metrics["segment"] == segment)
            & (metrics["readout"] != "expected")
        ]
        assert len(row) == 1, (system, metric, segment)
        return float(row["value"].iloc[0])

    preds = pd.read_csv(run_dir / "systems" / "marginal" / "predictions.csv")
    squared = [(a - y) ** 2 for a, y in zip(preds["answer"], preds["true_answer"], strict=True)]
    assert value("marginal", "rmse") == pytest.approx(math.sqrt(sum(squared) / len(squared)))
    assert value("random", "success_rate") == 1.0
    # uniform floor KL: every model bin holds n/5 expected answers, so m_k = 1/5 after smoothing
    human = preds["true_answer"].astype(int).tolist()
    n = len(human)
    kl = 0.0
    for k in range(1, 6):
        h = (human.count(k) + 0.5) / (n + 2.5)
        kl += h * math.log(h / 0.2)
    assert value("floor:uniform", "kl") == pytest.approx(kl)
    # the humans' spread, and the marginal baseline's mean as its point prediction (the
    # ``expected`` readout): its RMSE against the test answers, and no spread at all
    mean = sum(human) / n
    assert value("floor:humans", "spread") == pytest.approx(
        math.sqrt(sum((y - mean) ** 2 for y in human) / n)
    )
    responses = pd.read_csv(run_dir / "data" / "responses.csv", dtype={"subject_id": str})
    splits = pd.read_csv(run_dir / "splits.csv", dtype={"subject_id": str})
    train_ids = set(splits.loc[splits["split"] == "train", "subject_id"])
    train = responses[responses["subject_id"].isin(train_ids)]
    expected = metrics[(metrics["system"] == "marginal") & (metrics["readout"] == "expected")]
    overall = expected[expected["segment"] == "all"].set_index("metric")["value"]
    train_mean = train["answer"].astype(float).mean()
    by_hand = math.sqrt(sum((train_mean - y) ** 2 for y in human) / n)
    assert overall["rmse"] == pytest.approx(by_hand)
    assert overall["spread"] == pytest.approx(0.0, abs=1e-9)
    assert math.isnan(overall["pearson"])  # a constant tells no one apart
    assert overall["rmse"] < value("marginal", "rmse")  # the mean beats a sampled answer
    # the report's headline says how far its RMSE winner tells people apart
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "Its point predictions spread" in html and "against the humans'" in html
    north = preds.merge(
        pd.read_csv(run_dir / "data" / "responses.csv")[["subject_id", "region"]], on="subject_id"
    )
    north = north[north["region"] == "North"]
    hits = (north["answer"] == north["true_answer"]).mean()
    assert value("marginal", "accuracy", "region=North") == pytest.approx(hits)


def test_resume_keeps_earlier_systems_and_a_fresh_run_never_overwrites(
    finished_run, satisfaction_plugins, tmp_path
):
    _, run_dir, config, _ = finished_run
    kept = run_dir / "systems" / "random" / "predictions.csv"
    before = kept.stat().st_mtime_ns
    first = pd.read_csv(run_dir / "metrics.csv")
    (run_dir / "systems" / "marginal" / "metrics.csv").unlink()  # as if stopped half-way
    again = execute(
        config, "satisfaction.yaml", satisfaction_plugins, resume=True, run_dir=str(run_dir),
        progress=QUIET,
    )  # fmt: skip
    assert kept.stat().st_mtime_ns == before
    assert (run_dir / "systems" / "marginal" / "metrics.csv").is_file()  # redone
    assert again.dir == run_dir
    second = pd.read_csv(run_dir / "metrics.csv")
    pd.testing.assert_frame_equal(
        second.sort_values(TIDY).reset_index(drop=True)[TIDY],
        first.sort_values(TIDY).reset_index(drop=True)[TIDY],
    )
    with pytest.raises(ConfigError, match="a run is already there; add --resume"):
        execute(
            config, "satisfaction.yaml", satisfaction_plugins, run_dir=str(run_dir), progress=QUIET
        )
    changed = satisfaction_config(tmp_path, evaluation={"bootstrap": 30})
    with pytest.raises(
        ConfigError, match=r"different configuration; cannot resume it \(changed evaluation"
        r"\.bootstrap: 20 -> 30\)\. Start a new run: the result cache reuses"
    ):  # fmt: skip
        execute(
            changed, "satisfaction.yaml", satisfaction_plugins, resume=True, run_dir=str(run_dir),
            progress=QUIET,
        )  # fmt: skip


def test_runs_without_run_dir_get_new_directories_and_resume_finds_them(
    tmp_path, satisfaction_plugins
):
    config = satisfaction_config(tmp_path)
    a = execute(config, "s.yaml", satisfaction_plugins, progress=QUIET)
    b = execute(config, "s.yaml", satisfaction_plugins, progress=QUIET)
    assert a.dir != b.dir and a.dir.parent == b.dir.parent == tmp_path / "runs"
    resumed = execute(config, "s.yaml", satisfaction_plugins, resume=True, progress=QUIET)
    assert resumed.dir == b.dir  # the latest run of this configuration, not the symlink
    latest = tmp_path / "runs" / "latest"
    assert latest.is_symlink() and latest.resolve() == b.dir.resolve()
    # a changed configuration has no run to resume: the new run says what differs
    messages: list[str] = []
    changed = satisfaction_config(
        tmp_path, split={"seed": 3, "train": 0.8, "val": 0.1, "test": 0.1}
    )
    fresh = execute(
        changed, "s.yaml", satisfaction_plugins, resume=True, progress=Progress(messages.append)
    )
    assert fresh.dir not in {a.dir, b.dir}
    assert any(
        m.startswith("no run of this exact configuration to resume;") and "split.seed: 0 -> 3" in m
        for m in messages
    ), messages


def test_run_from_a_data_file(tmp_path, satisfaction_plugins):
    table = pd.DataFrame(
        {
            "subject_id": [f"x{i}" for i in range(20)],
            "region": ["North", "South"] * 10,
            "question": "satisfaction",
            "answer": [1, 2, 3, 4, 5] * 4,
        }
    )
    path = tmp_path / "answers.jsonl"
    table.to_json(path, orient="records", lines=True)
    config = satisfaction_config(tmp_path, data={"source": "file", "path": str(path)})
    run = execute(
        config, "s.yaml", satisfaction_plugins, run_dir=str(tmp_path / "r"), progress=QUIET
    )
    splits = pd.read_csv(run.dir / "splits.csv")
    assert sorted(splits["subject_id"]) == sorted(table["subject_id"])
    assert not (run.dir / "data").exists()  # nothing synthesised

    table.loc[3, "answer"] = 6
    table.to_json(path, orient="records", lines=True)
    with pytest.raises(DataError, match=r"answers\.jsonl: row 4, column answer: 6"):
        execute(
            config, "s.yaml", satisfaction_plugins, run_dir=str(tmp_path / "r2"), progress=QUIET
        )


def test_evshift_config_through_the_cli(tmp_path, runner, cli):
    result = runner.invoke(
        cli,
        [
            "run",
            str(REPO / "surveys" / "evshift.yaml"),
            "--set",
            "data.subjects=300",
            "--set",
            "backend=null",  # the language model has its own (slow) tests
            "--set",
            "split.max_train_subjects=null",  # the default run's CPU-budget caps, lifted
            "--set",
            "split.max_val_subjects=null",
            "--set",
            "split.max_test_subjects=null",
            "--set",
            "baselines=[{name: random}, {name: marginal}]",
            "--set",
            f"output.dir={tmp_path}",
        ],
    )
    assert result.exit_code == 0, (result.output, result.exception)
    out = result.stdout
    for text in ["initial_preference", "post_intervention_preference", "floor:split_half"]:
        assert text in out
    header = next(line for line in out.splitlines() if line.strip().startswith("system"))
    # nll is shown because the exact null models (floors) have it
    assert header.split() == [
        "system", "t", "kl", "rmse", "pearson", "nll", "spread", "success_rate"
    ]  # fmt: skip
    assert f"Results: {tmp_path}" in out
    run_dirs = [p for p in tmp_path.iterdir() if p.is_dir() and not p.is_symlink()]
    assert len(run_dirs) == 1
    splits = pd.read_csv(run_dirs[0] / "splits.csv")
    assert len(splits) == 300 and splits["subject_id"].is_unique


def test_data_synth_evshift(tmp_path, runner, cli):
    pytest.importorskip("surveysim_evshift.synth", reason="the EV-shift generator is not there yet")
    from surveysim_core.data import read_table, validate_long
    from surveysim_core.plugins import get_plugins

    out = tmp_path / "synth"
    args = ["data", "synth", "evshift", "--out", str(out), "--subjects", "50", "--seed", "1"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, (result.output, result.exception)
    assert (out / "responses.csv").is_file() and (out / "truth.json").is_file()
    assert str(out / "responses.csv") in result.output
    json.loads((out / "truth.json").read_text())
    # the file is valid EV-shift data with 50 subjects
    plugins = get_plugins()
    survey = plugins.surveys.get("evshift")
    from surveysim_core.answers import answer_type_from_spec

    answers = {
        q.id: answer_type_from_spec(q.answer, plugins.answer_types, q.id)
        for q in survey.spec.questions
    }
    table = read_table(out / "responses.csv", plugins.data_formats)
    data = validate_long(table, survey.spec, answers, str(out / "responses.csv"))
    assert len(data.respondents) == 50
    # seeded: the same seed gives the same file
    again = tmp_path / "again"
    runner.invoke(cli, [*args[:3], "--out", str(again), *args[5:]])
    assert (again / "responses.csv").read_bytes() == (out / "responses.csv").read_bytes()


def test_data_synth_for_an_out_of_tree_survey(tmp_path, runner, satisfaction_cli_plugins):
    from surveysim_core.cli import build_cli

    out = tmp_path / "s"
    result = runner.invoke(build_cli(), ["data", "synth", "satisfaction", "--out", str(out)])
    assert result.exit_code == 0, (result.output, result.exception)
    table = pd.read_csv(out / "responses.csv")
    assert len(table) == 60  # the survey's own default size
    assert set(np.unique(table["answer"])) <= {1, 2, 3, 4, 5}


def test_a_misspelt_question_in_a_data_file_is_an_error_not_dropped(tmp_path, satisfaction_plugins):
    path = tmp_path / "answers.csv"
    path.write_text(
        "subject_id,region,question,answer\n"
        + "".join(f"x{i},North,satisfaction,{i % 5 + 1}\n" for i in range(19))
        + "x19,South,satisfacton,3\n",
        encoding="utf-8",
    )
    config = satisfaction_config(tmp_path, data={"source": "file", "path": str(path)})
    with pytest.raises(DataError, match=r"answers\.csv: row 20: unknown question 'satisfacton'"):
        execute(config, "s.yaml", satisfaction_plugins, run_dir=str(tmp_path / "r"), progress=QUIET)


def test_questions_left_out_of_a_run_are_skipped_and_rows_keep_file_numbers(
    tmp_path, satisfaction_plugins
):
    survey = satisfaction_plugins.surveys.get("satisfaction")
    two = survey.spec.model_copy(
        update={
            "name": "two",
            "questions": [
                *survey.spec.questions,
                survey.spec.questions[0].model_copy(update={"id": "recommend"}),
            ],
        }
    )

    class TwoQuestions:
        @hookimpl
        def register_surveys(self, register):
            register("two", type(survey)(spec=two))

    satisfaction_plugins.register(TwoQuestions(), "two-questions")
    try:
        rows = "".join(
            f"x{i},North,satisfaction,{i % 5 + 1}\nx{i},North,recommend,{i % 3 + 1}\n"
            for i in range(20)
        )
        path = tmp_path / "answers.csv"
        path.write_text("subject_id,region,question,answer\n" + rows, encoding="utf-8")
        config = satisfaction_config(
            tmp_path,
            survey="two",
            questions=["recommend"],
            data={"source": "file", "path": str(path)},
        )
        run = execute(
            config, "s.yaml", satisfaction_plugins, run_dir=str(tmp_path / "r"), progress=QUIET
        )
        assert set(run.metrics["question"]) == {"recommend"}
        # a bad answer in the 4th data row is reported as row 4, skipped rows included
        lines = path.read_text().splitlines()
        lines[4] = "x1,North,recommend,9"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        with pytest.raises(DataError, match=r"row 4, column answer: '9'"):
            execute(
                config, "s.yaml", satisfaction_plugins, run_dir=str(tmp_path / "r2"), progress=QUIET
            )
    finally:
        satisfaction_plugins.unregister("two-questions")


def test_status_reports_each_trained_systems_measured_throughput(tmp_path):
    from surveysim_core.run import training_throughput

    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "training.json").write_text('{"tokens_per_second": 123.456}')
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "training.json").write_text("not json")
    assert training_throughput(tmp_path) == {"adapter: training tokens/s": 123.5}
