"""The EV-shift survey: preferences for battery electric vehicles, before and after short
informational statements (Arechiga et al. 2022; Namikoshi et al. 2024)."""
