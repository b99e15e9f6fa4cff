"""Registers the ANES 1996 survey. Light imports only: the survey is built on first use."""

from surveysim_core import hookimpl


@hookimpl
def register_surveys(register):
    register("anes96", "surveysim_anes96.survey:SURVEY")
