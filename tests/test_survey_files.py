"""A survey from a plain YAML path (``survey: path/to/survey.yaml``), with no plugin package."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml

from surveysim_core.config import load_config
from surveysim_core.errors import ConfigError
from surveysim_core.protocols import Progress
from surveysim_core.run import execute, plan_run

QUIET = Progress(lambda message: None)

SURVEY_YAML = """\
name: commute
description: How people get to work, by region.
demographics:
  region: {options: [North, South]}
questions:
  - id: mode
    text: How do you usually get to work?
    answer: {type: categorical, options: [car, bus, bike]}
    template: commute
templates:
  commute: commute.j2
parsers: [choice]
"""


def write_survey(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "survey.yaml").write_text(SURVEY_YAML, encoding="utf-8")
    (folder / "commute.j2").write_text(
        "{{ question.text }} Answer with one of: car, bus, bike.", encoding="utf-8"
    )
    rows = [
        {"subject_id": f"s{i}", "region": ["North", "South"][i % 2], "question": "mode",
         "answer": ["car", "bus", "bike"][i % 3]}
        for i in range(30)
    ]  # fmt: skip
    pd.DataFrame(rows).to_csv(folder / "answers.csv", index=False)
    return folder / "survey.yaml"


def write_config(folder: Path, survey: str, out: Path) -> Path:
    config = {
        "survey": survey,
        "data": {"source": "file", "path": str(folder / "answers.csv")},
        "baselines": [{"name": "marginal"}],
        "evaluation": {"bootstrap": 5},
        "output": {"dir": str(out)},
    }
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_a_survey_yaml_beside_the_config_runs_without_a_plugin(tmp_path, plugins, monkeypatch):
    folder = tmp_path / "study"
    write_survey(folder)
    config_path = write_config(folder, "survey.yaml", tmp_path / "runs")
    monkeypatch.chdir(tmp_path)  # the relative path is found beside the config, not in cwd
    assert "commute" not in plugins.surveys
    plan = plan_run(load_config(config_path), str(config_path), plugins)
    assert plan.survey.name == "commute"
    assert plan.survey.source == str(folder / "survey.yaml")
    text = plan.renderer.render("commute", question=plan.survey.spec.question("mode"))
    assert text == "How do you usually get to work? Answer with one of: car, bus, bike."

    run = execute(load_config(config_path), str(config_path), plugins, progress=QUIET)
    # the run directory is named after the file's stem, not nested under the path
    assert run.dir.parent == tmp_path / "runs" and run.dir.name.startswith("survey-")
    splits = pd.read_csv(run.dir / "splits.csv")
    assert len(splits) == 30
    metrics = pd.read_csv(run.dir / "metrics.csv")
    assert "marginal" in set(metrics["system"])


def test_a_survey_path_relative_to_the_working_directory(tmp_path, plugins, monkeypatch):
    write_survey(tmp_path / "surveys" / "commute")
    config_path = write_config(tmp_path, "surveys/commute/survey.yaml", tmp_path / "runs")
    monkeypatch.chdir(tmp_path)
    plan = plan_run(load_config(config_path), "elsewhere/run.yaml", plugins)
    assert plan.survey.name == "commute"


def test_a_missing_survey_file_is_an_error_naming_the_key(tmp_path, plugins):
    config_path = write_config(tmp_path, "nowhere/survey.yaml", tmp_path / "runs")
    with pytest.raises(
        ConfigError, match=r"run\.yaml: survey: no survey file 'nowhere/survey\.yaml'"
    ):
        plan_run(load_config(config_path), str(config_path), plugins)


def test_a_missing_template_file_is_an_error_naming_the_template(tmp_path, plugins):
    survey = write_survey(tmp_path)
    (tmp_path / "commute.j2").unlink()
    config_path = write_config(tmp_path, "survey.yaml", tmp_path / "runs")
    with pytest.raises(
        ConfigError, match=r"survey\.yaml: templates\.commute: cannot read .*commute\.j2"
    ):
        plan_run(load_config(config_path), str(config_path), plugins)
    assert survey.exists()


def test_a_bad_key_in_the_survey_file_names_the_file(tmp_path, plugins):
    write_survey(tmp_path)
    text = (tmp_path / "survey.yaml").read_text(encoding="utf-8")
    (tmp_path / "survey.yaml").write_text(text + "segmnets: [region]\n", encoding="utf-8")
    config_path = write_config(tmp_path, "survey.yaml", tmp_path / "runs")
    with pytest.raises(ConfigError, match=textwrap.dedent(r"survey\.yaml: segmnets: unknown key")):
        plan_run(load_config(config_path), str(config_path), plugins)
