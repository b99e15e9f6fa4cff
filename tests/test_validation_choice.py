"""A grid baseline's best setting is chosen on the validation split, not on the test split: in
metrics.csv and settings.csv, the summary, differences.csv's "best baseline", the report's
headline, and the RMSE-KL picture (where the test-optimal points are labelled as an oracle)."""

from __future__ import annotations

import json
import logging
import math
from types import SimpleNamespace
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

from surveysim_core import hookimpl
from surveysim_core.config import RunConfig
from surveysim_core.protocols import Baseline, BaselinePrediction, Progress
from surveysim_core.report import best_row
from surveysim_core.run import execute
from surveysim_core.split import split_by_subject

QUIET = Progress(lambda message: None)


def off_by(answers: np.ndarray, k: int) -> np.ndarray:
    """Answers on the 1-5 scale exactly ``k`` away from the true ones (down where up would
    leave the scale)."""
    return np.where(answers + k <= 5, answers + k, answers - k).astype(float)


class SplitGrid(Baseline):
    """A grid of four settings that peeks at the true answers (a fake, for hand-worked values):
    ``A`` is exact on the validation respondents and 2 off elsewhere, ``B`` exact on the others
    (the test respondents) and 2 off on validation, ``C`` 1 off and ``D`` 3 off everywhere."""

    validation_subjects: ClassVar[set[str]] = set()
    calls: ClassVar[int] = 0

    def predict(self, train, test, seed):
        SplitGrid.calls += 1
        truth = test.items["answer"].to_numpy(int)
        on_val = test.items["subject_id"].isin(SplitGrid.validation_subjects).to_numpy()
        yield BaselinePrediction("A", {"k": 1}, np.where(on_val, truth, off_by(truth, 2)))
        yield BaselinePrediction("B", {"k": 2}, np.where(on_val, off_by(truth, 2), truth))
        yield BaselinePrediction("C", {"k": 3}, off_by(truth, 1))
        yield BaselinePrediction("D", {"k": 4}, off_by(truth, 3))


class GridPlugin:
    @hookimpl
    def register_baselines(self, register):
        register("grid", SplitGrid)


@pytest.fixture
def grid_plugins(satisfaction_plugins):
    satisfaction_plugins.register(GridPlugin(), "grid-plugin")
    SplitGrid.calls = 0
    yield satisfaction_plugins
    satisfaction_plugins.unregister("grid-plugin")


SPLIT = {"train": 0.6, "val": 0.2, "test": 0.2}


def config(tmp_path, split: dict[str, float]) -> RunConfig:
    return RunConfig.model_validate(
        {
            "survey": "satisfaction",
            "data": {"subjects": 60, "seed": 1},
            "split": {**split, "seed": 7},
            "baselines": [{"name": "marginal"}, {"name": "grid"}],
            "evaluation": {"bootstrap": 5, "metrics": ["kl", "rmse"]},
            "output": {"dir": str(tmp_path / "runs")},
        }
    )


def run_grid(tmp_path, plugins, split=SPLIT, where="r"):
    ids = [f"p{i:03d}" for i in range(60)]
    SplitGrid.validation_subjects = set(split_by_subject(ids, split, 7)["val"])
    run = execute(
        config(tmp_path, split), "g.yaml", plugins, run_dir=str(tmp_path / where),
        progress=QUIET,
    )  # fmt: skip
    # the fake's idea of the validation respondents is the run's
    splits = pd.read_csv(run.dir / "splits.csv")
    assert set(splits.loc[splits["split"] == "val", "subject_id"]) == (
        SplitGrid.validation_subjects
    )
    return run


def overall(metrics: pd.DataFrame, system: str, metric: str) -> pd.DataFrame:
    rows = metrics[
        (metrics["system"] == system) & (metrics["metric"] == metric)
        & (metrics["segment"] == "all")
    ]  # fmt: skip
    return rows.set_index("setting")


def test_the_grid_setting_best_on_validation_stands_for_the_grid(tmp_path, grid_plugins):
    run = run_grid(tmp_path, grid_plugins)
    assert SplitGrid.calls == 2  # the test items and the validation items
    metrics = pd.read_csv(run.dir / "metrics.csv", keep_default_na=False, na_values=[""])
    rmse = overall(metrics, "grid", "rmse")
    # hand-worked: on the test split A is 2 off everywhere, B exact, C 1 off, D 3 off
    assert rmse["value"].to_dict() == pytest.approx({"A": 2.0, "B": 0.0, "C": 1.0, "D": 3.0})
    # on the validation split A is exact and B 2 off
    assert rmse["validation_value"].to_dict() == pytest.approx(
        {"A": 0.0, "B": 2.0, "C": 1.0, "D": 3.0}
    )
    for metric in ("kl", "rmse"):
        chosen = metrics[
            (metrics["system"] == "grid") & (metrics["metric"] == metric)
            & (metrics["chosen_on"] == "validation")
        ]  # fmt: skip
        assert set(chosen["setting"]) == {"A"}
        # every segment's row of the chosen setting is marked, no other row
        assert len(chosen) == len(
            metrics[(metrics["system"] == "grid") & (metrics["metric"] == metric)
                    & (metrics["setting"] == "A")]
        )  # fmt: skip
    marks = metrics.loc[metrics["system"] == "grid", "chosen_on"].fillna("")
    assert marks.isin(["validation", ""]).all()

    # settings.csv: each setting's validation values and what it was chosen for
    settings = pd.read_csv(run.dir / "settings.csv").set_index("setting")
    a = json.loads(settings.loc["A", "validation"])
    b = json.loads(settings.loc["B", "validation"])
    assert a["validation"]["satisfaction"]["rmse"] == pytest.approx(0.0)
    assert b["validation"]["satisfaction"]["rmse"] == pytest.approx(2.0)
    assert sorted(a["chosen_for"]) == [
        ["satisfaction", "kl", "validation"], ["satisfaction", "rmse", "validation"],
    ]  # fmt: skip
    assert b["chosen_for"] == []

    # the summary's best rows are A's, labelled as chosen on validation, with A's test values
    summary = (run.dir / "summary.txt").read_text()
    line = next(x for x in summary.splitlines() if "grid best rmse" in x)
    assert line.strip().startswith("grid best rmse on validation (A)")
    assert float(line.split()[-1]) == pytest.approx(2.0)
    assert "(B)" not in summary

    # differences.csv: the best baseline is grid A (validation RMSE 0 beats the marginal's),
    # whose test RMSE is 2
    diffs = pd.read_csv(run.dir / "differences.csv", keep_default_na=False, na_values=[""])
    best = diffs[(diffs["against"] == "best baseline") & (diffs["metric"] == "rmse")]
    assert set(best["reference"]) == {"grid"}
    assert set(best["reference_setting"]) == {"A"}
    assert best["reference_value"].to_numpy() == pytest.approx(2.0)
    # a regression-like grid answers with points: against the marginal's mean on RMSE, its
    # sampled answers on KL (the mean has no histogram)
    vs_marginal = diffs[(diffs["against"] == "marginal baseline") & (diffs["system"] == "grid")]
    assert set(vs_marginal.loc[vs_marginal["metric"] == "rmse", "reference_readout"]) == {
        "expected"
    }
    assert set(vs_marginal.loc[vs_marginal["metric"] == "kl", "reference_readout"]) == {"answer"}
    marginal = best[best["system"] == "marginal"].iloc[0]
    marginal_rmse = overall(metrics, "marginal", "rmse")["value"].iloc[0]
    assert marginal["difference"] == pytest.approx(marginal_rmse - 2.0)

    # the report's headline picks among the grid's chosen settings only
    q = metrics[(metrics["segment"] == "all") & (metrics["system"] == "grid")]
    assert best_row(q, "rmse")["setting"] == "A"
    html = (run.dir / "report.html").read_text()
    assert "best rmse on validation" in html


def test_the_picture_labels_the_test_optimal_points_as_oracle(tmp_path, grid_plugins, monkeypatch):
    plugin = pytest.importorskip("surveysim_sklearn.plugin")
    import matplotlib.figure

    run = run_grid(tmp_path, grid_plugins)
    legends: list[list[str]] = []
    notes: list[list[str]] = []
    save = matplotlib.figure.Figure.savefig

    def recording_savefig(fig, *args, **kwargs):
        legends.append([t.get_text() for legend in fig.legends for t in legend.get_texts()])
        notes.append([t.get_text() for ax in fig.axes for t in ax.texts])
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", recording_savefig)
    out = tmp_path / "picture"
    out.mkdir()
    plugin.surveysim_write_report(run=SimpleNamespace(dir=out, metrics=run.metrics,
                                                      settings=run.settings))  # fmt: skip
    points = pd.read_csv(out / "baseline_points.csv", keep_default_na=False).set_index("setting")
    # B is best on the test split by both metrics (the oracle), A was chosen on validation
    assert points.loc["B", "oracle"] == "kl,rmse"
    assert points.loc["A", "chosen_on_validation"] == "kl,rmse"
    assert points.loc["B", "chosen_on_validation"] == ""
    assert points.loc["A", "oracle"] == ""
    assert legends and "grid Pareto front: oracle (chosen on test)" in legends[-1]
    # A is far off on the test split (beyond the zoom): named under the panel, with its test RMSE
    assert any(
        n.startswith("off scale (>): grid chosen on validation (A)") and n.endswith("RMSE 2.0")
        for n in notes[-1]
    )


def test_without_validation_respondents_the_choice_falls_back_to_test_and_says_so(
    tmp_path, grid_plugins, caplog
):
    with caplog.at_level(logging.WARNING, logger="surveysim_core.selection"):
        run = run_grid(tmp_path, grid_plugins, {"train": 0.8, "val": 0.0, "test": 0.2})
    assert SplitGrid.calls == 1  # no validation items to predict
    assert any("no validation respondents" in r.getMessage() for r in caplog.records)
    metrics = pd.read_csv(run.dir / "metrics.csv", keep_default_na=False, na_values=[""])
    chosen = metrics[(metrics["system"] == "grid") & metrics["chosen_on"].notna()]
    # today's behaviour, labelled: B is best on test (every respondent is a "test" one for the
    # fake, so B is exact and A 2 off)
    assert set(chosen["chosen_on"]) == {"test"} and set(chosen["setting"]) == {"B"}
    assert overall(metrics, "grid", "rmse")["validation_value"].isna().all()
    summary = (run.dir / "summary.txt").read_text()
    assert any(x.strip().startswith("grid best rmse on test (B)") for x in summary.splitlines())
    diffs = pd.read_csv(run.dir / "differences.csv", keep_default_na=False, na_values=[""])
    best = diffs[(diffs["against"] == "best baseline") & (diffs["metric"] == "rmse")]
    assert set(best["reference_setting"]) == {"B"}
    assert best["reference_value"].to_numpy() == pytest.approx(0.0)


def test_validation_predictions_come_from_the_cache_on_a_rerun(tmp_path, grid_plugins):
    first = run_grid(tmp_path, grid_plugins, where="a")
    assert "grid: validation predictions" in first.cache["computed"]
    second = run_grid(tmp_path, grid_plugins, where="b")
    assert SplitGrid.calls == 2  # nothing predicted again
    assert "grid: validation predictions" in second.cache["reused"]
    cols = ["setting", "question", "segment", "metric", "value", "validation_value", "chosen_on"]

    def grid_rows(run):
        m = pd.read_csv(run.dir / "metrics.csv", keep_default_na=False, na_values=[""])
        return m[m["system"] == "grid"][cols].reset_index(drop=True)

    pd.testing.assert_frame_equal(grid_rows(first), grid_rows(second))
    assert math.isclose(
        overall(grid_rows(second).assign(system="grid"), "grid", "rmse").loc[
            "A", "validation_value"
        ],
        0.0,
    )
