"""One logging set-up for a run: stage lines, plugins' ``logging``, warnings and ``run.log``.

* Console: every record at INFO or above from ``surveysim*`` loggers (the core's stage lines,
  plugins' loggers such as ``surveysim_sklearn.report``) and WARNING or above from anything else,
  written through ``tqdm.write`` so that a line never lands inside a progress bar.
* ``run.log`` in the run directory: the same records at DEBUG and up for ``surveysim*`` loggers,
  plus Python warnings (``warnings.warn`` from libraries), which are kept out of the console:
  they say nothing a researcher can act on mid-run, and the file keeps them for whoever debugs.
* Progress bars (tqdm, on stderr) are never written to the file.
* transformers' own advisory warnings (its stderr handler) are limited to errors, through
  ``TRANSFORMERS_VERBOSITY`` unless the user set it.

``setup`` is idempotent and touches only handlers it added itself.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from surveysim_core.rundir import is_main_process

STAGE_LOGGER = "surveysim.run"
LOG_FILE = "run.log"
_MARK = "_surveysim_handler"
_file_handler: logging.FileHandler | None = None


class _TqdmConsole(logging.Handler):
    """Writes records with ``tqdm.write`` (above any progress bar) or plainly to stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            try:
                from tqdm import tqdm  # type: ignore[import-untyped]
            except ImportError:  # tqdm comes with the model plugins; the core runs without it
                print(text, file=sys.stderr, flush=True)
            else:
                tqdm.write(text, file=sys.stderr)
        except Exception:
            self.handleError(record)


class _Ours(logging.Filter):
    """Records of surveysim's own loggers (core and plugins) at ``level``, others at WARNING."""

    def __init__(self, level: int, warnings: bool = False):
        super().__init__()
        self.level = level
        self.warnings = warnings

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "py.warnings":
            return self.warnings
        if record.name.startswith("surveysim"):
            return record.levelno >= self.level
        return record.levelno >= logging.WARNING


class _Formatter(logging.Formatter):
    """``[HH:MM:SS] message`` for stage lines, ``[HH:MM:SS] logger: message`` for the rest."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        if record.name == STAGE_LOGGER:
            return f"[{stamp}] {message}"
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        return f"[{stamp}] {record.name}: {level}{message}"


def setup() -> None:
    """Install the console handler on the root logger (once) and route warnings to logging."""
    root = logging.getLogger()
    if not any(getattr(h, _MARK, False) for h in root.handlers):
        console = _TqdmConsole()
        console.setFormatter(_Formatter())
        console.addFilter(_Ours(logging.INFO))
        setattr(console, _MARK, True)
        root.addHandler(console)
    # the root's own level would drop plugins' INFO records before any handler saw them
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    # logging installs its warnings hook once; something may have replaced it since (a test
    # harness's recorder, a library), and then warnings would bypass run.log: install it again
    if getattr(warnings.showwarning, "__module__", None) != "logging":
        logging.captureWarnings(False)
    logging.captureWarnings(True)
    # transformers logs its advisory warnings through its own stderr handler, not through
    # warnings.warn; read when it is first imported (the CLI imports it later, inside plugins)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def attach_run_log(run_dir: Path) -> Path:
    """Append every record of this process to ``run_dir/run.log`` (replacing an earlier file
    handler of ours); returns the file's path."""
    global _file_handler
    setup()
    detach_run_log()
    path = Path(run_dir) / LOG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(_Formatter())
    handler.addFilter(_Ours(logging.INFO, warnings=True))
    setattr(handler, _MARK, True)
    logging.getLogger().addHandler(handler)
    _file_handler = handler
    return path


def detach_run_log() -> None:
    """Close the run's log file (the console handler stays)."""
    global _file_handler
    if _file_handler is not None:
        logging.getLogger().removeHandler(_file_handler)
        _file_handler.close()
        _file_handler = None


def stage(message: str) -> None:
    """A stage line: to the console (above progress bars) and to ``run.log``."""
    if not is_main_process():
        return
    setup()
    logging.getLogger(STAGE_LOGGER).info(message)


def teed(report: Callable[[str], None]) -> Callable[[str], None]:
    """A stage reporter that calls ``report`` (a caller's own progress) and also writes the line
    to ``run.log``, so that the file is complete whoever shows progress."""

    def both(message: str) -> None:
        report(message)
        if _file_handler is not None:
            record = logging.LogRecord(STAGE_LOGGER, logging.INFO, __file__, 0, message, None, None)
            _file_handler.handle(record)

    return both


class Ticker:
    """Progress of a long loop as log lines, at most one every ``every`` seconds, with an ETA.

    For phases without a progress bar (a baseline's grid of fits): ``step()`` after each unit of
    work; a line such as ``catboost fits: 12/40 (30%), 25s elapsed, about 58s left`` goes to
    ``logger`` when ``every`` seconds have passed since the last one. ``total`` may be None
    (no ETA then).
    """

    def __init__(
        self,
        label: str,
        total: int | None = None,
        every: float = 10.0,
        logger: logging.Logger | None = None,
    ):
        self.label = label
        self.total = total
        self.every = every
        self.logger = logger or logging.getLogger(STAGE_LOGGER)
        self.done = 0
        self.started = self.last = time.monotonic()

    def line(self, now: float | None = None) -> str:
        elapsed = (time.monotonic() if now is None else now) - self.started
        if self.total:
            left = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
            eta = f", about {left:.0f}s left" if left == left else ""
            share = f" ({self.done / self.total:.0%})"
            return f"{self.label}: {self.done}/{self.total}{share}, {elapsed:.0f}s elapsed{eta}"
        return f"{self.label}: {self.done} done, {elapsed:.0f}s elapsed"

    def step(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self.logger.info(self.line(now))
