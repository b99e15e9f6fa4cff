"""``surveysim compare`` (one table and one figure across runs) and ``surveysim report``
(the report re-rendered from a run's saved results)."""

from __future__ import annotations

import pandas as pd
import pytest

from surveysim_core.compare import COMPARE_COLUMNS
from surveysim_core.config import RunConfig
from surveysim_core.protocols import Progress
from surveysim_core.run import execute

QUIET = Progress(lambda message: None)


@pytest.fixture
def two_runs(tmp_path, satisfaction_cli_plugins):
    dirs = []
    for name, baselines in [("a", ["random"]), ("b", ["marginal", "random"])]:
        config = RunConfig.model_validate(
            {
                "survey": "satisfaction",
                "data": {"subjects": 60, "seed": 1},
                "baselines": [{"name": n} for n in baselines],
                "evaluation": {"bootstrap": 5},
                "output": {"dir": str(tmp_path / "runs")},
            }
        )
        run = execute(
            config, "s.yaml", satisfaction_cli_plugins, run_dir=str(tmp_path / name),
            progress=QUIET,
        )  # fmt: skip
        dirs.append(run.dir)
    return dirs


def test_compare_writes_one_tidy_table_and_one_figure(two_runs, tmp_path, runner):
    from surveysim_core.cli import build_cli

    out = tmp_path / "cmp"
    result = runner.invoke(build_cli(), ["compare", *map(str, two_runs), "--out", str(out)])
    assert result.exit_code == 0, (result.output, result.exception)
    table = pd.read_csv(out / "compare.csv", keep_default_na=False, na_values=[""])
    assert list(table.columns) == COMPARE_COLUMNS
    for run_dir in two_runs:
        metrics = pd.read_csv(run_dir / "metrics.csv", keep_default_na=False, na_values=[""])
        overall = metrics[metrics["segment"] == "all"]
        mine = table[table["run"] == run_dir.name]
        assert len(mine) == len(overall)
        kl = overall[(overall["system"] == "random") & (overall["metric"] == "kl")]["value"]
        got = mine[(mine["system"] == "random") & (mine["metric"] == "kl")]["value"]
        assert got.tolist() == pytest.approx(kl.tolist())
    assert set(table.loc[table["run"] == "b", "system"]) >= {"marginal", "random"}
    assert "marginal" not in set(table.loc[table["run"] == "a", "system"])
    pytest.importorskip("matplotlib")
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_names_a_directory_that_is_not_a_run(tmp_path, runner, cli):
    (tmp_path / "empty").mkdir()
    result = runner.invoke(cli, ["compare", str(tmp_path / "empty")])
    assert result.exit_code != 0
    assert "metrics.csv: not found" in str(result.exception)


def test_report_rerenders_from_saved_results(two_runs, runner):
    from surveysim_core.cli import build_cli

    run_dir = two_runs[1]
    summary = (run_dir / "summary.txt").read_text()
    html = (run_dir / "report.html").read_text()
    (run_dir / "summary.txt").unlink()
    (run_dir / "report.html").unlink()
    result = runner.invoke(build_cli(), ["report", str(run_dir)])
    assert result.exit_code == 0, (result.output, result.exception)
    assert (run_dir / "summary.txt").read_text() == summary
    assert (run_dir / "report.html").read_text() == html
    assert "marginal" in result.output and "floor:uniform" in result.output
