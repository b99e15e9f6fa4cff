"""Multi-process launches (``accelerate launch``, ``torchrun``): one run directory for all.

The main process (``RANK`` 0) chooses the run directory, new or resumed, as a single process
would. It writes its choice to a small handshake file in the temporary folder, named from the
launch: the launcher's process (all workers on a node are its children), its start time, the
rendezvous address, port and restart count, and the configuration's hash. The other processes
wait for that file and use the same directory. No torch is needed, and a file from an earlier
launch cannot be mistaken for this one's.

A launch over several machines cannot share a temporary folder: it needs ``--run-dir``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from surveysim_core.errors import ConfigError, RunError

#: seconds a process waits for the main process's choice (``SURVEYSIM_LAUNCH_TIMEOUT``)
DEFAULT_TIMEOUT_S = 600.0
#: handshake files older than this are removed by the next launch
STALE_AFTER_S = 24 * 3600.0


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _process_start(pid: int) -> str:
    """When process ``pid`` started (Linux clock ticks), so that a reused pid differs."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def handshake_dir() -> Path:
    return Path(tempfile.gettempdir()) / "surveysim-launch"


def handshake_file(config_digest: str) -> Path:
    """The file the main process writes its choice to; the same name in every process."""
    env = os.environ
    launcher = os.getppid()
    parts = [
        str(launcher),
        _process_start(launcher),
        env.get("MASTER_ADDR", ""),
        env.get("MASTER_PORT", ""),
        env.get("TORCHELASTIC_RUN_ID", ""),
        env.get("TORCHELASTIC_RESTART_COUNT", ""),
        str(world_size()),
        config_digest,
    ]
    key = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]
    return handshake_dir() / f"{key}.json"


def _remove_stale(folder: Path) -> None:
    now = time.time()
    for old in folder.glob("*.json"):
        try:
            if now - old.stat().st_mtime > STALE_AFTER_S:
                old.unlink()
        except OSError:
            pass  # another launch removed it first


def agree_on_run_dir(config_digest: str, choose: Callable[[], Path]) -> Path:
    """The run directory of this launch: chosen by the main process, read by the others."""
    local = os.environ.get("LOCAL_WORLD_SIZE")
    if local is None or int(local) != world_size():
        raise ConfigError(
            f"{world_size()} processes on several machines (or a launcher that does not set"
            " LOCAL_WORLD_SIZE) must share one run directory: give the same --run-dir, on"
            " storage every machine sees, to every process"
        )
    file = handshake_file(config_digest)
    if rank() == 0:
        path = choose()
        file.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(file.parent)
        tmp = file.with_name(f"{file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"run_dir": str(path.resolve())}), encoding="utf-8")
        tmp.replace(file)  # atomic: a reader sees the whole choice or none
        return path
    timeout = float(os.environ.get("SURVEYSIM_LAUNCH_TIMEOUT", DEFAULT_TIMEOUT_S))
    deadline = time.monotonic() + timeout
    while not file.exists():
        if time.monotonic() > deadline:
            raise RunError(
                f"process {rank()} waited {timeout:g}s for the main process to choose the run"
                f" directory ({file} never appeared); did it fail? Otherwise give --run-dir"
            )
        time.sleep(0.05)
    return Path(json.loads(file.read_text(encoding="utf-8"))["run_dir"])


def data_dir(run_dir: Path) -> Path:
    """Where this process writes a generated synthetic population.

    The main process writes into the run directory. The others generate the same seeded
    population into a private folder, rather than read a file the main process may be writing.
    """
    if rank() == 0:
        return run_dir / "data"
    import atexit
    import shutil

    private = Path(tempfile.mkdtemp(prefix=f"surveysim-rank{rank()}-"))
    atexit.register(shutil.rmtree, private, True)
    return private
