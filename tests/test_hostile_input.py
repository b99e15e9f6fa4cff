"""Hostile input, generated: random data files (columns, encodings, answers, ids) and random
configuration files (YAML shapes, values), run through ``validate`` and a baseline-only ``run``.

Each either succeeds or raises a ``SurveysimError`` (never another exception, which would be a
traceback), and never leaves a partial run directory: no temporary file, no lock, no
``status.json`` unless the run succeeded, and nothing at all when a fresh run failed on its
input.

Profiles: ``ci`` (the default, 25 examples each, a few seconds) and ``long`` (500 examples):
``SURVEYSIM_HYPOTHESIS_PROFILE=long pytest tests/test_hostile_input.py``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from surveysim_core.config import load_config  # noqa: E402
from surveysim_core.errors import SurveysimError  # noqa: E402
from surveysim_core.protocols import Progress  # noqa: E402
from surveysim_core.run import execute, plan_run  # noqa: E402

settings.register_profile(
    "ci", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "long", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
PROFILE = os.environ.get("SURVEYSIM_HYPOTHESIS_PROFILE", "ci")
QUIET = Progress(lambda message: None)
FIXTURE_OK = [HealthCheck.function_scoped_fixture]

text = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=12
)
ids = st.one_of(
    st.integers(-3, 400).map(str),
    st.integers(0, 50).map(lambda i: f"{i}.0"),
    st.sampled_from(['=HYPERLINK("x")', "+1", "@SUM", " 7", "p1", "", "nan", "١"]),
    st.from_regex(r"p[0-9]{1,3}", fullmatch=True),
    text,
)
answers = st.one_of(
    st.integers(-2, 8).map(str),
    st.sampled_from(["1e1", "5_0", "\u0665", "true", "3.0", "3.5", "", " 2 ", "inf", "nan"]),
    text,
)
regions = st.one_of(st.sampled_from(["North", "South"]), text)
questions = st.one_of(st.just("satisfaction"), text)


@st.composite
def data_files(draw) -> tuple[bytes, str]:
    """A long-format file as bytes, with its suffix."""
    n = draw(st.integers(0, 80))
    # mostly well-formed subjects, so that runs get far enough to exercise the later stages
    base = pd.DataFrame(
        {
            "subject_id": [f"p{i:03d}" for i in range(n)],
            "region": ["North", "South"] * (n // 2) + ["North"] * (n % 2),
            "question": "satisfaction",
            "answer": [str(1 + i % 5) for i in range(n)],
        }
    )
    for _ in range(draw(st.sampled_from([0, 0, 1, 2, 4])) if n else 0):
        row = draw(st.integers(0, n - 1))
        column = draw(st.sampled_from(list(base.columns)))
        strategy = {"subject_id": ids, "region": regions, "question": questions}.get(
            column, answers
        )
        base.loc[row, column] = draw(strategy)
    if draw(st.booleans()) and n:  # a column dropped, or an unknown one added
        if draw(st.booleans()):
            base = base.drop(columns=draw(st.sampled_from(list(base.columns))))
        else:
            base[draw(text) or "extra"] = "x"
    suffix = draw(st.sampled_from(["csv", "csv", "csv", "jsonl", "txt"]))
    if suffix == "jsonl":
        body = base.to_json(orient="records", lines=True)
    else:
        body = base.to_csv(index=False)
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "latin-1", "utf-16"]))
    return body.encode(encoding, errors="replace"), suffix


yaml_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(), text),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(text, children, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def configs(draw, data_path: str, runs: str) -> dict:
    """A run configuration: a valid core with random changes at known and unknown keys."""
    config: dict = {
        "survey": draw(st.sampled_from(["satisfaction"] * 5 + ["nope"])),
        "data": {"source": "file", "path": data_path},
        "split": {"train": 0.6, "val": 0.2, "test": 0.2},
        "baselines": [
            {"name": name}
            for name in draw(st.lists(st.sampled_from(["random", "marginal"]), max_size=2))
        ],
        "evaluation": {"bootstrap": 5},
        "output": {"dir": runs},
    }
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2, 3]))):  # half left valid
        section = draw(
            st.sampled_from(["data", "split", "evaluation", "decoding", "questions", "baselines",
                             "output", "survey_options", draw(text) or "x"])
        )  # fmt: skip
        key = draw(st.sampled_from(["seed", "subjects", "train", "test", "temperatures",
                                    "metrics", "segments", "bootstrap", "name", draw(text)]))  # fmt: skip
        value = draw(yaml_values)
        if isinstance(config.get(section), dict) and key != "dir":
            config[section] = {**config[section], key: value}
        else:
            config[section] = value
    return config


def run_dir_state(runs: Path) -> list[tuple[str, list[str]]]:
    if not runs.is_dir():
        return []
    return [
        (d.name, sorted(str(p.relative_to(d)) for p in d.rglob("*")))
        for d in sorted(runs.iterdir())
    ]


def check_outcome(runs: Path, succeeded: bool) -> None:
    state = run_dir_state(runs)
    for name, files in state:
        assert not [f for f in files if f.endswith(".tmp") or ".synth-" in f or ".data-" in f], (
            name,
            files,
        )
        assert ".lock" not in files, (name, files)  # released however the run ended
        assert ("status.json" in files) == succeeded, (name, files)
    if not succeeded:
        # a fresh run that failed on its input leaves nothing behind
        assert state == [], state


@settings(settings.get_profile(PROFILE), suppress_health_check=FIXTURE_OK)
@given(data=data_files(), st_data=st.data())
def test_generated_data_and_configs_succeed_or_fail_with_a_named_error(
    data, st_data, satisfaction_plugins
):
    body, suffix = data
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        data_path = tmp_path / f"responses.{suffix}"
        data_path.write_bytes(body)
        runs = tmp_path / "runs"
        config_data = st_data.draw(configs(str(data_path), str(runs)))
        config_path = tmp_path / "run.yaml"
        config_path.write_text(yaml.safe_dump(config_data, allow_unicode=True), encoding="utf-8")
        try:
            config = load_config(config_path)
            plan_run(config, str(config_path), satisfaction_plugins)
        except SurveysimError as exc:
            event(f"invalid: {type(exc).__name__}")
            check_outcome(runs, succeeded=False)
            return
        succeeded = False
        try:
            run = execute(config, str(config_path), satisfaction_plugins, progress=QUIET)
            succeeded = True
            assert (run.dir / "metrics.csv").is_file()
            event("run succeeded")
        except SurveysimError as exc:
            event(f"run failed: {type(exc).__name__}")
        check_outcome(runs, succeeded)


@settings(settings.get_profile(PROFILE), suppress_health_check=FIXTURE_OK)
@given(raw=st.one_of(yaml_values.map(lambda v: yaml.safe_dump(v, allow_unicode=True)), text))
def test_arbitrary_yaml_documents_validate_or_fail_with_a_named_error(raw, satisfaction_plugins):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.yaml"
        path.write_text(raw, encoding="utf-8")
        try:
            plan_run(load_config(path), str(path), satisfaction_plugins)
        except SurveysimError as exc:
            assert str(path) in str(exc) or "unknown survey" in str(exc), str(exc)
