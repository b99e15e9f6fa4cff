"""surveysim: simulate survey populations with language models fine-tuned on a survey."""

from surveysim_core.hookspecs import hookimpl

__all__ = ["__version__", "hookimpl"]
__version__ = "0.1.0"
