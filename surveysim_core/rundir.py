"""The run directory: where a run lives, how it is chosen, and how files are written into it."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import pandas as pd

from surveysim_core.config import RunConfig
from surveysim_core.survey_files import survey_label


def stderr_progress(message: str) -> None:
    if not is_main_process():
        return
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def config_hash(config: RunConfig) -> str:
    text = json.dumps(config.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def choose_run_dir(config: RunConfig, resume: bool, run_dir: str | None) -> Path:
    """A new directory per run (never overwriting one), or the latest unfinished one to resume."""
    if run_dir:
        return Path(run_dir)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from surveysim_core.launch import agree_on_run_dir

        # the main process chooses, the others follow (a handshake file per launch)
        return agree_on_run_dir(config_hash(config), lambda: _new_or_resumed(config, resume))
    return _new_or_resumed(config, resume)


def _new_or_resumed(config: RunConfig, resume: bool) -> Path:
    base = Path(config.output.dir)
    digest = config_hash(config)
    if resume and base.exists():
        candidates = [
            # not the ``latest`` symlink: resuming through it would re-point it at itself
            p for p in base.iterdir() if not p.is_symlink() and (p / "config.hash").exists()
            and (p / "config.hash").read_text().strip() == digest
        ]  # fmt: skip
        if candidates:
            # the newest unfinished run; if all finished, the newest (everything is kept)
            def newest_unfinished_first(p: Path) -> tuple[bool, float]:
                return (not (p / "status.json").exists(), (p / "config.hash").stat().st_mtime)

            return max(candidates, key=newest_unfinished_first)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = survey_label(config.survey)
    path = base / f"{name}-{stamp}"
    suffix = 1
    while path.exists():
        path = base / f"{name}-{stamp}-{suffix}"
        suffix += 1
    return path


def is_main_process() -> bool:
    """False in the non-zero ranks of a multi-process launch (accelerate launch, torchrun)."""
    return os.environ.get("RANK", "0") == "0"


class RunDir:
    """Files of one run; every write goes to a temporary name first, then is renamed.

    In a multi-process launch every process computes the same results (backends gather their
    shards), and only the main process writes.
    """

    def __init__(self, path: Path):
        self.path = path
        self.main = is_main_process()
        if self.main:
            path.mkdir(parents=True, exist_ok=True)

    def write_text(self, name: str, text: str) -> Path:
        target = self.path / name
        if not self.main:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(target)
        return target

    def write_frame(self, name: str, frame: pd.DataFrame) -> Path:
        target = self.path / name
        if not self.main:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        if name.endswith(".parquet"):
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False)
        tmp.replace(target)
        return target

    def done(self, name: str) -> bool:
        return (self.path / name).exists()
