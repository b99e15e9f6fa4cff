"""The run directory: where a run lives, how it is chosen, and how files are written into it.

A run directory is created exclusively (a new name per run) and locked (``.lock``, see
:class:`surveysim_core.files.DirectoryLock`) while a process writes to it. Every file in it is
written atomically (:func:`surveysim_core.files.atomic_write`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from surveysim_core.config import RunConfig
from surveysim_core.errors import ConfigError, DataError, OutputError
from surveysim_core.files import (
    DirectoryLock,
    atomic_write,
    atomic_write_text,
    file_sha256,
    output_errors,
    replace_directory,
)
from surveysim_core.survey_files import survey_label

DATA_HASHES = "data.sha256.json"
# what a run directory holds before any stage result; a fresh run that fails with only these
# written is removed again, so that a bad input leaves no half-made run behind
#: what a run directory holds before any result: removed with it when a fresh run fails
_SETUP_FILES = {
    "config.yaml", "config.hash", "data", DATA_HASHES, "splits.csv", "run.log", DirectoryLock.NAME,
}  # fmt: skip


def stderr_progress(message: str) -> None:
    if not is_main_process():
        return
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def config_hash(config: RunConfig) -> str:
    text = json.dumps(config.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def choose_run_dir(config: RunConfig, resume: bool, run_dir: str | None) -> Path:
    """A new directory per run (created here, exclusively), or the latest unfinished one to
    resume, or ``run_dir`` as given.

    With ``resume`` and no run at all under ``output.dir``, raises ``ConfigError`` saying so.
    """
    if run_dir:
        return Path(run_dir)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from surveysim_core.launch import agree_on_run_dir

        # the main process chooses, the others follow (a handshake file per launch)
        return agree_on_run_dir(config_hash(config), lambda: _new_or_resumed(config, resume))
    return _new_or_resumed(config, resume)


def _new_or_resumed(config: RunConfig, resume: bool) -> Path:
    base = Path(config.output.dir)
    if base.exists() and not base.is_dir():
        raise OutputError(f"output.dir: {base} is a file, not a folder")
    digest = config_hash(config)
    if resume:
        runs = (
            [p for p in base.iterdir() if not p.is_symlink() and (p / "config.hash").is_file()]
            if base.is_dir()
            else []
        )
        candidates = [p for p in runs if (p / "config.hash").read_text().strip() == digest]
        if candidates:
            # the newest unfinished run; if all finished, the newest (everything is kept)
            def newest_unfinished_first(p: Path) -> tuple[bool, float]:
                return (not (p / "status.json").exists(), (p / "config.hash").stat().st_mtime)

            return max(candidates, key=newest_unfinished_first)
        if not runs:
            raise ConfigError(f"--resume: nothing to resume: no run under {base}")
        # runs of other configurations: a new run (the caller says what differs, and the
        # result cache reuses what the changes leave valid)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = survey_label(config.survey)
    path = base / f"{name}-{stamp}"
    suffix = 1
    # created here, exclusively: two runs started in the same second get different names
    while True:
        with output_errors(path):
            try:
                path.mkdir(parents=True)
                return path
            except FileExistsError:
                pass
        path = base / f"{name}-{stamp}-{suffix}"
        suffix += 1


def is_main_process() -> bool:
    """False in the non-zero ranks of a multi-process launch (accelerate launch, torchrun)."""
    return os.environ.get("RANK", "0") == "0"


def _csv_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Text cells that a spreadsheet would run as a formula (``=HYPERLINK(...)``, ``+1+1``,
    ``@SUM``) get a leading apostrophe, as OWASP recommends; numbers such as ``-5`` stay."""
    out = None
    for col in frame.columns:
        if not (
            pd.api.types.is_object_dtype(frame[col]) or pd.api.types.is_string_dtype(frame[col])
        ):
            continue
        values = frame[col]
        text = values.map(lambda v: isinstance(v, str))
        risky = values[text].map(_formula_like)
        if risky.any():
            out = frame.copy() if out is None else out
            idx = risky[risky].index
            out.loc[idx, col] = "'" + values[idx].astype(str)
    return frame if out is None else out


def _formula_like(value: str) -> bool:
    if not value or value[0] not in "=+-@\t\r":
        return False
    try:
        float(value)
    except ValueError:
        return True
    return False


class RunDir:
    """Files of one run; every write goes to a unique temporary name first, then is renamed.

    In a multi-process launch every process computes the same results (backends gather their
    shards), and only the main process writes. ``lock=True`` (what :func:`open_run_dir` uses for
    a run) also takes the directory's lock; a plain ``RunDir(path)`` only writes.
    """

    def __init__(self, path: Path, lock: bool = False, created: bool = False):
        self.path = Path(path)
        self.main = is_main_process()
        self.created = created  # by this run (then a failure before any result removes it)
        self.lock = DirectoryLock(self.path)
        if self.main:
            with output_errors(self.path):
                if self.path.exists() and not self.path.is_dir():
                    raise OutputError(f"{self.path} is a file, not a run directory")
                try:
                    self.path.mkdir(parents=True)
                    self.created = True
                except FileExistsError:
                    pass
            if lock:
                self.lock.acquire()

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        try:
            # an error (not Ctrl-C, which the user may want to resume) in a fresh run
            failed = isinstance(exc, Exception)
            if failed and self.created and self.main and self._only_setup_files():
                shutil.rmtree(self.path, ignore_errors=True)
        finally:
            self.lock.release()

    def close(self) -> None:
        self.lock.release()

    def _only_setup_files(self) -> bool:
        try:
            return all(p.name in _SETUP_FILES for p in self.path.iterdir())
        except OSError:
            return False

    def write_text(self, name: str, text: str) -> Path:
        target = self.path / name
        if not self.main:
            return target
        return atomic_write_text(target, text)

    def write_frame(self, name: str, frame: pd.DataFrame) -> Path:
        target = self.path / name
        if not self.main:
            return target
        if name.endswith(".parquet"):
            return atomic_write(target, lambda tmp: frame.to_parquet(tmp, index=False))
        return atomic_write(target, lambda tmp: _csv_safe(frame).to_csv(tmp, index=False))

    def done(self, name: str) -> bool:
        return (self.path / name).exists()


def point_latest(path: Path) -> None:
    """Point the ``latest`` symlink beside ``path`` at it, in one rename (never a moment without
    it); a ``latest`` that is not a symlink is left alone, and a failure is not an error."""
    latest = path.parent / "latest"
    if latest.exists() and not latest.is_symlink():
        return
    tmp = path.parent / f".latest.{os.getpid()}.tmp"
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(path.name)
        os.replace(tmp, latest)
    except OSError:  # a file system without symlinks: the runs are still there
        tmp.unlink(missing_ok=True)


def remove_leftovers(path: Path) -> list[Path]:
    """Remove what a killed process left half-written in a run directory: temporary files of
    ``atomic_write`` and staging folders of data generation (never a finished file)."""
    removed = []
    for p in sorted(path.rglob(".*"), reverse=True):
        staged = p.is_dir() and p.name.startswith((".synth-", ".data-"))
        temporary = p.is_file() and p.name.endswith(".tmp")
        if staged or temporary:
            if staged:
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


# -- data used by a run: generated atomically, checked by hash on resume -------------------------


def _copy_from(source: Path) -> Callable[[Path], object]:
    return lambda tmp: shutil.copyfile(source, tmp)


def synthesize_into(synthesize: Callable[[Path, int | None, int], Path], out_dir: Path,
                    subjects: int | None, seed: int) -> Path:  # fmt: skip
    """Run a survey's generator into a staging folder beside ``out_dir`` and move its files in
    when it has finished, so that an interruption or a full disk leaves no truncated file.

    Returns the path of the data file (the generator's return value, moved). Files are moved one
    by one, the data file last.
    """
    out_dir = Path(out_dir)
    with output_errors(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=".synth-"))
        try:
            produced = Path(synthesize(staging, subjects, seed))
            rel = produced.relative_to(staging)
            files = sorted(p for p in staging.rglob("*") if p.is_file())
            existing = [
                str(out_dir / f.relative_to(staging))
                for f in files
                if (out_dir / f.relative_to(staging)).exists()
            ]
            if existing:  # data written before is never replaced by accident
                raise FileExistsError(
                    f"{', '.join(existing)} already exists; choose another folder or delete it"
                )
            for f in sorted(files, key=lambda p: p == produced):
                atomic_write(out_dir / f.relative_to(staging), _copy_from(f))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return out_dir / rel


def synthetic_data(
    out: Path,
    synthesize: Callable[[Path, int | None, int], Path],
    subjects: int | None,
    seed: int,
    progress: Callable[[str], None],
) -> Path:
    """The synthetic data of a run, generated once into the folder ``out`` (usually
    ``<run dir>/data``: staged beside it and renamed into place when complete) and checked
    against its recorded SHA-256 when reused."""
    out = Path(out)
    manifest = out / DATA_HASHES
    if manifest.is_file():
        recorded = json.loads(manifest.read_text(encoding="utf-8"))
        for name, digest in recorded["files"].items():
            f = out / name
            if not f.is_file() or file_sha256(f) != digest:
                raise DataError(
                    f"{f}: changed or missing since this run generated it (recorded sha256"
                    f" {digest[:12]}); delete {out} to generate the data again"
                )
        return out / recorded["data"]
    legacy = out.is_dir() and any(out.iterdir())
    if out.is_dir() and not legacy:
        out.rmdir()  # an empty folder (a process's private one): generated into below
    progress(f"generating synthetic population (seed {seed})")
    with output_errors(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=".data-"))
        try:
            produced = Path(synthesize(staging, subjects, seed))
            files = {
                str(p.relative_to(staging)): file_sha256(p)
                for p in sorted(staging.rglob("*"))
                if p.is_file()
            }
            record: dict[str, Any] = {"data": str(produced.relative_to(staging)), "files": files}
            if legacy:
                # data written by an earlier version, without hashes: kept only if it is exactly
                # what the seeded generator writes (a truncated file is reported, not deleted)
                for name, digest in files.items():
                    f = out / name
                    if not f.is_file() or file_sha256(f) != digest:
                        raise DataError(
                            f"{f}: differs from the population seed {seed} generates (cut"
                            f" short or changed); delete {out} to generate the data again"
                        )
                atomic_write_text(out / DATA_HASHES, json.dumps(record, indent=2) + "\n")
            else:
                atomic_write_text(staging / DATA_HASHES, json.dumps(record, indent=2) + "\n")
                replace_directory(staging, out)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return out / record["data"]


def check_data_file(run_dir: Path, path: Path) -> None:
    """Record the SHA-256 of a run's input file, or check it on resume: results already in the
    run directory were computed from it."""
    record = Path(run_dir) / DATA_HASHES
    digest = file_sha256(path)
    if record.is_file():
        saved = json.loads(record.read_text(encoding="utf-8"))
        if saved.get("path") == str(path) and saved.get("sha256") != digest:
            raise DataError(
                f"{path}: changed since this run started (sha256 {saved['sha256'][:12]} then,"
                f" {digest[:12]} now); start a new run instead of --resume"
            )
        if saved.get("path") == str(path):
            return
    if is_main_process():
        atomic_write_text(record, json.dumps({"path": str(path), "sha256": digest}) + "\n")
