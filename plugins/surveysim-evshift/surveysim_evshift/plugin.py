"""Registers the EV-shift survey. Light imports only: the survey is built on first use."""

from surveysim_core import hookimpl


@hookimpl
def register_surveys(register):
    register("evshift", "surveysim_evshift.survey:SURVEY")
