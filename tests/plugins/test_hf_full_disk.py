"""A full disk while safetensors writes a checkpoint is a named OutputError, not a traceback.

safetensors writes through Rust and raises its own ``SafetensorError`` ("... No space left on
device (os error 28)"), not ``OSError``; the run must still say which folder could not be
written, keep the previous checkpoint, and exit with the output-error status.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError
from surveysim_hf import checkpoint as ckpt

from surveysim_core.errors import OutputError
from surveysim_core.files import disk_error


def save(folder: Path, step: int, size: int = 4) -> None:
    ckpt.begin_checkpoint(folder)
    weights = {"w": torch.full((size,), float(step))}
    optimizer = {"state": {0: {"step": torch.tensor(float(step))}}, "param_groups": [{"lr": 1}]}
    ckpt.finish_checkpoint(folder, weights, optimizer, {"last_epoch": step}, {"global_step": step})


def check_previous_kept(folder: Path) -> None:
    assert ckpt.recover(folder)
    state = ckpt.load_checkpoint(folder)
    assert state["trainer"]["global_step"] == 1
    assert state["adapter"]["w"].tolist() == [1.0] * 4


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Error while serializing: I/O error: No space left on device (os error 28)",
         "No space left on device"),
        ("Error while serializing: I/O error: Read-only file system (os error 30)",
         "Read-only file system"),
        ("Error while serializing: I/O error: Disk quota exceeded (os error 122)",
         "Disk quota exceeded"),
        ("Error while serializing: I/O error: Broken pipe (os error 32)", None),  # not a disk state
        ("header too large", None),
    ],
)  # fmt: skip
def test_disk_errors_are_recognised_in_a_library_error_text(text, expected):
    assert disk_error(SafetensorError(text)) == expected


def test_safetensors_full_disk_in_a_checkpoint_is_an_output_error(tmp_path, monkeypatch):
    folder = tmp_path / "checkpoint"
    save(folder, 1)

    def full(*args, **kwargs):
        raise SafetensorError(
            "Error while serializing: I/O error: No space left on device (os error 28)"
        )

    monkeypatch.setattr(ckpt, "save_file", full)
    with pytest.raises(
        OutputError, match=r"cannot write .*checkpoint\.tmp: No space left on device"
    ):
        save(folder, 2)
    monkeypatch.undo()
    check_previous_kept(folder)


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB tmpfs, where the machine lets the tests mount one (root on Linux)."""
    where = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(where)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()[:80]}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], capture_output=True)


def test_a_real_full_disk_during_a_checkpoint_is_an_output_error(tiny_disk):
    folder = tiny_disk / "checkpoint"
    save(folder, 1)
    with pytest.raises(OutputError, match=r"No space left on device"):
        save(folder, 2, size=200_000)  # 800 KB of weights on a 256 KiB disk
    # the half-written staging copy is what recover() discards; the previous one is whole
    check_previous_kept(folder)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from surveysim_hf.testing import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("tiny"))


def test_a_full_disk_while_saving_an_epoch_adapter_is_an_output_error(
    tiny_model, tmp_path, monkeypatch
):
    """peft writes the epoch adapter with safetensors: a full disk there is named, and no
    half-written epoch folder is left to be mistaken for a finished one."""
    import peft.peft_model
    from surveysim_hf.backend import HFBackend
    from surveysim_hf.losses import CrossEntropyLoss
    from surveysim_hf.options import HFOptions

    from surveysim_core.protocols import Example, Prompt

    def full(*args, **kwargs):
        raise SafetensorError(
            "Error while serializing: I/O error: No space left on device (os error 28)"
        )

    monkeypatch.setattr(peft.peft_model, "safe_save_file", full)
    train = [
        Example(Prompt(f"act as {{age: {i}}}", "Score:"), "7", "q1", 7.0, None, f"s{i}")
        for i in range(8)
    ]
    options = HFOptions(
        model=str(tiny_model), epochs=1, batch_size=8, progress_bars=False, lora_r=2
    )
    backend = HFBackend(options, tmp_path)
    with pytest.raises(OutputError, match=r"cannot write .*epoch-1.*: No space left on device"):
        backend.fine_tune(train, train[:2], CrossEntropyLoss(), tmp_path / "adapter", False)
    epochs = tmp_path / "adapter" / "epochs"
    assert not epochs.exists() or list(epochs.iterdir()) == []
