"""The ``surveysim`` command line. Plugins add commands through ``register_commands``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from surveysim_core import __version__
from surveysim_core.errors import (
    EXIT_INTERRUPTED,
    EXIT_OUTPUT,
    EXIT_USAGE,
    PluginError,
    SurveysimError,
)


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
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the run's summary.json (run directory, timings, overall metrics) instead of"
    " the table.",
)
def run(
    config_file: str, overrides: tuple[str, ...], resume: bool, run_dir: str | None, as_json: bool
) -> None:
    """Prepare data, fit baselines and models, evaluate, and write results and a report."""
    from surveysim_core.config import load_config
    from surveysim_core.run import execute
    from surveysim_core.rundir import is_main_process
    from surveysim_core.scoring import summary_table
    from surveysim_core.summary import run_summary

    config = load_config(config_file, overrides)
    result = execute(config, config_file, _plugins(), resume=resume, run_dir=run_dir)
    if not is_main_process():  # one summary per launch, not one per process
        return
    if as_json:
        click.echo(json.dumps(run_summary(result), indent=2, allow_nan=False))
        return
    click.echo(summary_table(result.metrics, catalogue=result.plan.metrics))
    click.echo(
        f"\nResults: {result.dir} (metrics.csv, report.html, summary.json);"
        f" took {result.timings['total']:.0f}s"
    )


@cli.command()
@click.argument("config_file", type=click.Path(dir_okay=False))
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override an option."
)
def validate(config_file: str, overrides: tuple[str, ...]) -> None:
    """Check a run configuration and every plugin option in it, without running anything.

    Plugin objects whose options are declared at registration are not imported (no torch or
    scikit-learn); their options are validated, and their preflight checks (a model that can be
    found without network, ...) run.
    """
    from surveysim_core.config import load_config
    from surveysim_core.errors import ConfigError
    from surveysim_core.preflight import preflight
    from surveysim_core.run import plan_run

    try:
        config = load_config(config_file, overrides)
    except ConfigError as err:
        hint = _simulate_config_hint(config_file)
        if hint is None:
            raise
        raise ConfigError(f"{err}\n{hint}") from err
    plugins = _plugins()
    with plugins.options_only():
        plan = plan_run(config, config_file, plugins)
    preflight(plan)
    questions = ", ".join(plan.answer_types)
    click.echo(f"{config_file}: valid (survey {plan.survey.name}: {questions})")


#: keys that only a ``surveysim simulate`` / ``pilot`` configuration has
SIMULATE_KEYS = frozenset({"population", "statements", "pre_question", "questions", "segments"})


def _simulate_config_hint(config_file: str) -> str | None:
    """A hint when ``config_file`` is a simulate/pilot configuration given to ``validate``."""
    import yaml

    try:
        raw = yaml.safe_load(Path(config_file).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    if not isinstance(raw, dict) or not SIMULATE_KEYS & set(raw):
        return None
    command = "pilot" if "pre_question" in raw else "simulate"
    return (
        f"{config_file} is a `surveysim {command}` configuration (it has"
        f" {', '.join(sorted(SIMULATE_KEYS & set(raw)))}); `surveysim validate` checks run"
        f" configurations. `surveysim {command} --check {config_file}` checks it in full"
        " without loading a model."
    )


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--options",
    "options_of",
    metavar="NAME",
    default=None,
    help="Print the options of the object registered as NAME (or KIND:NAME, e.g."
    " baselines:svr) with their JSON schema.",
)
def plugins(as_json: bool, options_of: str | None) -> None:
    """List loaded plugins with their version, hooks and what each registers."""
    from surveysim_core.plugin_info import describe_options, list_plugins

    if options_of is not None:
        click.echo(describe_options(_plugins(), options_of, as_json))
    else:
        click.echo(list_plugins(_plugins(), as_json))


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
        raise PluginError(f"survey {survey!r} has no synthetic population generator")
    from surveysim_core.rundir import synthesize_into
    from surveysim_core.validation import check_seed, check_subjects

    check_subjects(subjects, "--subjects")
    check_seed(seed, "--seed")
    n = subjects or s.spec.synthetic_subjects
    try:  # written into a staging folder, then moved in: never a truncated file
        path = synthesize_into(s.synthesize, Path(out_dir), n, seed)
    except FileExistsError as exc:  # nothing is overwritten
        raise click.BadParameter(str(exc), param_hint="--out") from None
    click.echo(f"wrote {path}")


def build_cli() -> click.Group:
    _plugins().add_commands(cli)
    return cli


def main() -> None:
    """The ``surveysim`` command; its exit status tells the kind of failure (see errors.py)."""
    try:
        group = build_cli()
        status = group.main(standalone_mode=False)
    except click.exceptions.Abort as exc:
        # with standalone_mode=False click turns Ctrl-C into Abort; the cause tells them apart
        if isinstance(exc.__context__, KeyboardInterrupt):
            click.echo("Interrupted; resume with --resume.", err=True)
            sys.exit(EXIT_INTERRUPTED)
        click.echo("Aborted.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_USAGE if isinstance(exc, click.UsageError) else exc.exit_code)
    except SurveysimError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted; resume with --resume.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:
        # a safety net for a writer outside the run directory's own atomic writes (a library
        # saving a model, say): a full disk is the machine's state, not a bug
        from surveysim_core.files import disk_error

        what = disk_error(exc)
        if what is None:
            raise
        where = getattr(exc, "filename", None) or "a result"
        click.echo(
            f"Error: cannot write {where}: {what}; free space (or fix permissions) and continue"
            " with --resume",
            err=True,
        )
        sys.exit(EXIT_OUTPUT)
    # standalone_mode=False returns the exit code of ``ctx.exit(code)`` (--help, --version: 0)
    sys.exit(status if isinstance(status, int) and not isinstance(status, bool) else 0)


if __name__ == "__main__":  # accelerate launch -m surveysim_core.cli run ...
    main()
