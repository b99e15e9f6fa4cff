"""Registers the .sav and .dta readers and ``surveysim import wide``. Light imports only:
pyreadstat loads when a file is read."""

from __future__ import annotations

from surveysim_core import hookimpl

_M = "surveysim_readstat"


@hookimpl
def register_data_formats(register):
    register("sav", f"{_M}.readers:read_sav")
    register("dta", f"{_M}.readers:read_dta")


@hookimpl
def register_commands(cli):
    from surveysim_readstat.commands import add_commands

    add_commands(cli)
