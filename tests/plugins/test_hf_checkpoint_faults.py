"""Checkpoints survive a kill at any instant: a fault is injected before each filesystem
operation of a save (and of the recovery on resume), and the resumed run must end exactly where
an uninterrupted run ends, losing at most one save interval."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from safetensors.torch import load_file
from surveysim_hf import checkpoint as ckpt
from surveysim_hf.backend import HFBackend
from surveysim_hf.losses import CrossEntropyLoss
from surveysim_hf.options import HFOptions
from surveysim_hf.testing import write_tiny_model
from surveysim_hf.train import read_train_log

from surveysim_core.protocols import Example, Prompt


class Killed(BaseException):
    """A simulated kill: a BaseException, so that no ``except Exception`` swallows it."""


class Faults:
    """Counts filesystem operations while armed and raises ``Killed`` before operation
    number ``fail_at`` (0-based); ``fail_at=None`` only counts."""

    OPS: ClassVar = [(os, "replace"), (os, "rename"), (os, "unlink"), (os, "rmdir"), (os, "mkdir"),
           (shutil, "rmtree"), (ckpt, "save_file")]  # fmt: skip

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.armed = False
        self.fail_at: int | None = None
        self.calls = 0
        for module, name in self.OPS:
            monkeypatch.setattr(module, name, self._wrap(getattr(module, name)))

    def _wrap(self, fn):
        def wrapped(*args, **kwargs):
            if self.armed:
                if self.calls == self.fail_at:
                    self.armed = False
                    raise Killed
                self.calls += 1
            return fn(*args, **kwargs)

        return wrapped

    def arm(self, fail_at: int | None) -> None:
        self.armed, self.fail_at, self.calls = True, fail_at, 0


# -- the swap alone, with tiny tensors: every fault in a save x every fault in the recovery ------
def save(folder: Path, step: int) -> None:
    ckpt.begin_checkpoint(folder)
    ckpt.save_rng(ckpt.staging(folder), 0)
    weights = {"w": torch.full((2,), float(step))}
    optimizer = {"state": {0: {"step": torch.tensor(float(step))}}, "param_groups": [{"lr": 1}]}
    ckpt.finish_checkpoint(folder, weights, optimizer, {"last_epoch": step}, {"global_step": step})


def loaded_step(folder: Path) -> int:
    state = ckpt.load_checkpoint(folder)
    step = state["trainer"]["global_step"]
    # every file of the copy belongs to the same save
    assert state["adapter"]["w"].tolist() == [float(step)] * 2
    assert state["scheduler"]["last_epoch"] == step
    assert state["optimizer"]["state"][0]["step"].item() == step
    return step


def count_ops(monkeypatch, tmp_path: Path, action) -> int:
    faults = Faults(monkeypatch)
    faults.arm(None)
    action(faults)
    faults.armed = False
    return faults.calls


def test_a_kill_before_any_operation_of_a_save_or_recovery_keeps_a_whole_checkpoint(
    tmp_path, monkeypatch
):
    folder = tmp_path / "count" / "checkpoint"
    save(folder, 1)
    n_save = count_ops(monkeypatch, tmp_path, lambda f: save(folder, 2))
    assert n_save >= 8  # mkdir, 3 tensor files, 4 JSON renames, the swap: a real count
    faults = Faults(monkeypatch)
    cases = 0
    steps: dict[tuple[int, int | None], int] = {}
    for k in range(n_save + 1):
        for j in [None, *range(12)]:  # recovery itself killed at each of its operations
            case = tmp_path / f"save{k}-recover{j}"
            folder = case / "checkpoint"
            save(folder, 1)
            faults.arm(k)
            with contextlib.suppress(Killed):
                save(folder, 2)
            faults.armed = False
            if j is not None:
                faults.arm(j)
                with contextlib.suppress(Killed):
                    ckpt.recover(folder)
                faults.armed = False
            assert ckpt.recover(folder), (k, j)
            steps[k, j] = loaded_step(folder)
            left = sorted(p.name for p in case.iterdir())
            assert left == ["checkpoint"], (k, j, left)
            cases += 1
    assert cases == (n_save + 1) * 13
    by_k = [steps[k, None] for k in range(n_save + 1)]
    # killed before the save began: the previous checkpoint; not killed: the new one; and once
    # a kill keeps the new one, every later kill does too (its marker was written)
    assert by_k[0] == 1 and by_k[-1] == 2
    assert by_k == sorted(by_k)
    # a kill during the recovery itself never changes which copy wins
    assert all(steps[k, j] == steps[k, None] for (k, j) in steps), steps


def test_a_checkpoint_of_an_earlier_version_without_marker_is_still_resumed(tmp_path):
    folder = tmp_path / "checkpoint"
    save(folder, 3)
    (folder / ckpt.COMPLETE).unlink()
    assert ckpt.recover(folder)
    assert loaded_step(folder) == 3


# -- end to end: fine-tuning killed inside a save, then resumed -----------------------------------
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny"))


def examples(n: int, answer: str, start: int = 0) -> list[Example]:
    return [
        Example(Prompt(f"act as {{age: {i % 7}}}", "Score:"), answer, "q1", float(answer), None,
                f"s{i}")
        for i in range(start, start + n)
    ]  # fmt: skip


OPTIONS = {"epochs": 2, "checkpoint_every": 1, "lora_dropout": 0.1, "learning_rate": 1e-2,
           "batch_size": 8, "progress_bars": False, "seed": 0, "lora_r": 2}  # fmt: skip
TRAIN, VAL = examples(16, "7"), examples(4, "7", 100)  # 2 steps per epoch, 4 in all


def fine_tune(model: Path, run_dir: Path, resume: bool, on_step=None) -> Path:
    hf = HFBackend(HFOptions(model=str(model), **OPTIONS), run_dir)
    return hf.fine_tune(TRAIN, VAL, CrossEntropyLoss(), run_dir / "adapter", resume, on_step)


def test_fine_tuning_killed_at_each_operation_of_a_save_resumes_to_the_same_adapter(
    tiny_model, tmp_path, monkeypatch
):
    whole = fine_tune(tiny_model, tmp_path / "whole", False)
    expected = load_file(whole / "adapter_model.safetensors")
    expected_log = read_train_log(whole / "train_log.csv")

    faults = Faults(monkeypatch)
    real_finish = ckpt.finish_checkpoint
    target_step = 3  # the save after step 3 (mid epoch 2); the one before is at step 2

    def finish(folder, adapter, optimizer, scheduler, trainer):
        if trainer["global_step"] == target_step and plan["k"] is not None:
            faults.arm(plan["k"])
        try:
            real_finish(folder, adapter, optimizer, scheduler, trainer)
        finally:
            plan["ops"] = faults.calls if faults.armed else plan["ops"]
            faults.armed = False

    plan: dict = {"k": -1, "ops": 0}
    monkeypatch.setattr(ckpt, "finish_checkpoint", finish)
    # count the operations of that save (fail_at=-1 never fires)
    fine_tune(tiny_model, tmp_path / "count", False)
    n_ops = plan["ops"]
    assert n_ops >= 8
    for k in range(n_ops):
        run_dir = tmp_path / f"k{k}"
        plan["k"] = k
        with pytest.raises(Killed):
            fine_tune(tiny_model, run_dir, False)
        plan["k"] = None
        steps: list[int] = []
        resumed = fine_tune(tiny_model, run_dir, True, on_step=steps.append)
        # resumed from the save before the killed one or from the killed one itself (if its
        # marker was written): at most one save interval lost, never a restart from step 1
        assert steps[0] in (target_step, target_step + 1), (k, steps)
        assert steps[-1] == 4, (k, steps)
        got = load_file(resumed / "adapter_model.safetensors")
        assert got.keys() == expected.keys()
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-6)
        log = read_train_log(resumed / "train_log.csv")
        assert [(r["epoch"], r["step"], r["split"]) for r in log] == [
            (r["epoch"], r["step"], r["split"]) for r in expected_log
        ], k
