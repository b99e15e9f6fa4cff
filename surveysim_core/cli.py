"""The ``surveysim`` command line. Plugins add commands through ``register_commands``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from surveysim_core import __version__
from surveysim_core.errors import SurveysimError


def _plugins():
    from surveysim_core.plugins import get_plugins

    return get_plugins()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="surveysim")
def cli() -> None:
    """Simulate survey populations with language models fine-tuned on a survey.

    Start with: surveysim run surveys/evshift.yaml
    """


@cli.command()
@click.argument("config_file", type=click.Path(dir_okay=False))
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY.PATH=VALUE",
    help="Override an option, e.g. --set split.max_train_subjects=200 (repeatable).",
)
@click.option("--resume", is_flag=True, help="Continue the latest unfinished run of this config.")
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Write into (or resume) this directory instead of a new one under output.dir.",
)
def run(config_file: str, overrides: tuple[str, ...], resume: bool, run_dir: str | None) -> None:
    """Prepare data, fit baselines and models, evaluate, and write results and a report."""
    from surveysim_core.config import load_config
    from surveysim_core.run import execute
    from surveysim_core.scoring import summary_table

    config = load_config(config_file, overrides)
    result = execute(config, config_file, _plugins(), resume=resume, run_dir=run_dir)
    click.echo(summary_table(result.metrics, catalogue=result.plan.metrics))
    click.echo(
        f"\nResults: {result.dir} (metrics.csv, report.html); took {result.timings['total']:.0f}s"
    )


@cli.command()
@click.argument("config_file", type=click.Path(dir_okay=False))
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override an option."
)
def validate(config_file: str, overrides: tuple[str, ...]) -> None:
    """Check a run configuration and every plugin option in it, without running anything."""
    from surveysim_core.config import load_config
    from surveysim_core.run import plan_run

    config = load_config(config_file, overrides)
    plan = plan_run(config, config_file, _plugins())
    questions = ", ".join(plan.answer_types)
    click.echo(f"{config_file}: valid (survey {plan.survey.name}: {questions})")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json: bool) -> None:
    """List loaded plugins with their version and hooks."""
    info = _plugins().info()
    if as_json:
        click.echo(json.dumps([p.__dict__ for p in info], indent=2))
        return
    for p in info:
        click.echo(f"{p.name} {p.version}".rstrip())
        click.echo(f"  hooks: {', '.join(p.hooks) or '-'}")


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=".",
    show_default=True,
    help="Folder for compare.csv and compare.png.",
)
def compare(run_dirs: tuple[str, ...], out_dir: str) -> None:
    """Compare finished runs: one tidy table (compare.csv) and one figure (compare.png)."""
    from surveysim_core.compare import compare_figure, compare_table

    table = compare_table(list(run_dirs))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "compare.csv", index=False)
    figure = compare_figure(table, out / "compare.png")
    wide = table.pivot_table(
        index=["run", "system", "temperature"], columns="metric", values="value",
        aggfunc="mean", dropna=False, sort=False,
    ).dropna(how="all")  # fmt: skip
    click.echo(wide.to_string(float_format=lambda v: f"{v:.4f}"))
    figure_note = f", {figure}" if figure else " (no figure: needs kl, rmse and matplotlib)"
    click.echo(f"\nWrote {out / 'compare.csv'}{figure_note}")


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
def report(run_dir: str) -> None:
    """Re-render a finished run's report (summary.txt, report.html, figures) from its results."""
    from surveysim_core.compare import rerender_report

    path = rerender_report(run_dir, _plugins())
    click.echo((Path(run_dir) / "summary.txt").read_text(encoding="utf-8"))
    click.echo(f"Wrote {path}")


@cli.group()
def data() -> None:
    """Survey data: synthetic populations."""


@data.command("synth")
@click.argument("survey")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder to write into.",
)
@click.option(
    "--subjects", type=int, default=None, help="Number of subjects (default: the survey's own)."
)
@click.option("--seed", type=int, default=0, show_default=True)
def synth(survey: str, out_dir: str, subjects: int | None, seed: int) -> None:
    """Write a synthetic population of SURVEY (long-format CSV plus its ground truth)."""
    s = _plugins().surveys.get(survey, where="surveysim data synth")
    if s.synthesize is None:
        raise SurveysimError(f"survey {survey!r} has no synthetic population generator")
    path = s.synthesize(Path(out_dir), subjects or s.spec.synthetic_subjects, seed)
    click.echo(f"wrote {path}")


def build_cli() -> click.Group:
    _plugins().add_commands(cli)
    return cli


def main() -> None:
    try:
        group = build_cli()
        group.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except SurveysimError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("Interrupted; resume with --resume.", err=True)
        sys.exit(130)


if __name__ == "__main__":  # accelerate launch -m surveysim_core.cli run ...
    main()
