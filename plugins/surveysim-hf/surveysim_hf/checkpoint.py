"""Resumable training state written without pickle.

Tensors (adapter weights, optimizer moments, RNG states) go to safetensors files; everything else
(optimizer hyper-parameters, scheduler counters, the trainer's position) to JSON.

A checkpoint survives a kill at any instant. It is written to ``checkpoint.tmp``; its last file is
the marker ``COMPLETE``, written after every other file is flushed to disk. The swap then renames
``checkpoint`` to ``checkpoint.old`` and ``checkpoint.tmp`` to ``checkpoint``. A folder is removed
only after its marker is, so a folder with the marker is always whole. On resume,
:func:`recover` keeps the newest complete copy among the three names (by training step) as
``checkpoint`` and removes the others: at most one save interval is lost.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


def optimizer_to_files(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {"state": {}, "param_groups": state_dict["param_groups"]}
    for pid, values in state_dict["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars["state"].setdefault(str(pid), {})[key] = value
    return tensors, scalars


def optimizer_from_files(tensors: dict[str, torch.Tensor], scalars: dict) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    for pid, values in scalars["state"].items():
        state.setdefault(int(pid), {}).update(values)
    return {"state": state, "param_groups": scalars["param_groups"]}


def rng_state() -> dict[str, torch.Tensor]:
    out = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"cuda.{i}"] = s
    return out


def set_rng_state(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(t for t in tensors if t.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def write_json(path: Path, data: Any) -> None:
    """Write JSON through a unique temporary file and a rename (a kill leaves the old file)."""
    from surveysim_core.files import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True))


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def staging(folder: Path) -> Path:
    """The temporary folder a checkpoint is written to before it replaces ``folder``."""
    return folder.with_name(folder.name + ".tmp")


COMPLETE = "COMPLETE"


def is_complete(folder: Path) -> bool:
    """True when ``folder`` holds a whole checkpoint (its marker was written last)."""
    return (folder / COMPLETE).is_file() and (folder / "trainer.json").is_file()


def discard(folder: Path) -> None:
    """Remove a checkpoint folder, its marker first, so that a half-removed folder never
    looks complete."""
    if not folder.exists():
        return
    (folder / COMPLETE).unlink(missing_ok=True)
    shutil.rmtree(folder)


def _step(folder: Path) -> int:
    try:
        return int(read_json(folder / "trainer.json")["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return -1


def recover(folder: Path) -> bool:
    """Make ``folder`` the newest complete checkpoint among ``folder``, ``folder.old`` and
    ``folder.tmp`` (whatever a kill during a save left) and remove the rest (main process only).

    Returns whether a complete checkpoint is there afterwards.
    """
    old = folder.with_name(folder.name + ".old")
    tmp = staging(folder)
    # a checkpoint of an earlier version has no marker; it was only ever renamed in whole
    legacy = folder.is_dir() and not (folder / COMPLETE).exists() and not old.exists()
    legacy = legacy and not tmp.exists() and (folder / "trainer.json").is_file()
    if legacy:
        return True
    complete = [f for f in (folder, old, tmp) if is_complete(f)]
    if not complete:
        for f in (tmp, old, folder):
            discard(f)
        return False
    # the newest step wins; on a tie the folder already in place
    best = max(complete, key=lambda f: (_step(f), f == folder))
    if best != folder:
        discard(folder)
        best.rename(folder)
    for f in (tmp, old):
        discard(f)
    return True


def begin_checkpoint(folder: Path) -> Path:
    """Create an empty staging folder (main process only); every process then saves its RNG."""
    tmp = staging(folder)
    discard(tmp)
    tmp.mkdir(parents=True)
    return tmp


def finish_checkpoint(
    folder: Path,
    adapter: dict[str, torch.Tensor],
    optimizer: dict[str, Any],
    scheduler: dict[str, Any],
    trainer: dict[str, Any],
) -> None:
    """Write the shared state into the staging folder and swap it in (main process only).

    A full disk raises ``OutputError`` naming the folder; the previous checkpoint stays."""
    from surveysim_core.files import output_errors

    with output_errors(staging(folder)):
        _finish_checkpoint(folder, adapter, optimizer, scheduler, trainer)


def _finish_checkpoint(folder, adapter, optimizer, scheduler, trainer) -> None:
    tmp = staging(folder)
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in adapter.items()}, tmp / "adapter.safetensors"
    )
    opt_tensors, opt_scalars = optimizer_to_files(optimizer)
    save_file(opt_tensors, tmp / "optimizer.safetensors")
    write_json(tmp / "optimizer.json", opt_scalars)
    # LambdaLR keeps its functions out of the state (None); the resumed run rebuilds them
    scheduler = {**scheduler, "lr_lambdas": [None] * len(scheduler.get("lr_lambdas", []))}
    write_json(tmp / "scheduler.json", scheduler)
    write_json(tmp / "trainer.json", trainer)
    _sync_folder(tmp)
    write_json(tmp / COMPLETE, {"global_step": trainer.get("global_step")})
    old = folder.with_name(folder.name + ".old")
    discard(old)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    discard(old)


def _sync_folder(folder: Path) -> None:
    """Flush every file of ``folder`` to disk, so that the marker written after them cannot
    reach the disk before they do."""
    for f in folder.iterdir():
        if f.is_file():
            with open(f, "rb") as handle:
                os.fsync(handle.fileno())


def save_rng(folder: Path, rank: int) -> None:
    from surveysim_core.files import output_errors

    with output_errors(folder):
        save_file(rng_state(), folder / f"rng-{rank}.safetensors")


def load_checkpoint(folder: Path) -> dict[str, Any]:
    return {
        "adapter": load_file(folder / "adapter.safetensors"),
        "optimizer": optimizer_from_files(
            load_file(folder / "optimizer.safetensors"), read_json(folder / "optimizer.json")
        ),
        "scheduler": read_json(folder / "scheduler.json"),
        "trainer": read_json(folder / "trainer.json"),
    }


def load_rng(folder: Path, rank: int) -> dict[str, torch.Tensor] | None:
    path = folder / f"rng-{rank}.safetensors"
    return load_file(path) if path.is_file() else None
