"""Registers ``surveysim simulate`` and ``surveysim pilot``. Light imports only."""

from __future__ import annotations

import click

from surveysim_core import hookimpl


@click.command()
@click.argument("config_file", type=click.Path(dir_okay=False))
def simulate(config_file: str) -> None:
    """Answer survey items and new statements for a virtual population (exact decoder).

    Writes personas.csv, items.csv, distributions.parquet (per persona) and segments.csv
    (weighted per-segment distributions and means with bootstrap CIs) into the config's output.
    """
    from surveysim_core.plugins import get_plugins
    from surveysim_core.protocols import Progress
    from surveysim_core.rundir import stderr_progress
    from surveysim_pilot.config import SimulateConfig, load
    from surveysim_pilot.simulate import simulate as run_simulate

    config = load(config_file, SimulateConfig)
    out = run_simulate(config, config_file, get_plugins(), Progress(stderr_progress))
    click.echo(f"Results: {out} (distributions.parquet, segments.csv)")


@click.command()
@click.argument("config_file", type=click.Path(dir_okay=False))
def pilot(config_file: str) -> None:
    """Pilot intervention statements: predicted shift per statement and segment, and rankings.

    Writes what simulate writes plus shifts.csv and report.html (heatmap, ranked bars).
    """
    from surveysim_core.plugins import get_plugins
    from surveysim_core.protocols import Progress
    from surveysim_core.rundir import stderr_progress
    from surveysim_pilot.config import PilotConfig, load
    from surveysim_pilot.pilot import pilot as run_pilot

    config = load(config_file, PilotConfig)
    out = run_pilot(config, config_file, get_plugins(), Progress(stderr_progress))
    click.echo(f"Results: {out} (shifts.csv, report.html)")


@hookimpl
def register_commands(cli):
    cli.add_command(simulate)
    cli.add_command(pilot)
