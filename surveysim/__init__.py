"""``python -m surveysim``: the ``surveysim`` command. The toolkit itself is ``surveysim_core``."""
