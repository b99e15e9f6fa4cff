"""Multi-process launches: the main process chooses the run directory, the others follow."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from surveysim_core.errors import ConfigError, RunError
from surveysim_core.launch import agree_on_run_dir, handshake_file


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_share_the_run_directory_the_main_one_chose(tmp_path):
    """The launch line of surveys/evshift-paper.yaml, with torchrun and a baseline-only run."""
    pytest.importorskip("torch")
    config = {
        "survey": "evshift",
        "data": {"source": "synthetic", "subjects": 60, "seed": 0},
        "split": {"train": 0.5, "val": 0.25, "test": 0.25, "seed": 0},
        "baselines": [{"name": "marginal"}],
        "evaluation": {"bootstrap": 10, "metrics": ["rmse", "kl"]},
        "output": {"dir": "runs"},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    handshakes = tmp_path / "tmp"
    handshakes.mkdir()
    env = {**os.environ, "TMPDIR": str(handshakes), "OMP_NUM_THREADS": "1"}
    launch = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
        "-m", "surveysim", "run", "run.yaml", "--json",
    ]  # fmt: skip
    done = subprocess.run(
        launch, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "give --run-dir" not in done.stderr
    runs = [p for p in (tmp_path / "runs").iterdir() if not p.is_symlink()]
    assert len(runs) == 1, runs  # one directory for the launch, not one per process
    summary = json.loads(done.stdout)  # one summary: only the main process prints
    assert summary == json.loads((runs[0] / "summary.json").read_text(encoding="utf-8"))
    assert (tmp_path / summary["run_dir"]).resolve() == runs[0].resolve()
    # the second process read the main process's choice from the launch's handshake file
    [shake] = (handshakes / "surveysim-launch").glob("*.json")
    assert Path(json.loads(shake.read_text())["run_dir"]) == runs[0].resolve()


@pytest.fixture
def two_local_processes(monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29555")
    monkeypatch.setenv("SURVEYSIM_LAUNCH_TIMEOUT", "0.3")
    return monkeypatch


def test_followers_read_the_main_choice_of_the_same_launch(two_local_processes, tmp_path):
    chosen = tmp_path / "runs" / "x-1"
    two_local_processes.setenv("RANK", "0")
    assert agree_on_run_dir("abc", lambda: chosen) == chosen
    two_local_processes.setenv("RANK", "1")
    assert agree_on_run_dir("abc", lambda: pytest.fail("a follower never chooses")) == chosen
    # another configuration (or another launch: port, launcher process) has its own file
    with pytest.raises(RunError, match=r"process 1 waited 0\.3s .*give --run-dir"):
        agree_on_run_dir("other-config", lambda: chosen)
    [written] = (tmp_path / "surveysim-launch").glob("*.json")
    assert handshake_file("abc") == written
    two_local_processes.setenv("MASTER_PORT", "29556")
    assert handshake_file("abc") != written


def test_a_launch_over_several_machines_needs_run_dir(two_local_processes):
    two_local_processes.setenv("LOCAL_WORLD_SIZE", "1")
    two_local_processes.setenv("RANK", "0")
    with pytest.raises(ConfigError, match=r"several machines.*--run-dir"):
        agree_on_run_dir("abc", lambda: Path("x"))
