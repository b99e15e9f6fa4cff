"""Entry point of the ``losses`` plugin: registers the losses by import path only.

Nothing heavy (torch) is imported here, so ``surveysim --help`` stays fast.
"""

from surveysim_core import hookimpl


@hookimpl
def register_losses(register):
    register(
        "numeric_penalty",
        "surveysim_losses.numeric:NumericPenaltyLoss",
        options="surveysim_losses.options:NumericPenaltyOptions",
    )
    register(
        "numeric_penalty_multitoken",
        "surveysim_losses.multitoken:MultiTokenNumericPenaltyLoss",
        options="surveysim_losses.options:MultiTokenNumericPenaltyOptions",
    )
