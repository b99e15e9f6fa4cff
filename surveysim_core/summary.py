"""``summary.json``: a finished run's outcome for machines (``surveysim run --json`` prints it)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from surveysim_core import __version__
from surveysim_core.rundir import RunDir, config_hash

SUMMARY_FILE = "summary.json"


def _plain(value: Any) -> Any:
    """A JSON value: NaN becomes null, numpy scalars become Python numbers."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def run_summary(run: Any) -> dict[str, Any]:
    """The run's identity, timings, files and overall metrics (segment 'all')."""
    overall = run.metrics[run.metrics["segment"] == "all"]
    wanted = [
        "system", "system_id", "setting", "readout", "question", "temperature", "metric", "value",
        "sd", "ci_low", "ci_high", "n", "chosen_on",
    ]  # fmt: skip
    # the readout tells the rows of one system and temperature apart (sample, expected, ...)
    columns = [c for c in wanted if c in overall.columns]
    results = [
        {col: _plain(row[col]) for col in columns} for row in overall[columns].to_dict("records")
    ]
    return {
        "surveysim_version": __version__,
        "run_dir": str(run.dir),
        "config": str(run.plan.source),
        "config_hash": config_hash(run.config),
        "survey": run.survey.name,
        "finished": True,
        "timings_s": {k: round(v, 3) for k, v in run.timings.items()},
        "systems": sorted(set(run.metrics["system"])),
        "files": {
            "metrics": "metrics.csv",
            "settings": "settings.csv",
            "report": "report.html",
            "summary": SUMMARY_FILE,
        },
        "results": results,
    }


def write_summary(run: Any) -> Path:
    """Write ``summary.json`` into the run directory (main process only)."""
    text = json.dumps(run_summary(run), indent=2, allow_nan=False) + "\n"
    return RunDir(Path(run.dir)).write_text(SUMMARY_FILE, text)


def training_throughput(run_dir: Path) -> dict[str, float]:
    """Measured throughput of this run, so that a slower machine's wall time can be explained:
    each trained system's fine-tuning tokens/s (from its ``training.json``) and each language-
    model system's forward tokens/s while answering (from ``systems/<name>/throughput.json``)."""
    out: dict[str, float] = {}
    for path in sorted(run_dir.glob("**/training.json")):
        info = _read_json(path)
        if "tokens_per_second" in info:
            name = path.parent.relative_to(run_dir).as_posix()
            out[f"{name}: training tokens/s"] = round(float(info["tokens_per_second"]), 1)
    for path in sorted(run_dir.glob("systems/*/throughput.json")):
        info = _read_json(path)
        if "forward_tokens_per_second" in info:
            out[f"{path.parent.name}: forward tokens/s"] = float(info["forward_tokens_per_second"])
    return out


def _read_json(path: Path) -> dict[str, Any]:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}
