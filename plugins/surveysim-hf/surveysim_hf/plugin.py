"""Entry point of the ``hf`` plugin: registers the backend and the loss by import path only.

Nothing heavy is imported here, so ``surveysim --help`` stays fast.
"""

from surveysim_core import hookimpl


@hookimpl
def register_backends(register):
    register("hf", "surveysim_hf.backend:HFBackend", options="surveysim_hf.options:HFOptions")


@hookimpl
def register_losses(register):
    register("cross_entropy", "surveysim_hf.losses:CrossEntropyLoss", options=None)
