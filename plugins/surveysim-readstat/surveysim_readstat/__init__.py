"""SPSS (.sav) and Stata (.dta) files for surveysim."""
