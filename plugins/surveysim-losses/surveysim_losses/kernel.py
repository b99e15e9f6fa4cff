"""The triangular kernel shared by both losses."""

from __future__ import annotations

import torch


def triangular_weights(support: torch.Tensor, true: torch.Tensor, d: float) -> torch.Tensor:
    """Soft labels ``(batch, len(support))``: ``w = 1 - |a - a_true| / d`` if ``|a - a_true| < d``
    else 0, normalised to sum 1 over the support ``a`` (the true answer always has weight 1)."""
    distance = (support[None, :].double() - true[:, None].double()).abs()
    weights = (1.0 - distance / d).clamp(min=0.0)
    return weights / weights.sum(dim=1, keepdim=True)
