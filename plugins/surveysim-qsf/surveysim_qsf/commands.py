"""``surveysim import qsf``: a Qualtrics survey file to a survey definition that runs."""

from __future__ import annotations

from pathlib import Path

import click

STARTER_CONFIG = """\
# A starter run configuration for the imported survey. Point data.path at the answers in
# surveysim's long format (docs/user-guide.md), e.g. made by `surveysim import wide`.
survey: survey.yaml
data:
  source: file
  path: answers.csv
baselines:
  - name: random
  - name: marginal
"""


def report_text(source: Path, conversion) -> str:
    """The import report: what was imported, and every item not imported or changed."""
    spec = conversion.survey
    lines = [
        f"# Import report: {source.name}",
        "",
        f"{len(spec['questions'])} surveysim questions and {len(spec['demographics'])}"
        f" demographic fields; {len(conversion.report)} items below were not imported or were"
        " changed.",
        "",
        "## Imported",
        "",
        "| Qualtrics | surveysim | answer | when |",
        "|---|---|---|---|",
    ]
    whens = {q["id"]: q.get("when", "") for q in spec["questions"]}
    for item in conversion.imported:
        answer = item.spec["answer"]
        kind = answer["type"] + (" (ordered)" if answer.get("ordered") else "")
        if answer["type"] == "integer":
            kind += f" {answer['min']}-{answer['max']}"
        role = "" if item.id in whens else " (demographic field)"
        when = whens.get(item.id, "").replace("|", "\\|")
        lines.append(f"| {item.qid} | {item.id}{role} | {kind} | {when} |")
    lines += ["", "## Not imported, or changed", ""]
    lines += [f"- {r.where}: {r.what}" for r in conversion.report] or ["- nothing"]
    return "\n".join(lines) + "\n"


def add_commands(cli: click.Group) -> None:
    from surveysim_core.importing import import_group

    @import_group(cli).command("qsf")
    @click.argument("qsf_file", type=click.Path(dir_okay=False))
    @click.option(
        "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder to write."
    )
    @click.option(
        "--demographic",
        "demographics",
        multiple=True,
        metavar="TAG",
        help="Export tag (or QID) of a single-answer question to make a demographic field"
        " (repeatable).",
    )
    @click.option("--force", is_flag=True, help="Write into --out even if it holds files.")
    def qsf(qsf_file: str, out_dir: str, demographics: tuple[str, ...], force: bool) -> None:
        """Turn QSF_FILE (a Qualtrics .qsf export) into survey.yaml, templates, a starter
        run.yaml and import-report.md, which lists everything not imported."""
        import yaml

        from surveysim_core.errors import ConfigError
        from surveysim_core.survey import Survey
        from surveysim_qsf.convert import convert, load_qsf

        source, out = Path(qsf_file), Path(out_dir)
        if out.exists() and any(out.iterdir()) and not force:
            raise ConfigError(f"{out}: not empty; choose another --out or pass --force")
        conversion = convert(load_qsf(source), list(demographics), str(source))
        out.mkdir(parents=True, exist_ok=True)
        (out / "import-report.md").write_text(report_text(source, conversion), encoding="utf-8")
        if not conversion.survey["questions"]:
            raise ConfigError(
                f"{source}: no question could be imported; see {out / 'import-report.md'}"
            )
        for name, text in conversion.templates.items():
            (out / f"{name}.j2").write_text(text, encoding="utf-8")
        text = yaml.safe_dump(conversion.survey, sort_keys=False, allow_unicode=True, width=100)
        (out / "survey.yaml").write_text(text, encoding="utf-8")
        if not (out / "run.yaml").exists():
            (out / "run.yaml").write_text(STARTER_CONFIG, encoding="utf-8")
        survey = Survey.from_yaml(out / "survey.yaml")  # the written definition must load
        click.echo(
            f"wrote {out}: {len(survey.spec.questions)} questions,"
            f" {len(survey.spec.demographics)} demographic fields;"
            f" {len(conversion.report)} items not imported or changed"
            f" (see {out / 'import-report.md'})"
        )
