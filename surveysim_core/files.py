"""Safe file writing: atomic replacement, content hashes, and an exclusive directory lock.

Every file the toolkit writes into a run directory (and the synthetic data, ``data synth`` and
caches) goes through :func:`atomic_write`: the content is written to a uniquely named temporary
file in the same folder, flushed to disk, and renamed over the target. A reader, a crash or a
second process therefore sees either the old file or the new one, never half of one, and two
writers never share a temporary name.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from surveysim_core.errors import OutputError

# errors that are the machine's state, not a bug: reported as OutputError naming the path
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EISDIR,
                errno.ENOTDIR, errno.EEXIST, errno.ENAMETOOLONG}  # fmt: skip


def fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


# libraries that write through Rust or C (safetensors) raise their own exception types, whose
# message ends with the OS error: "I/O error: No space left on device (os error 28)"
_OS_ERROR_IN_TEXT = re.compile(r"^(?:.*: )?(?P<what>[^:]+?) \(os error (?P<errno>\d+)\)\s*$")


def disk_error(exc: BaseException) -> str | None:
    """What went wrong, when ``exc`` is a full disk, a read-only folder or a path that is a
    file (an ``OSError`` with such an errno, or a library's exception quoting one); else None."""
    if isinstance(exc, OSError):
        return (exc.strerror or str(exc)) if exc.errno in _DISK_ERRNOS else None
    match = _OS_ERROR_IN_TEXT.match(str(exc).strip().splitlines()[-1] if str(exc).strip() else "")
    if match and int(match["errno"]) in _DISK_ERRNOS:
        return match["what"].strip()
    return None


@contextlib.contextmanager
def output_errors(path: Path | str) -> Iterator[None]:
    """Turn a full disk, a read-only folder or a path that is a file into an ``OutputError``,
    whether the writer raised ``OSError`` or a library's own error quoting the OS error."""
    try:
        yield
    except Exception as exc:
        what = disk_error(exc)
        if what is not None:
            raise OutputError(
                f"cannot write {path}: {what}; files written before are intact"
            ) from exc
        raise


def atomic_write(path: Path | str, writer: Callable[[Path], object]) -> Path:
    """Write ``path`` all at once: ``writer(tmp)`` fills a unique temporary file beside it,
    which is then flushed and renamed over ``path``.

    On any failure (a full disk, an exception in ``writer``, Ctrl-C) the temporary file is
    removed and ``path`` keeps its previous content. ``OSError`` for a full disk or a read-only
    folder becomes ``OutputError`` naming the path.
    """
    path = Path(path)
    with output_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        # the target's suffix kept last, so that writers which infer a format from it
        # (pandas: .csv.gz, .parquet) still do
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
        try:
            writer(tmp)
            _fsync_file(tmp)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(path.parent)
    return path


def atomic_write_text(path: Path | str, text: str) -> Path:
    """``atomic_write`` of UTF-8 text."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def file_sha256(path: Path | str) -> str:
    """The SHA-256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def replace_directory(staging: Path, target: Path) -> None:
    """Move a completely written folder into place; ``target`` must not exist yet."""
    for child in staging.rglob("*"):
        if child.is_file():
            _fsync_file(child)
    os.replace(staging, target)
    fsync_dir(target.parent)


def atomic_directory(path: Path | str, writer: Callable[[Path], object]) -> Path:
    """Create the folder ``path`` all at once: ``writer(folder)`` fills a hidden folder beside
    it, which is renamed to ``path`` only if ``writer`` succeeds and removed otherwise, so that
    a failure (an error, Ctrl-C) leaves nothing partial. ``path`` must not exist yet."""
    path = Path(path)
    with output_errors(path):
        if path.exists():
            raise OutputError(f"{path}: already exists; choose a new output directory")
        partial = path.parent / f".{path.name}.partial"
        if partial.exists():  # left by a crashed earlier attempt at this same folder
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
        try:
            writer(partial)
            replace_directory(partial, path)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    return path


# -- the lock ------------------------------------------------------------------------------------
class LockHeld(OutputError):
    """Another live process writes to this directory."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    except OSError:
        return False
    return True


class DirectoryLock:
    """An exclusive lock on a folder: a file ``.lock`` created with ``O_CREAT | O_EXCL`` that
    holds the writer's pid and host name.

    A lock left by a process that no longer runs on this host is stale and taken over. A lock
    held by this same process (a run that raised, then was retried in one Python session) is
    taken over too. A lock from another host cannot be checked, so it is reported.
    """

    NAME = ".lock"

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / self.NAME
        self.held = False

    def _holder(self) -> dict | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError:
            return {}
        try:
            holder = json.loads(text)
        except json.JSONDecodeError:
            holder = {}
        return holder if isinstance(holder, dict) else {}

    def _stale(self, holder: dict) -> bool:
        if not holder:
            # created but not yet written, or written by a process killed in between: stale
            # once old enough that its writer would have finished the one small write
            try:
                return time.time() - self.path.stat().st_mtime > 10
            except FileNotFoundError:
                return True
        if holder.get("hostname") != socket.gethostname():
            return False
        pid = holder.get("pid")
        if not isinstance(pid, int):
            return True
        return pid == os.getpid() or not _pid_alive(pid)

    def acquire(self) -> None:
        """Take the lock or raise ``LockHeld`` naming the holder's pid and host."""
        with output_errors(self.path):
            self.folder.mkdir(parents=True, exist_ok=True)
            for _ in range(5):
                try:
                    fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    holder = self._holder()
                    if holder is None:
                        continue  # released in the meantime
                    if not self._stale(holder):
                        raise LockHeld(
                            f"{self.folder}: another surveysim process (pid {holder.get('pid')}"
                            f" on {holder.get('hostname')}) is writing to this run directory;"
                            f" wait for it to finish, or delete {self.path} if it is gone"
                        ) from None
                    # only one of several processes taking over a stale lock wins this rename
                    grave = self.path.with_name(f"{self.NAME}.stale-{os.getpid()}")
                    try:
                        os.replace(self.path, grave)
                    except FileNotFoundError:
                        continue
                    grave.unlink(missing_ok=True)
                    continue
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    json.dump(
                        {"pid": os.getpid(), "hostname": socket.gethostname(),
                         "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
                        handle,
                    )  # fmt: skip
                    handle.flush()
                    os.fsync(handle.fileno())
                self.held = True
                return
        raise LockHeld(f"{self.folder}: could not take the lock {self.path}; try again")

    def release(self) -> None:
        """Remove the lock if this process holds it."""
        if not self.held:
            return
        self.held = False
        holder = self._holder()
        if holder and holder.get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
