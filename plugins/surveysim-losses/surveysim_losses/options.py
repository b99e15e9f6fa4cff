"""Options of the numeric-penalty losses (``backend.loss.options``); free of torch."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class NumericPenaltyOptions(BaseModel):
    """Options of ``numeric_penalty`` (the paper's, answers 0-9, one digit token)."""

    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Weight of the penalty: L = (1 - alpha) * cross-entropy + alpha * penalty"
        " (paper: 0.5; 0 is plain cross-entropy).",
    )
    d: float = Field(
        10,
        gt=0,
        description="Width of the triangular kernel in answer units: w = 1 - |a - a_true| / d"
        " where |a - a_true| < d, else 0 (paper: 10 on the 0-9 scale, i.e. every answer"
        " gets some weight; d <= 1 puts all weight on the true answer).",
    )


class MultiTokenNumericPenaltyOptions(NumericPenaltyOptions):
    """Options of ``numeric_penalty_multitoken`` (any integer scale, exact string probabilities)."""

    beta: float = Field(
        0.0,
        ge=0,
        description="Weight of the expected-distance term beta * ((E_P[a] - a_true) / span)^2,"
        " E over the model's answer distribution renormalised on the answer set.",
    )
    cross_entropy: Literal["tokens", "exact"] = Field(
        "tokens",
        description="The cross-entropy term: 'tokens', the usual mean token cross-entropy over"
        " the label tokens (answer digits and end-of-turn token; the whole text with"
        " loss_on=all); 'exact', the mean -log P(a_true) of the full answer string including"
        " its termination.",
    )
