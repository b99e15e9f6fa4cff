"""The ``surveysim import`` command group, which import plugins (Qualtrics, SPSS/Stata, ...)
share: each adds its subcommand with :func:`import_group` from its ``register_commands``."""

from __future__ import annotations

import click


def import_group(cli: click.Group) -> click.Group:
    """The ``import`` group of ``cli``, created by the first plugin that asks for it."""
    group = cli.commands.get("import")
    if group is None:

        @cli.group("import")
        def group() -> None:
            """Turn questionnaires and data files from other tools into surveysim's formats."""

    if not isinstance(group, click.Group):
        raise click.UsageError("a plugin registered 'import' as a command, not a group")
    return group
