"""Shared fixtures: fake plugins that register and unregister by name, small surveys, runners."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from surveysim_core import hookimpl
from surveysim_core.plugins import Plugins, get_plugins, reset_plugins
from surveysim_core.survey import Survey, SurveySpec

REPO = Path(__file__).resolve().parents[1]


# -- a tiny out-of-tree survey: one 1-5 question, one demographic field ---------------------------
SATISFACTION_SPEC = {
    "name": "satisfaction",
    "description": "How satisfied people are, 1-5, by region.",
    "demographics": {"region": {"options": ["North", "South"]}},
    "questions": [
        {
            "id": "satisfaction",
            "text": "How satisfied are you with your town, from 1 to 5?",
            "answer": {"type": "integer", "min": 1, "max": 5},
        }
    ],
    "segments": ["region"],
    "synthetic_subjects": 60,
}


def synthesize_satisfaction(out_dir: Path, subjects: int | None, seed: int) -> Path:
    """Long-format CSV: one answer per subject; the North answers higher than the South."""
    rng = np.random.default_rng(seed)
    n = subjects or 60
    region = np.where(np.arange(n) % 2 == 0, "North", "South")
    north = rng.choice([3, 4, 5], size=n, p=[0.2, 0.4, 0.4])
    south = rng.choice([1, 2, 3], size=n, p=[0.4, 0.4, 0.2])
    table = pd.DataFrame(
        {
            "subject_id": [f"p{i:03d}" for i in range(n)],
            "region": region,
            "question": "satisfaction",
            "answer": np.where(region == "North", north, south),
        }
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "responses.csv"
    table.to_csv(path, index=False)
    return path


def make_satisfaction_survey(**spec_changes) -> Survey:
    spec = SurveySpec.model_validate({**SATISFACTION_SPEC, **spec_changes})
    return Survey(
        spec=spec, source="<test satisfaction survey>", synthesize=synthesize_satisfaction
    )


class SatisfactionPlugin:
    """An out-of-tree survey plugin, as a third party would write it."""

    def __init__(self, survey: Survey | None = None):
        self.survey = survey or make_satisfaction_survey()

    @hookimpl
    def register_surveys(self, register):
        register("satisfaction", self.survey)


@pytest.fixture(autouse=True)
def private_result_cache(tmp_path_factory, monkeypatch):
    """Each test its own result cache: none reads or fills the user's ~/.cache/surveysim."""
    monkeypatch.setenv("SURVEYSIM_CACHE", str(tmp_path_factory.mktemp("surveysim-cache")))


@pytest.fixture
def plugins() -> Plugins:
    """A fresh plugin set loaded from the installed entry points (std, evshift, ...)."""
    return Plugins()


@pytest.fixture
def satisfaction_plugins(plugins: Plugins):
    """The installed plugins plus the fake satisfaction survey plugin, unregistered afterwards."""
    plugins.register(SatisfactionPlugin(), "satisfaction-plugin")
    yield plugins
    plugins.unregister("satisfaction-plugin")


@pytest.fixture
def global_plugins():
    """The process-wide plugin set used by the CLI, reloaded before and forgotten after."""
    reset_plugins()
    yield get_plugins()
    reset_plugins()


@pytest.fixture
def satisfaction_cli_plugins(global_plugins: Plugins):
    """The CLI's plugin set with the fake satisfaction survey registered by name."""
    global_plugins.register(SatisfactionPlugin(), "satisfaction-plugin")
    yield global_plugins
    global_plugins.unregister("satisfaction-plugin")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def cli(global_plugins):
    from surveysim_core.cli import build_cli

    return build_cli()
