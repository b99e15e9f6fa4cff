"""surveysim's standard plugin: everything generic that a survey run needs."""
