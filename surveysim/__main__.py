"""``python -m surveysim ...`` runs the ``surveysim`` command line."""

from surveysim_core.cli import main

if __name__ == "__main__":
    main()
