"""The run's report: ``summary.txt`` and ``report.html``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from surveysim_core.files import atomic_write_text
from surveysim_core.prompts import default_templates
from surveysim_core.scoring import summary_table

if TYPE_CHECKING:
    from surveysim_core.run import Run


def write_report(run: Run) -> Path:
    """``summary.txt`` and an HTML report rendered from the core's report template."""
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    text = summary_table(run.metrics, catalogue=run.plan.metrics)
    atomic_write_text(run.dir / "summary.txt", text + "\n")
    env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=True)
    template = env.from_string(default_templates()["report.html"])
    overall = run.metrics[run.metrics["segment"] == "all"]
    html = template.render(
        survey=run.survey.name, run_dir=str(run.dir), summary=text,
        config=yaml.safe_dump(run.config.model_dump(mode="json"), sort_keys=False),
        figures=[p.name for p in sorted(run.dir.glob("*.png"))],
        n_rows=len(run.metrics), n_overall=len(overall), timings=run.timings,
    )  # fmt: skip
    path = run.dir / "report.html"
    atomic_write_text(path, html)
    return path
