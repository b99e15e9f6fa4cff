"""Virtual populations and intervention piloting: ``surveysim simulate`` and ``surveysim pilot``."""
