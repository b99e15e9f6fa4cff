"""The run's logging: stage lines and plugins' logging on the console and in run.log, library
warnings in the file only, and progress lines with an ETA."""

from __future__ import annotations

import logging
import warnings

from surveysim_core import logs


def test_run_log_keeps_stages_plugins_and_warnings_console_only_the_first_two(tmp_path, capsys):
    path = logs.attach_run_log(tmp_path)
    try:
        logs.stage("baseline svr: fitting")
        logging.getLogger("surveysim_sklearn.report").info("no RMSE-KL picture")
        logging.getLogger("urllib3").info("a library's chatter")  # below WARNING: dropped
        warnings.warn("a library's FutureWarning", FutureWarning, stacklevel=1)
    finally:
        logs.detach_run_log()
    text = path.read_text()
    assert "] baseline svr: fitting" in text
    assert "surveysim_sklearn.report: no RMSE-KL picture" in text
    assert "a library's FutureWarning" in text
    assert "chatter" not in text
    console = capsys.readouterr().err
    assert "baseline svr: fitting" in console
    assert "no RMSE-KL picture" in console
    assert "FutureWarning" not in console
    # detached: later lines do not reach the old run's file
    logs.stage("another run")
    assert "another run" not in path.read_text()


def test_ticker_reports_progress_with_an_eta(caplog, monkeypatch):
    clock = iter([0.0, 5.0, 12.0, 15.0, 30.0])
    monkeypatch.setattr(logs.time, "monotonic", lambda: next(clock))
    ticker = logs.Ticker("svr fits", total=8, every=10.0, logger=logging.getLogger("surveysim.t"))
    with caplog.at_level(logging.INFO, logger="surveysim.t"):
        ticker.step()  # t=5: too soon
        ticker.step()  # t=12: 2 of 8 in 12 s -> 36 s left
        ticker.step()  # t=15: too soon after the last line
        ticker.step()  # t=30: 4 of 8 in 30 s -> 30 s left
    assert [r.getMessage() for r in caplog.records] == [
        "svr fits: 2/8 (25%), 12s elapsed, about 36s left",
        "svr fits: 4/8 (50%), 30s elapsed, about 30s left",
    ]
