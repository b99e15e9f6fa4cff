"""Finished runs read back from their directories: re-rendering a run's report, and comparing
several runs in one tidy table and one figure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import ValidationError

from surveysim_core.config import RunConfig, format_validation_error
from surveysim_core.errors import ConfigError, DataError

#: the columns of ``compare.csv``
COMPARE_COLUMNS = [
    "run", "system", "system_id", "setting", "question", "temperature", "metric", "value", "n",
]  # fmt: skip


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: not found; is {path.parent} a finished surveysim run?")
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def read_run_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise DataError(f"{path}: not found; is {run_dir} a surveysim run directory?")
    try:
        return RunConfig.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path))) from None


def load_run(run_dir: str | Path, plugins: Any) -> Any:
    """A finished run rebuilt from its directory: its configuration planned again (for the
    survey and the metrics' directions), its saved metrics, settings and timings."""
    from surveysim_core.plan import plan_run
    from surveysim_core.run import Run

    path = Path(run_dir)
    config = read_run_config(path)
    plan = plan_run(config, str(path / "config.yaml"), plugins)
    metrics = _read_csv(path / "metrics.csv")
    settings = _read_csv(path / "settings.csv") if (path / "settings.csv").is_file() else None
    status = path / "status.json"
    timings = json.loads(status.read_text())["timings_s"] if status.is_file() else {}
    return Run(path, plan, metrics, settings if settings is not None else pd.DataFrame(), timings)


def rerender_report(run_dir: str | Path, plugins: Any) -> Path:
    """``summary.txt``, ``report.html`` and the plugins' figures, from the saved results."""
    from surveysim_core.report import write_report

    run = load_run(run_dir, plugins)
    plugins.write_reports(run)
    return write_report(run)


def compare_table(run_dirs: list[str | Path]) -> pd.DataFrame:
    """Every run's overall (segment ``all``) metric rows in one tidy table; ``run`` is the run
    directory's name (its path where two names are equal)."""
    paths = [Path(p) for p in run_dirs]
    names = [p.name for p in paths]
    labels = [p.name if names.count(p.name) == 1 else str(p) for p in paths]
    frames = []
    for path, label in zip(paths, labels, strict=True):
        metrics = _read_csv(path / "metrics.csv")
        overall = metrics[metrics["segment"] == "all"].copy()
        if "system_id" not in overall:  # runs from before system ids
            overall["system_id"] = ""
        overall.insert(0, "run", label)
        frames.append(overall[COMPARE_COLUMNS])
    return pd.concat(frames, ignore_index=True)


def compare_figure(table: pd.DataFrame, path: Path, x: str = "kl", y: str = "rmse") -> Path | None:
    """RMSE against KL (means over questions), one point per run, system and temperature; None
    when the table lacks either metric or matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    keys = ["run", "system", "temperature"]
    wide = (
        table[table["metric"].isin([x, y])]
        .assign(temperature=lambda f: f["temperature"].fillna(-1.0))
        .pivot_table(index=keys, columns="metric", values="value", aggfunc="mean")
        .reset_index()
    )
    if x not in wide or y not in wide:
        return None
    wide = wide.dropna(subset=[x, y])
    fig, ax = plt.subplots(figsize=(7, 5))
    for run, group in wide.groupby("run", sort=False):
        ax.scatter(group[x], group[y], label=str(run), alpha=0.8)
        for _, r in group.iterrows():
            t = "" if r["temperature"] < 0 else f" t={r['temperature']:g}"
            ax.annotate(f"{r['system']}{t}", (r[x], r[y]), fontsize=7, alpha=0.8)
    ax.set_xlabel(f"{x} (mean over questions)")
    ax.set_ylabel(f"{y} (mean over questions)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
