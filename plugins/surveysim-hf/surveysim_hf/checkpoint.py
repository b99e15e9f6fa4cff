"""Resumable training state written without pickle.

Tensors (adapter weights, optimizer moments, RNG states) go to safetensors files; everything else
(optimizer hyper-parameters, scheduler counters, the trainer's position) to JSON. A checkpoint is
written to a temporary folder and renamed into place, so an interruption while saving leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import json
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
    path.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def staging(folder: Path) -> Path:
    """The temporary folder a checkpoint is written to before it replaces ``folder``."""
    return folder.with_name(folder.name + ".tmp")


def begin_checkpoint(folder: Path) -> Path:
    """Create an empty staging folder (main process only); every process then saves its RNG."""
    tmp = staging(folder)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def finish_checkpoint(
    folder: Path,
    adapter: dict[str, torch.Tensor],
    optimizer: dict[str, Any],
    scheduler: dict[str, Any],
    trainer: dict[str, Any],
) -> None:
    """Write the shared state into the staging folder and swap it in (main process only)."""
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
    old = folder.with_name(folder.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    if old.exists():
        shutil.rmtree(old)


def save_rng(folder: Path, rank: int) -> None:
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
