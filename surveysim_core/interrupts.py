"""Ctrl-C in worker processes: the main process reports the interruption once, so workers of a
process pool (joblib, multiprocessing) ignore SIGINT instead of each printing a traceback."""

from __future__ import annotations

import contextlib
import multiprocessing
import signal


def ignore_interrupts_in_worker() -> None:
    """Ignore SIGINT when called in a child process; a no-op in the main process.

    Call it at the start of a function that a pool runs: Ctrl-C reaches every process of the
    terminal's process group, and the pool's workers would each print a ``KeyboardInterrupt``
    traceback. The main process still stops, and the pool ends its workers.
    """
    if multiprocessing.current_process().name == "MainProcess":
        return
    # ValueError: not the main thread of the worker (a thread pool); nothing to do then
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
