"""Qualtrics survey files (.qsf) for surveysim."""
