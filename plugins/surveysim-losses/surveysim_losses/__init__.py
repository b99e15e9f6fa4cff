"""Numeric-penalty fine-tuning losses for the ``hf`` backend (see docs/losses.md)."""

__version__ = "0.1.0"
