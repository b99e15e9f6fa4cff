"""``surveysim import wide``: a one-row-per-respondent file to the long format."""

from __future__ import annotations

from pathlib import Path

import click


def read_wide(path: Path):
    """A wide file as a :class:`LabelledTable`: .sav/.dta with their value labels, other
    suffixes through the registered data-format readers (no labels)."""
    from surveysim_core.plugins import get_plugins
    from surveysim_readstat.readers import LabelledTable, read_labelled

    if path.suffix.lower() in {".sav", ".zsav", ".dta"}:
        return read_labelled(path)
    from surveysim_core.data import read_table

    return LabelledTable(read_table(path, get_plugins().data_formats), {}, str(path))


def add_commands(cli: click.Group) -> None:
    from surveysim_core.importing import import_group

    @import_group(cli).command("wide")
    @click.argument("data_file", type=click.Path(dir_okay=False))
    @click.option(
        "--mapping",
        "mapping_file",
        required=True,
        type=click.Path(dir_okay=False),
        help="YAML file: subject_id, demographics and questions, each naming a column.",
    )
    @click.option(
        "--out",
        "out_file",
        required=True,
        type=click.Path(dir_okay=False),
        help="Long-format CSV to write.",
    )
    @click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
    def wide(data_file: str, mapping_file: str, out_file: str, force: bool) -> None:
        """Turn DATA_FILE (.sav, .dta, .csv, ...; one row per respondent) into a long-format CSV."""
        from surveysim_core.errors import DataError
        from surveysim_readstat.wide import load_mapping, wide_to_long

        out = Path(out_file)
        if out.exists() and not force:
            raise DataError(f"{out}: exists; choose another --out or pass --force")
        mapping = load_mapping(mapping_file)
        table = read_wide(Path(data_file))
        long = wide_to_long(table, mapping, mapping_file)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        long.to_csv(tmp, index=False, lineterminator="\n")
        tmp.replace(out)  # a half-written file never takes the name
        respondents = long["subject_id"].nunique()
        click.echo(f"wrote {out}: {len(long)} answers of {respondents} respondents")
