"""Reliability: every bad input or fault of issue 14 gets a named error (exit 2, message naming
the file, key or row, nothing partial left) or a documented, tested behaviour; run directories
are written atomically and locked; Ctrl-C and broken plugins are handled."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pandas as pd
import pytest
import yaml

from surveysim_core import hookimpl
from surveysim_core.answers import AnswerDistribution
from surveysim_core.errors import ConfigError, DataError, OutputError, PluginError
from surveysim_core.files import DirectoryLock, LockHeld, atomic_write, atomic_write_text
from surveysim_core.protocols import Progress
from surveysim_core.run import execute
from surveysim_core.rundir import RunDir
from surveysim_core.survey import Survey, SurveySpec
from tests.conftest import SATISFACTION_SPEC, synthesize_satisfaction

QUIET = Progress(lambda message: None)


def cli_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """``surveysim ARGS`` through the real entry point (``main``), in this process.

    Any exception other than SystemExit escapes and fails the test: that is a traceback."""
    from surveysim_core.cli import main

    monkeypatch.setattr(sys, "argv", ["surveysim", *args])
    code = 0
    try:
        main()  # with standalone_mode=False, a success returns
    except SystemExit as exc:
        code = 0 if exc.code is None else exc.code
    out, err = capsys.readouterr()
    return code, out, err


def write_config(path: Path, tmp_path: Path, **changes) -> Path:
    data = {
        "survey": "satisfaction",
        "data": {"subjects": 60, "seed": 1},
        "baselines": [{"name": "random"}, {"name": "marginal"}],
        "evaluation": {"bootstrap": 20},
        "output": {"dir": str(tmp_path / "runs")},
    }
    for key, value in changes.items():
        node = data
        *parents, last = key.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def satisfaction_rows(n: int = 40) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "subject_id": [f"p{i:03d}" for i in range(n)],
            "region": ["North", "South"] * (n // 2),
            "question": "satisfaction",
            "answer": [str(1 + i % 5) for i in range(n)],
        }
    )


def data_file(tmp_path: Path, frame: pd.DataFrame, name: str = "data.csv") -> str:
    path = tmp_path / name
    if name.endswith(".jsonl"):
        path.write_text(
            "\n".join(json.dumps(r) for r in frame.to_dict("records")) + "\n", encoding="utf-8"
        )
    else:
        frame.to_csv(path, index=False)
    return str(path)


def with_answer(tmp_path: Path, value, name: str = "data.csv") -> dict:
    frame = satisfaction_rows().astype(object)
    frame.loc[0, "answer"] = value
    return {"data": {"source": "file", "path": data_file(tmp_path, frame, name)}}


def runs_left(tmp_path: Path) -> list[str]:
    base = tmp_path / "runs"
    # run directories, not the ``latest`` link
    return sorted(p.name for p in base.iterdir() if not p.is_symlink()) if base.is_dir() else []


# -- one case per input listed in issue 14 -------------------------------------------------------
# (id, command, config changes or a set-up function, expected text in the error, exit status:
# 3 configuration, 4 data, 7 output; see surveysim_core/errors.py)
def _population_with_training_subjects(tmp_path: Path) -> dict:
    pop = tmp_path / "population.csv"
    pd.DataFrame({"subject_id": [f"p{i:03d}" for i in range(60)], "region": "North"}).to_csv(
        pop, index=False
    )
    return {"evaluation": {"population": {"name": "file", "options": {"path": str(pop)}}}}


def _file_as_output_dir(tmp_path: Path) -> dict:
    (tmp_path / "a-file").write_text("x")
    return {"output": {"dir": str(tmp_path / "a-file")}}


def _subject_ids_1_and_1_0(tmp_path: Path) -> dict:
    frame = satisfaction_rows()
    frame.loc[0, "subject_id"], frame.loc[1, "subject_id"] = "1", "1.0"
    frame.loc[1, "region"] = "North"
    return {"data": {"source": "file", "path": data_file(tmp_path, frame)}}


def _few_subjects(tmp_path: Path) -> dict:
    return {"data": {"source": "file", "path": data_file(tmp_path, satisfaction_rows(6))}}


def _missing_model(tmp_path: Path) -> dict:
    return {"backend": {"name": "hf", "options": {"model": str(tmp_path / "no-such-model")}}}


CONFIG_CASES = [
    ("negative seed", "validate", {"data": {"seed": -5}}, "data.seed", 3),
    ("huge seed", "validate", {"split": {"seed": 2**70}}, "split.seed", 3),
    ("temperatures []", "validate", {"decoding": {"temperatures": []}}, "at least one", 3),
    ("temperatures nan", "validate", {"decoding": {"temperatures": [float("nan")]}}, "finite", 3),
    ("temperatures inf", "validate", {"decoding": {"temperatures": [float("inf")]}}, "finite", 3),
    ("questions []", "validate", {"questions": []}, "questions", 3),
    ("duplicate systems", "validate",
     {"backend": {"name": "hf", "systems": ["zero_shot", "zero_shot"]}}, "systems listed twice", 3),
    ("missing model folder", "validate", _missing_model, "no such folder", 3),
    ("output.dir a file", "run", _file_as_output_dir, "is a file", 7),
    ("answer 1e1", "run", lambda t: with_answer(t, "1e1"), "row 1, column answer: '1e1'", 4),
    ("answer 5_0", "run", lambda t: with_answer(t, "5_0"), "row 1, column answer: '5_0'", 4),
    ("Arabic-Indic digit", "run", lambda t: with_answer(t, "\u0665"), "row 1, column answer", 4),
    ("JSON true", "run", lambda t: with_answer(t, True, "data.jsonl"), "row 1, column answer", 4),
    ("subject ids 1 and 1.0", "run", _subject_ids_1_and_1_0, "same id written two ways", 4),
    ("fewer than 10 subjects", "run", _few_subjects, "at least 10", 4),
    ("population of training subjects", "run", _population_with_training_subjects,
     "training or validation split", 3),
]  # fmt: skip


@pytest.mark.parametrize(
    ("command", "changes", "expected", "status"),
    [case[1:] for case in CONFIG_CASES],
    ids=[case[0] for case in CONFIG_CASES],
)
def test_bad_config_or_data_is_a_named_error_with_its_status_and_no_run_left(
    command, changes, expected, status, tmp_path, monkeypatch, capsys, satisfaction_cli_plugins
):
    changes = changes(tmp_path) if callable(changes) else changes
    config = tmp_path / "run.yaml"
    data = yaml.safe_load(write_config(config, tmp_path).read_text())
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    code, out, err = cli_main(monkeypatch, capsys, command, str(config))
    assert code == status, (out, err)
    assert expected in err, err
    assert "Traceback" not in err
    if command == "run":  # a fresh run that failed on its input leaves no directory behind
        assert runs_left(tmp_path) == [], runs_left(tmp_path)


def test_non_utf8_and_duplicate_keys_in_a_config_are_named(
    tmp_path, monkeypatch, capsys, satisfaction_cli_plugins
):
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("survey: satisfaction\n# caf\xe9\n".encode("latin-1"))
    code, _, err = cli_main(monkeypatch, capsys, "validate", str(latin))
    assert code == 3 and f"{latin}: not UTF-8 text (byte 26)" in err, err
    dup = tmp_path / "dup.yaml"
    dup.write_text("survey: satisfaction\ndata:\n  seed: 1\n  seed: 2\n", encoding="utf-8")
    code, _, err = cli_main(monkeypatch, capsys, "validate", str(dup))
    assert code == 3 and f"{dup}: line 4, column 3" in err and "'seed' is given twice" in err, err


@pytest.mark.parametrize("subjects", ["-5", "0"])
def test_data_synth_refuses_too_few_subjects(
    subjects, tmp_path, monkeypatch, capsys, satisfaction_cli_plugins
):
    out = tmp_path / "out"
    code, _, err = cli_main(
        monkeypatch, capsys, "data", "synth", "satisfaction", "--out", str(out), "--subjects",
        subjects,
    )  # fmt: skip
    assert code == 3 and f"--subjects: {subjects} subjects; give at least 10" in err, err
    assert not (out / "responses.csv").exists()


def test_read_only_output_folder_is_an_output_error(
    tmp_path, monkeypatch, capsys, satisfaction_cli_plugins
):
    base = tmp_path / "runs"
    base.mkdir()
    base.chmod(0o500)
    real_mkdir = os.mkdir
    if os.geteuid() == 0:  # root ignores permissions: the kernel's answer is simulated

        def mkdir(path, *args, **kwargs):
            if Path(path).parent == base:
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(os, "mkdir", mkdir)
    try:
        code, _, err = cli_main(
            monkeypatch, capsys, "run", str(write_config(tmp_path / "c.yaml", tmp_path))
        )
    finally:
        base.chmod(0o700)
    assert code == 7 and "Permission denied" in err and str(base) in err, err


def test_full_disk_while_writing_results_keeps_what_was_written(
    tmp_path, monkeypatch, satisfaction_plugins
):
    from surveysim_core.config import load_config

    config = load_config(write_config(tmp_path / "c.yaml", tmp_path))
    run_dir = tmp_path / "run"
    real = pd.DataFrame.to_csv

    def full_disk(self, path=None, *args, **kwargs):
        if path is not None and "metrics.csv" in str(path) and "systems" not in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_csv", full_disk)
    with pytest.raises(OutputError, match=r"metrics\.csv: No space left on device"):
        execute(config, "c.yaml", satisfaction_plugins, run_dir=str(run_dir), progress=QUIET)
    monkeypatch.undo()
    names = sorted(p.name for p in run_dir.rglob("*"))
    assert not [n for n in names if n.endswith(".tmp")], names  # no temporary file left
    assert (run_dir / "systems" / "random" / "metrics.csv").is_file()  # earlier results kept
    assert not (run_dir / "status.json").exists() and not (run_dir / ".lock").exists()
    again = execute(
        config, "c.yaml", satisfaction_plugins, resume=True, run_dir=str(run_dir), progress=QUIET
    )
    assert (again.dir / "status.json").is_file()


def test_template_runtime_error_is_a_config_error_naming_the_template(
    tmp_path, satisfaction_plugins
):
    from surveysim_core.config import load_config

    broken = Survey(
        spec=SurveySpec.model_validate(
            {**SATISFACTION_SPEC, "name": "broken", "templates": {"system": "{{ 1 / 0 }}"}}
        ),
        source="broken.yaml",
        synthesize=synthesize_satisfaction,
    )

    class BrokenPlugin:
        @hookimpl
        def register_surveys(self, register):
            register("broken", broken)

    satisfaction_plugins.register(BrokenPlugin(), "broken-plugin")
    try:
        config = load_config(write_config(tmp_path / "c.yaml", tmp_path, survey="broken"))
        config = config.model_copy(
            update={"backend": None, "survey": "broken"}
        )  # baselines only need no prompt; render the system prompt directly
        from surveysim_core.run import plan_run

        plan = plan_run(config, "c.yaml", satisfaction_plugins)
        with pytest.raises(
            ConfigError, match=r"broken\.yaml: template 'system' failed: ZeroDivisionError"
        ):
            plan.renderer.render("system", demographics="{}", respondent={})
    finally:
        satisfaction_plugins.unregister("broken-plugin")


def test_context_values_not_in_the_survey_are_named(tmp_path, satisfaction_plugins):
    from surveysim_core.data import validate_long
    from surveysim_core.run import plan_run

    spec = SurveySpec.model_validate(
        {
            **SATISFACTION_SPEC,
            "name": "ctx",
            "questions": [{**SATISFACTION_SPEC["questions"][0], "context": ["intervention"]}],
            "context_values": {"intervention": {"1": "Statement one", "2": "Statement two"}},
        }
    )
    frame = satisfaction_rows(4)
    frame["intervention"] = ["1", "2", "99", "1"]

    class CtxPlugin:
        @hookimpl
        def register_surveys(self, register):
            register("ctx", Survey(spec=spec, source="ctx.yaml"))

    satisfaction_plugins.register(CtxPlugin(), "ctx-plugin")
    try:
        from surveysim_core.config import RunConfig

        plan = plan_run(RunConfig(survey="ctx"), "c.yaml", satisfaction_plugins)
        with pytest.raises(DataError, match="row 3, column intervention: '99' is not one of"):
            validate_long(frame, spec, plan.answer_types, "d.csv")
    finally:
        satisfaction_plugins.unregister("ctx-plugin")


def test_formula_like_ids_are_escaped_in_csv_outputs(tmp_path, satisfaction_plugins):
    from surveysim_core.config import load_config

    frame = satisfaction_rows()
    frame.loc[frame["subject_id"] == "p000", "subject_id"] = '=HYPERLINK("http://x","y")'
    frame.loc[frame["subject_id"] == "p001", "subject_id"] = "-7"  # a number: left as it is
    path = data_file(tmp_path, frame)
    config = load_config(
        write_config(tmp_path / "c.yaml", tmp_path, data={"source": "file", "path": path},
                     split={"train": 0.5, "val": 0.0, "test": 0.5})
    )  # fmt: skip
    run = execute(
        config, "c.yaml", satisfaction_plugins, run_dir=str(tmp_path / "r"), progress=QUIET
    )
    text = "\n".join(p.read_text() for p in run.dir.rglob("*.csv"))
    assert "'=HYPERLINK" in text
    assert "\n=HYPERLINK" not in text and ",=HYPERLINK" not in text
    splits = pd.read_csv(run.dir / "splits.csv", dtype=str)
    assert "-7" in set(splits["subject_id"])


# -- resume --------------------------------------------------------------------------------------
def test_resume_with_nothing_to_resume_says_so_and_fails(
    tmp_path, monkeypatch, capsys, satisfaction_cli_plugins
):
    config = write_config(tmp_path / "c.yaml", tmp_path)
    code, _, err = cli_main(monkeypatch, capsys, "run", str(config), "--resume")
    assert code == 3 and "nothing to resume" in err, err
    code, _, err = cli_main(
        monkeypatch, capsys, "run", str(config), "--resume", "--run-dir", str(tmp_path / "x")
    )
    assert code == 3 and "nothing to resume here" in err, err
    assert runs_left(tmp_path) == [] and not (tmp_path / "x").exists()


def test_resume_with_a_changed_config_names_the_changed_keys(
    tmp_path, monkeypatch, capsys, satisfaction_cli_plugins
):
    config = write_config(tmp_path / "c.yaml", tmp_path)
    code, _, err = cli_main(monkeypatch, capsys, "run", str(config))
    assert code == 0, err
    [first] = runs_left(tmp_path)
    changed = ("--set", "data.seed=2", "--set", "evaluation.bootstrap=30")
    # a named run directory of another configuration: refused, naming the keys
    code, _, err = cli_main(monkeypatch, capsys, "run", str(config), "--resume", "--run-dir",
                            str(tmp_path / "runs" / first), *changed)  # fmt: skip
    assert code == 3, err
    assert "data.seed: 1 -> 2" in err and "evaluation.bootstrap: 20 -> 30" in err, err
    # the latest run of output.dir: a new run, saying which keys differ (never silently)
    code, _, err = cli_main(monkeypatch, capsys, "run", str(config), "--resume", *changed)
    assert code == 0, err
    assert "data.seed: 1 -> 2" in err and "starting a new run" in err, err
    assert len(runs_left(tmp_path)) == 2


def test_synthetic_data_reused_on_resume_is_checked_against_its_hash(
    tmp_path, satisfaction_plugins
):
    from surveysim_core.config import load_config

    config = load_config(write_config(tmp_path / "c.yaml", tmp_path))
    run_dir = tmp_path / "run"
    execute(config, "c.yaml", satisfaction_plugins, run_dir=str(run_dir), progress=QUIET)
    responses = run_dir / "data" / "responses.csv"
    lines = responses.read_text().splitlines()
    responses.write_text("\n".join(lines[: len(lines) // 2]) + "\n")  # cut, as a full disk would
    (run_dir / "systems" / "marginal" / "metrics.csv").unlink()
    with pytest.raises(DataError, match=r"responses\.csv: changed or missing since this run"):
        execute(
            config, "c.yaml", satisfaction_plugins, resume=True, run_dir=str(run_dir),
            progress=QUIET,
        )  # fmt: skip


def test_an_interrupted_generation_leaves_no_data_behind(tmp_path, satisfaction_plugins):
    from surveysim_core.rundir import synthetic_data

    def half_then_full_disk(out_dir: Path, subjects, seed) -> Path:
        (out_dir / "responses.csv").write_text("subject_id,region,question,answer\np1,North,")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputError, match="No space left on device"):
        synthetic_data(tmp_path / "data", half_then_full_disk, 60, 0, lambda m: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    path = synthetic_data(tmp_path / "data", synthesize_satisfaction, 60, 0, lambda m: None)
    assert len(pd.read_csv(path)) == 60


def test_data_synth_leaves_no_truncated_file(tmp_path, monkeypatch, capsys, global_plugins):
    def failing(out_dir: Path, subjects, seed) -> Path:
        (out_dir / "truth.json").write_text("{}")
        (out_dir / "responses.csv").write_text("subject_id,region\np1,No")
        raise OSError(errno.ENOSPC, "No space left on device")

    survey = Survey(spec=SurveySpec.model_validate(SATISFACTION_SPEC), synthesize=failing)

    class P:
        @hookimpl
        def register_surveys(self, register):
            register("failing", survey)

    global_plugins.register(P(), "failing-plugin")
    out = tmp_path / "out"
    code, _, err = cli_main(monkeypatch, capsys, "data", "synth", "failing", "--out", str(out))
    assert code == 7 and "No space left on device" in err, err
    assert sorted(p.name for p in out.iterdir()) == []


# -- the lock ------------------------------------------------------------------------------------
def _lock_of(folder: Path, pid: int, host: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".lock").write_text(
        json.dumps({"pid": pid, "hostname": host or socket.gethostname()})
    )


def test_a_second_writer_is_refused_naming_the_holders_pid(tmp_path, satisfaction_plugins):
    from surveysim_core.config import load_config

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run_dir = tmp_path / "run"
        _lock_of(run_dir, holder.pid)
        config = load_config(write_config(tmp_path / "c.yaml", tmp_path))
        with pytest.raises(LockHeld, match=f"pid {holder.pid} on {socket.gethostname()}"):
            execute(config, "c.yaml", satisfaction_plugins, run_dir=str(run_dir), progress=QUIET)
        assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]  # nothing written
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, satisfaction_plugins):
    from surveysim_core.config import load_config

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run_dir = tmp_path / "run"
    _lock_of(run_dir, dead.pid)
    config = load_config(write_config(tmp_path / "c.yaml", tmp_path))
    run = execute(config, "c.yaml", satisfaction_plugins, run_dir=str(run_dir), progress=QUIET)
    assert (run.dir / "status.json").is_file()
    assert not (run.dir / ".lock").exists()  # released at the end


def test_a_lock_from_another_host_is_not_taken(tmp_path):
    _lock_of(tmp_path / "run", 1, "some-other-host")
    with pytest.raises(LockHeld, match="pid 1 on some-other-host"):
        DirectoryLock(tmp_path / "run").acquire()


def test_two_processes_racing_for_one_run_dir_one_wins(tmp_path):
    """Real processes, started together: exactly one takes the lock (O_CREAT | O_EXCL)."""
    script = (
        "import sys, time; from pathlib import Path;"
        "from surveysim_core.files import DirectoryLock, LockHeld\n"
        "lock = DirectoryLock(Path(sys.argv[1]))\n"
        "try:\n    lock.acquire()\nexcept LockHeld as e:\n    print('refused', e); sys.exit(3)\n"
        "print('won'); time.sleep(2); lock.release()"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "run")],
                         stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]  # fmt: skip
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    assert sum(o.startswith("won") for o in outputs) == 1, outputs
    assert sum(o.startswith("refused") for o in outputs) == 3, outputs


def test_atomic_write_keeps_the_old_file_on_failure_and_uses_unique_names(tmp_path):
    target = tmp_path / "metrics.csv"
    atomic_write_text(target, "old\n")
    seen: list[str] = []

    def failing(tmp: Path) -> None:
        seen.append(tmp.name)
        tmp.write_text("half")
        raise RuntimeError("boom")

    for _ in range(2):
        with pytest.raises(RuntimeError):
            atomic_write(target, failing)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]
    assert len(set(seen)) == 2 and all(n.endswith(".tmp") for n in seen)  # unique each time


def test_run_dir_is_exclusive_for_new_runs(tmp_path, satisfaction_plugins):
    from surveysim_core.config import load_config

    config = load_config(write_config(tmp_path / "c.yaml", tmp_path))
    a = execute(config, "c.yaml", satisfaction_plugins, progress=QUIET)
    b = execute(config, "c.yaml", satisfaction_plugins, progress=QUIET)
    assert a.dir != b.dir
    with pytest.raises(ConfigError, match="a run is already there"):
        execute(config, "c.yaml", satisfaction_plugins, run_dir=str(a.dir), progress=QUIET)
    rd = RunDir(tmp_path / "plain", lock=True)
    assert rd.created and rd.lock.held
    rd.close()
    assert not (tmp_path / "plain" / ".lock").exists()


# -- Ctrl-C and plugins --------------------------------------------------------------------------
class InterruptingCommand:
    @hookimpl
    def register_commands(self, cli):
        @cli.command(name="interrupt-test")
        def interrupt():
            raise KeyboardInterrupt


class BrokenCommands:
    @hookimpl
    def register_commands(self, cli):
        @cli.command(name="half-added")
        def half():
            click.echo("should not be reachable")

        raise RuntimeError("cannot add the rest")


def test_ctrl_c_prints_the_resume_hint_and_exits_130(monkeypatch, capsys, global_plugins):
    global_plugins.register(InterruptingCommand(), "interrupting")
    try:
        code, _, err = cli_main(monkeypatch, capsys, "interrupt-test")
    finally:
        from surveysim_core.cli import cli

        cli.commands.pop("interrupt-test", None)
    assert code == 130
    assert "Interrupted; resume with --resume." in err and "Aborted" not in err, err


def test_a_plugin_failing_in_register_commands_disables_only_its_commands(
    monkeypatch, capsys, global_plugins
):
    global_plugins.register(BrokenCommands(), "broken-commands")
    code, out, err = cli_main(monkeypatch, capsys, "--help")
    assert code == 0
    assert "plugin 'broken-commands' failed in register_commands" in err
    assert "its commands are disabled" in err
    assert "half-added" not in out and "validate" in out and "run" in out


class TemplateOverride:
    @hookimpl
    def register_templates(self, register):
        register("system", "Overridden persona {{ demographics }}")


def test_overriding_a_core_template_is_reported(monkeypatch, capsys, global_plugins):
    global_plugins.register(TemplateOverride(), "override-plugin")
    code, out, _ = cli_main(monkeypatch, capsys, "plugins")
    assert code == 0
    block = out.split("override-plugin", 1)[1]
    assert "overrides core template(s): system" in block.split("\n\n")[0]
    info = {p.name: p.overrides for p in global_plugins.info()}
    assert info["override-plugin"] == ["system"] and info["std"] == []


class WrongObjects:
    def __init__(self, kind: str, target):
        self.kind, self.target = kind, target

    @hookimpl
    def register_surveys(self, register):
        if self.kind == "surveys":
            register("bad-survey", self.target)

    @hookimpl
    def register_metrics(self, register):
        if self.kind == "metrics":
            register("bad-metric", self.target)


@pytest.mark.parametrize(
    ("kind", "target", "expected"),
    [
        ("surveys", 42, "registered surveys 'bad-survey' as 42 (int); expected a surveysim"),
        ("metrics", print, "registered metrics 'bad-metric' as <built-in function print>"),
        ("metrics", "builtins:print", "expected a class"),
        ("metrics", "not a path", "must be a 'module:attribute' path"),
    ],
)
def test_wrong_registered_objects_are_rejected_naming_the_plugin(kind, target, expected, bare):
    bare.register(WrongObjects(kind, target), "wrong-plugin")
    with pytest.raises(PluginError, match="plugin 'wrong-plugin'") as err:
        registry = bare.registry(kind)
        registry.get(f"bad-{kind[:-1]}")
    assert expected in str(err.value)


@pytest.fixture
def bare():
    from surveysim_core.plugins import Plugins

    return Plugins(load_entry_points=False)


# -- KL of a system whose answers mostly fail ----------------------------------------------------
def test_kl_is_not_reported_for_a_system_whose_answers_mostly_fail():
    from surveysim_std.answer_types import IntegerAnswer, IntegerOptions
    from surveysim_std.metrics import KL, Wasserstein

    answer = IntegerAnswer(IntegerOptions(min=1, max=2))
    human = np.array([1.0, 1.0, 2.0, 2.0])
    # the humans' own distribution, but only 1% of the mass valid: rescaling would make it perfect
    rare = AnswerDistribution(np.array([[0.01, 0.0], [0.01, 0.0], [0.0, 0.01], [0.0, 0.01]]), True)
    assert np.isnan(KL()(human, rare, answer)) and np.isnan(Wasserstein()(human, rare, answer))
    # 3 of 4 answers valid (1, 1, 2): counts 2:1, rescaled to 4 -> 8/3:4/3; smoothed with 0.5
    # h = (2.5/5, 2.5/5); m = (19/6 / 5, 11/6 / 5) = (19/30, 11/30)
    mostly = AnswerDistribution(np.array([[1.0, 0], [1.0, 0], [0, 1.0], [0, 0]]), False)
    expected = 0.5 * np.log(0.5 / (19 / 30)) + 0.5 * np.log(0.5 / (11 / 30))
    assert KL()(human, mostly, answer) == pytest.approx(expected, rel=1e-12)


def test_data_synth_never_replaces_existing_data(
    tmp_path, monkeypatch, capsys, satisfaction_cli_plugins
):
    out = tmp_path / "out"
    out.mkdir()
    (out / "responses.csv").write_text("mine\n")
    code, _, err = cli_main(
        monkeypatch, capsys, "data", "synth", "satisfaction", "--out", str(out), "--subjects", "20"
    )
    assert code == 2 and "responses.csv already exist" in err, err
    assert (out / "responses.csv").read_text() == "mine\n"
    assert sorted(p.name for p in out.iterdir()) == ["responses.csv"]  # no staging left


def test_pool_workers_ignore_ctrl_c_and_the_main_process_does_not():
    import signal

    from joblib import Parallel, delayed

    from surveysim_core.interrupts import ignore_interrupts_in_worker

    def handler_after_call(_: int) -> bool:
        ignore_interrupts_in_worker()
        return signal.getsignal(signal.SIGINT) == signal.SIG_IGN

    assert Parallel(n_jobs=2)(delayed(handler_after_call)(i) for i in range(2)) == [True, True]
    before = signal.getsignal(signal.SIGINT)
    ignore_interrupts_in_worker()
    assert signal.getsignal(signal.SIGINT) is before  # the main process still gets Ctrl-C


def test_new_run_directories_are_created_exclusively(tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from surveysim_core.config import load_config
    from surveysim_core.rundir import choose_run_dir

    config = load_config(write_config(tmp_path / "c.yaml", tmp_path))
    monkeypatch.setattr("time.strftime", lambda fmt: "20260101-000000")  # one second for all
    with ThreadPoolExecutor(8) as pool:
        paths = list(pool.map(lambda _: choose_run_dir(config, False, None), range(8)))
    assert len(set(paths)) == 8 and all(p.is_dir() for p in paths)
    assert sorted(p.name for p in paths)[:2] == [
        "satisfaction-20260101-000000",
        "satisfaction-20260101-000000-1",
    ]


def test_ctrl_c_in_a_fresh_run_keeps_it_resumable(tmp_path, satisfaction_plugins, monkeypatch):
    from surveysim_core.config import load_config

    config = load_config(write_config(tmp_path / "c.yaml", tmp_path))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("surveysim_core.run.split_by_subject", interrupted)
    with pytest.raises(KeyboardInterrupt):
        execute(config, "c.yaml", satisfaction_plugins, progress=QUIET)
    monkeypatch.undo()
    [name] = runs_left(tmp_path)  # an error would have removed it; Ctrl-C keeps it
    run_dir = tmp_path / "runs" / name
    assert (run_dir / "data" / "data.sha256.json").is_file()  # the generated data is kept
    assert not (run_dir / ".lock").exists()
    run = execute(config, "c.yaml", satisfaction_plugins, resume=True, progress=QUIET)
    assert run.dir == run_dir and (run.dir / "status.json").is_file()


class Killed(BaseException):
    """A simulated kill: no ``except Exception`` catches it."""


def test_a_run_killed_before_any_file_operation_resumes_to_the_same_results(
    tmp_path, monkeypatch, satisfaction_plugins
):
    """A fault before each rename, mkdir or removal of a baseline-only run, for every position;
    the resumed run's metrics equal an uninterrupted run's, and nothing half-written is left."""
    import shutil

    from surveysim_core.config import load_config

    config = load_config(write_config(tmp_path / "c.yaml", tmp_path))
    whole = execute(config, "c.yaml", satisfaction_plugins, run_dir=str(tmp_path / "whole"),
                    progress=QUIET)  # fmt: skip
    expected = pd.read_csv(whole.dir / "metrics.csv")
    state = {"armed": False, "calls": 0, "fail_at": -1}

    def faulty(fn):
        def wrapped(*args, **kwargs):
            if state["armed"]:
                if state["calls"] == state["fail_at"]:
                    state["armed"] = False
                    raise Killed
                state["calls"] += 1
            return fn(*args, **kwargs)

        return wrapped

    for module, name in [(os, "replace"), (os, "rename"), (os, "mkdir"), (os, "unlink"),
                         (shutil, "rmtree")]:  # fmt: skip
        monkeypatch.setattr(module, name, faulty(getattr(module, name)))
    state.update(armed=True, calls=0, fail_at=-1)
    execute(config, "c.yaml", satisfaction_plugins, run_dir=str(tmp_path / "count"),
            progress=QUIET)  # fmt: skip
    n_ops = state["calls"]
    assert n_ops >= 10  # config, data, splits, two systems x 3 files, metrics, report, status
    for k in range(n_ops):
        run_dir = tmp_path / f"k{k}"
        state.update(armed=True, calls=0, fail_at=k)
        with pytest.raises(Killed):
            execute(config, "c.yaml", satisfaction_plugins, run_dir=str(run_dir), progress=QUIET)
        state["armed"] = False
        (run_dir / ".lock").unlink(missing_ok=True)  # as after a real kill: a dead pid's lock
        resume = (run_dir / "config.hash").exists()
        run = execute(config, "c.yaml", satisfaction_plugins, resume=resume,
                      run_dir=str(run_dir), progress=QUIET)  # fmt: skip
        pd.testing.assert_frame_equal(pd.read_csv(run.dir / "metrics.csv"), expected)
        left = [p.name for p in run_dir.rglob("*") if p.name.endswith(".tmp")]
        assert left == [], (k, left)


def test_resume_removes_what_a_killed_writer_left(tmp_path, satisfaction_plugins):
    from surveysim_core.config import load_config

    config = load_config(write_config(tmp_path / "c.yaml", tmp_path))
    run_dir = tmp_path / "run"
    execute(config, "c.yaml", satisfaction_plugins, run_dir=str(run_dir), progress=QUIET)
    stray = run_dir / "systems" / "random" / ".metrics.csv.abc123.tmp"
    stray.write_text("half")
    (run_dir / ".synth-xyz").mkdir()
    execute(config, "c.yaml", satisfaction_plugins, resume=True, run_dir=str(run_dir),
            progress=QUIET)  # fmt: skip
    assert not stray.exists() and not (run_dir / ".synth-xyz").exists()
    assert (run_dir / "systems" / "random" / "metrics.csv").is_file()


def test_data_of_an_earlier_version_is_adopted_only_if_whole(tmp_path):
    from surveysim_core.rundir import synthetic_data

    out = tmp_path / "data"
    synthesize_satisfaction(out, 60, 3)  # as an earlier version wrote it: no hashes
    path = synthetic_data(out, synthesize_satisfaction, 60, 3, lambda m: None)
    assert (out / "data.sha256.json").is_file() and len(pd.read_csv(path)) == 60
    cut = tmp_path / "cut"
    synthesize_satisfaction(cut, 60, 3)
    lines = (cut / "responses.csv").read_text().splitlines()
    (cut / "responses.csv").write_text("\n".join(lines[:20]) + "\n")
    with pytest.raises(DataError, match=r"responses\.csv: differs from the population seed 3"):
        synthetic_data(cut, synthesize_satisfaction, 60, 3, lambda m: None)
    assert len((cut / "responses.csv").read_text().splitlines()) == 20  # reported, not deleted
