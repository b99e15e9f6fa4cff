"""Registers ``surveysim simulate`` and ``surveysim pilot``. Light imports only."""

from __future__ import annotations

import click

from surveysim_core import hookimpl

CHECK_HELP = (
    "Check the configuration in full (survey, run, population, statements, segments), say how"
    " many answers are already in the result cache, and stop: no model is loaded, nothing written."
)


def _report_check(config_file: str, lines: list[str]) -> None:
    click.echo(f"{config_file}: OK; nothing was loaded or written")
    for line in lines:
        click.echo(f"  {line}")


@click.command()
@click.argument("config_file", type=click.Path(dir_okay=False))
@click.option("--check", is_flag=True, help=CHECK_HELP)
def simulate(config_file: str, check: bool) -> None:
    """Answer survey items and new statements for a virtual population (exact decoder).

    Writes personas.csv, items.csv, distributions.parquet (per persona) and segments.csv
    (weighted per-segment distributions and means with bootstrap CIs) into the config's output.
    """
    from surveysim_core.plugins import get_plugins
    from surveysim_core.protocols import Progress
    from surveysim_core.rundir import stderr_progress
    from surveysim_pilot.config import SimulateConfig, load
    from surveysim_pilot.simulate import check_summary, prepare
    from surveysim_pilot.simulate import simulate as run_simulate

    config = load(config_file, SimulateConfig)
    if check:
        prepared = prepare(config, config_file, get_plugins(), Progress(stderr_progress))
        _report_check(config_file, check_summary(prepared))
        return
    out = run_simulate(config, config_file, get_plugins(), Progress(stderr_progress))
    click.echo(f"Results: {out} (distributions.parquet, segments.csv)")


@click.command()
@click.argument("config_file", type=click.Path(dir_okay=False))
@click.option("--check", is_flag=True, help=CHECK_HELP)
def pilot(config_file: str, check: bool) -> None:
    """Pilot intervention statements: predicted shift per statement and segment, and rankings.

    Writes what simulate writes plus shifts.csv and report.html (heatmap, ranked bars).
    """
    from surveysim_core.plugins import get_plugins
    from surveysim_core.protocols import Progress
    from surveysim_core.rundir import stderr_progress
    from surveysim_pilot.config import PilotConfig, load
    from surveysim_pilot.pilot import check_pilot
    from surveysim_pilot.pilot import pilot as run_pilot

    config = load(config_file, PilotConfig)
    if check:
        progress = Progress(stderr_progress)
        _report_check(config_file, check_pilot(config, config_file, get_plugins(), progress))
        return
    out = run_pilot(config, config_file, get_plugins(), Progress(stderr_progress))
    click.echo(ranking_table(out / "shifts.csv"))
    click.echo(f"\nResults: {out} (shifts.csv, report.html)")


def ranking_table(path) -> str:
    """The whole population's ranking, one line per statement, for the terminal."""
    import pandas as pd

    shifts = pd.read_csv(path, keep_default_na=False, dtype={"statement": str})
    overall = shifts[shifts["segment"] == "all"].sort_values("rank")
    lines = ["rank  statement  mean shift [95% CI]     share rising  text"]
    for r in overall.itertuples():
        lines.append(
            f"{r.rank:>4}  {r.statement:<9}  {r.mean_shift:+7.2f} [{r.mean_shift_low:+.2f},"
            f" {r.mean_shift_high:+.2f}]  {r.share_rises:11.2f}  {str(r.text)[:60]}"
        )
    return "\n".join(lines)


@hookimpl
def register_commands(cli):
    cli.add_command(simulate)
    cli.add_command(pilot)
