"""The command line: validate without heavy imports, plugin listings, exit codes, --json runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_startup import HEAVY

from surveysim_core import hookimpl
from surveysim_core.errors import RunError
from surveysim_core.plugins import UNDECLARED

REPO = Path(__file__).resolve().parents[1]


def surveysim(*args: str, env: dict[str, str] | None = None):
    """Run ``python -m surveysim ARGS`` in a fresh process (the way a user runs it)."""
    return subprocess.run(
        [sys.executable, "-m", "surveysim", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        cwd=REPO,
    )


# Runs the command in a fresh process, then prints the names of the modules it imported.
WATCH_IMPORTS = """
import json, sys
from surveysim_core.cli import main
sys.argv = ["surveysim", *sys.argv[1:]]
try:
    main()
finally:
    print("MODULES=" + json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


def imported_by(*args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    proc = subprocess.run(
        [sys.executable, "-c", WATCH_IMPORTS, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    line = next(x for x in proc.stdout.splitlines() if x.startswith("MODULES="))
    return proc, set(json.loads(line.removeprefix("MODULES=")))


def config_with_model(tmp_path: Path, model: str) -> Path:
    config = yaml.safe_load((REPO / "surveys" / "evshift.yaml").read_text(encoding="utf-8"))
    config["backend"]["options"]["model"] = model
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


# -- validate -------------------------------------------------------------------------------------
def test_validate_imports_no_torch_or_scikit_learn():
    # evshift.yaml names the hf backend and loss, and the svr and catboost baselines
    proc, modules = imported_by("validate", "surveys/evshift.yaml")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "surveys/evshift.yaml: valid" in proc.stdout
    assert "surveysim_hf" in modules and "surveysim_sklearn" in modules  # options were read
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))


def test_validate_still_checks_declared_options(tmp_path, runner, cli):
    config = yaml.safe_load((REPO / "surveys" / "evshift.yaml").read_text(encoding="utf-8"))
    config["backend"]["options"]["lora_rank"] = 8
    config["baselines"] = [{"name": "svr", "options": {"kernel": ["cubic"]}}]
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = runner.invoke(cli, ["validate", str(path)])
    assert result.exit_code != 0
    message = str(result.exception)
    assert "backend.options.lora_rank" in message
    assert "baselines.0.options.kernel" in message


def test_validate_names_a_missing_local_model_folder(tmp_path):
    path = config_with_model(tmp_path, str(tmp_path / "no-such-model"))
    proc = surveysim("validate", str(path))
    assert proc.returncode == 3, proc.stderr
    assert f"{path}: backend.options: model '{tmp_path / 'no-such-model'}': no such folder" in (
        proc.stderr
    )
    assert "Traceback" not in proc.stderr


def test_validate_accepts_a_local_model_folder_with_a_config(tmp_path):
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}", encoding="utf-8")
    proc = surveysim("validate", str(config_with_model(tmp_path, str(folder))))
    assert proc.returncode == 0, proc.stderr


def fake_hub_cache(cache: Path, repo_id: str) -> None:
    """The layout huggingface_hub writes for a downloaded config.json (refs/main -> snapshot)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit, encoding="utf-8")
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}", encoding="utf-8")


def test_validate_offline_needs_the_hub_model_in_the_local_cache(tmp_path):
    cache = tmp_path / "hub"
    cache.mkdir()
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    path = config_with_model(tmp_path, "someone/some-model")
    proc = surveysim("validate", str(path), env=env)
    assert proc.returncode == 3, proc.stderr
    assert "model 'someone/some-model' is not in the local Hugging Face cache" in proc.stderr
    fake_hub_cache(cache, "someone/some-model")
    proc = surveysim("validate", str(path), env=env)
    assert proc.returncode == 0, proc.stderr
    # online, an uncached hub id is accepted: the run downloads it
    other = config_with_model(tmp_path, "someone/other-model")
    proc = surveysim(
        "validate", str(other), env={"HF_HUB_OFFLINE": "0", "HF_HUB_CACHE": str(cache)}
    )
    assert proc.returncode == 0, proc.stderr


# -- plugins ----------------------------------------------------------------------------------------
def test_plugins_lists_what_each_plugin_registers(runner, cli):
    result = runner.invoke(cli, ["plugins"])
    assert result.exit_code == 0, result.output
    text = result.output
    sklearn = text[text.index("sklearn 0.1.0") :].split("\nstd ")[0]
    assert "  baselines: catboost, svr" in sklearn
    hf = text[text.index("hf 0.1.0") :].split("\nlosses ")[0]
    assert "  backends: hf" in hf and "  losses: cross_entropy" in hf
    assert "  surveys: evshift, evshift-0to9" in text


def test_plugins_json_lists_registrations(runner, cli):
    result = runner.invoke(cli, ["plugins", "--json"])
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert rows["std"]["registers"]["decoders"] == ["exact", "sample"]
    assert rows["losses"]["registers"]["losses"] == [
        "numeric_penalty",
        "numeric_penalty_multitoken",
    ]


@pytest.mark.parametrize("name", ["svr", "hf", "numeric_penalty"])
def test_plugins_options_imports_no_heavy_library(name):
    proc, modules = imported_by("plugins", "--options", name)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "JSON schema:" in proc.stdout
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))


def test_plugins_options_prints_the_schema(runner, cli):
    result = runner.invoke(cli, ["plugins", "--options", "baselines:svr", "--json"])
    assert result.exit_code == 0, result.output
    [item] = json.loads(result.output)
    assert (item["kind"], item["plugin"]) == ("baselines", "sklearn")
    schema = item["schema"]
    assert schema["additionalProperties"] is False  # unknown keys are refused
    assert schema["properties"]["max_iter"]["default"] == 1_000_000
    assert schema["properties"]["max_iter"]["minimum"] == 1
    assert schema["properties"]["kernel"]["anyOf"][0]["items"]["enum"] == [
        "linear", "poly", "rbf", "sigmoid",
    ]  # fmt: skip
    text = runner.invoke(cli, ["plugins", "--options", "hf"]).output
    assert text.startswith("backend 'hf' (plugin hf): surveysim_hf.backend:HFBackend")
    assert "  lora_r (integer; default 8)\n      LoRA rank." in text
    text = runner.invoke(cli, ["plugins", "--options", "marginal"]).output
    assert "baseline 'marginal' (plugin std)" in text and "takes no options" in text


def test_declared_options_are_the_objects_own(plugins):
    """A plugin's declared options model must be the one its object validates with."""
    declared = [
        entry
        for kind in ("backends", "losses", "baselines")
        for entry in plugins.registry(kind).entries()
        if entry.options is not UNDECLARED
    ]
    # hf, cross_entropy, the two penalty losses, svr and catboost
    assert len(declared) >= 6, declared
    for entry in declared:
        assert entry.options_model() is getattr(entry.load(), "Options", None), entry


# -- python -m surveysim, exit codes ----------------------------------------------------------------
def test_python_dash_m_surveysim():
    proc = surveysim("--help")
    assert proc.returncode == 0
    assert "validate" in proc.stdout and "plugins" in proc.stdout


class _FailingCommandPlugin:
    @hookimpl
    def register_commands(self, cli):
        @cli.command("fail-at-runtime")
        def fail() -> None:
            raise RunError("the backend stopped")


def exit_code_of(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    from surveysim_core.cli import main

    monkeypatch.setattr(sys, "argv", ["surveysim", *args])
    with pytest.raises(SystemExit) as stop:
        main()
    return stop.value.code, capsys.readouterr().err


def test_exit_codes_tell_the_kind_of_error(tmp_path, monkeypatch, capsys, global_plugins):
    """0 ok, 2 usage, 3 config, 4 data, 5 plugin, 6 runtime (docs/user-guide.md)."""
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"survey": "evshift"}), encoding="utf-8")
    assert exit_code_of(monkeypatch, capsys, "validate", str(good))[0] == 0
    assert exit_code_of(monkeypatch, capsys, "validate", str(good), "--frobnicate")[0] == 2
    assert exit_code_of(monkeypatch, capsys, "no-such-command")[0] == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"survey": "evshift", "split": {"trian": 1}}), encoding="utf-8")
    code, err = exit_code_of(monkeypatch, capsys, "validate", str(bad))
    assert (code, "split.trian" in err) == (3, True)
    data = tmp_path / "answers.csv"
    data.write_text("subject_id,question\ns1,initial_preference\n", encoding="utf-8")
    broken = tmp_path / "data.yaml"
    broken.write_text(
        yaml.safe_dump({
            "survey": "evshift", "data": {"source": "file", "path": str(data)},
            "baselines": [{"name": "random"}], "output": {"dir": str(tmp_path / "runs")},
        }),
        encoding="utf-8",
    )  # fmt: skip
    code, err = exit_code_of(monkeypatch, capsys, "run", str(broken))
    assert code == 4, err
    assert str(data) in err
    code, err = exit_code_of(monkeypatch, capsys, "data", "synth", "no-such-survey", "--out", "x")
    assert (code, "unknown survey 'no-such-survey'" in err) == (5, True)
    out = tmp_path / "pop"
    assert exit_code_of(monkeypatch, capsys, "data", "synth", "evshift", "--out", str(out),
                        "--subjects", "20")[0] == 0  # fmt: skip
    code, err = exit_code_of(monkeypatch, capsys, "data", "synth", "evshift", "--out", str(out))
    assert (code, "already exists" in err) == (2, True)  # refused, nothing overwritten
    global_plugins.register(_FailingCommandPlugin(), "failing")
    code, err = exit_code_of(monkeypatch, capsys, "fail-at-runtime")
    assert (code, err) == (6, "Error: the backend stopped\n")


# -- run --json and summary.json ---------------------------------------------------------------------
def test_run_json_prints_the_summary_it_writes(tmp_path, runner, satisfaction_cli_plugins):
    from surveysim_core.cli import build_cli

    config = {
        "survey": "satisfaction",
        "split": {"train": 0.5, "val": 0.25, "test": 0.25, "seed": 0},
        "baselines": [{"name": "marginal"}],
        "evaluation": {"bootstrap": 10, "metrics": ["rmse", "kl"]},
        "output": {"dir": str(tmp_path / "runs")},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = runner.invoke(
        build_cli(), ["run", str(path), "--json", "--run-dir", str(tmp_path / "r")]
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    written = json.loads((tmp_path / "r" / "summary.json").read_text(encoding="utf-8"))
    assert printed == written
    assert printed["run_dir"] == str(tmp_path / "r") and printed["survey"] == "satisfaction"
    assert printed["finished"] is True and printed["timings_s"]["total"] > 0
    assert "marginal" in printed["systems"]
    rows = [r for r in printed["results"] if r["system"] == "marginal" and r["metric"] == "rmse"]
    # its sampled answers, and its mean as the point prediction (the ``expected`` readout)
    assert sorted(r["readout"] for r in rows) == ["answer", "expected"]
    rows = [r for r in rows if r["readout"] == "answer"]  # tells a system's readouts apart
    assert len(rows) == 1 and rows[0]["question"] == "satisfaction"
    assert rows[0]["temperature"] is None  # a baseline has no temperature: null, never NaN
    assert rows[0]["ci_low"] <= rows[0]["value"] <= rows[0]["ci_high"]
    assert 0 < rows[0]["value"] < 4  # answers are 1..5


class _FullDiskPlugin:
    """Commands whose writer fails the way a library does on a full disk, and with a bug."""

    @hookimpl
    def register_commands(self, cli):
        @cli.command("save-on-full-disk")
        def full() -> None:
            class LibraryError(Exception):
                pass

            raise LibraryError(
                "Error while serializing: I/O error: No space left on device (os error 28)"
            )

        @cli.command("save-read-only")
        def read_only() -> None:
            import errno

            raise OSError(errno.EROFS, "Read-only file system", "/x/adapter.safetensors")

        @cli.command("buggy")
        def buggy() -> None:
            raise ValueError("a bug (os error 99)")


def test_a_full_disk_outside_the_atomic_writers_is_exit_7_not_a_traceback(
    monkeypatch, capsys, global_plugins
):
    global_plugins.register(_FullDiskPlugin(), "full-disk")
    code, err = exit_code_of(monkeypatch, capsys, "save-on-full-disk")
    assert code == 7 and err.startswith("Error: cannot write a result: No space left on device")
    assert "continue with --resume" in err
    code, err = exit_code_of(monkeypatch, capsys, "save-read-only")
    assert (code, err.split(";")[0]) == (
        7,
        "Error: cannot write /x/adapter.safetensors: Read-only file system",
    )
    # anything else is still a bug, with its traceback
    monkeypatch.setattr(sys, "argv", ["surveysim", "buggy"])
    from surveysim_core.cli import main

    with pytest.raises(ValueError, match="a bug"):
        main()


def test_validate_says_a_pilot_config_is_checked_by_pilot(runner, cli):
    result = runner.invoke(cli, ["validate", str(REPO / "surveys" / "pilot-example.yaml")])
    assert result.exit_code != 0
    message = str(result.exception)
    assert "unknown key" in message  # the error itself stays
    assert "is a `surveysim pilot` configuration" in message
    assert "surveysim pilot --check " in message


def test_validate_gives_no_pilot_hint_for_a_broken_run_config(tmp_path, runner, cli):
    path = tmp_path / "run.yaml"
    path.write_text("survey: evshift\nsplitt: {}\n", encoding="utf-8")
    result = runner.invoke(cli, ["validate", str(path)])
    assert result.exit_code != 0
    assert "splitt" in str(result.exception)
    assert "checks run configurations" not in str(result.exception)
