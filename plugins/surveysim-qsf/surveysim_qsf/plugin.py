"""Registers ``surveysim import qsf``. Light imports only: the converter loads when it runs."""

from __future__ import annotations

from surveysim_core import hookimpl


@hookimpl
def register_commands(cli):
    from surveysim_qsf.commands import add_commands

    add_commands(cli)
