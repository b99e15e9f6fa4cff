"""The American National Election Studies 1996 sample carried by statsmodels
(``statsmodels.datasets.anes96``, 944 respondents) as a surveysim survey."""
