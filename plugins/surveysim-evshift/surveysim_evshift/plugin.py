"""Registers the EV-shift survey. Light imports only: the survey is built on first use."""

from surveysim_core import hookimpl


@hookimpl
def register_surveys(register):
    register("evshift", "surveysim_evshift.survey:SURVEY")
    register("evshift-0to9", "surveysim_evshift.survey:SURVEY_0TO9")
