"""Decoders: how answers are drawn from a model.

``sample`` is the paper's decoding: greedy at temperature 0, ancestral sampling at temperature t,
at most ``max_new_tokens`` new tokens, then the answer parser chain. ``exact`` asks the model for
the probability of every valid answer (backends that implement ``answer_distribution``), which
gives metrics without sampling noise.
"""

from __future__ import annotations

import numpy as np

from surveysim_core.answers import AnswerDistribution
from surveysim_core.errors import PluginError
from surveysim_core.protocols import Decoded, Decoder


class SampleDecoder(Decoder):
    def decode(self, model, prompts, answer, parse, temperatures, max_new_tokens, seed):
        out = {}
        for t in temperatures:
            texts = model.generate(prompts, temperature=t, max_new_tokens=max_new_tokens, seed=seed)
            parsed = np.array([_or_nan(parse(text)) for text in texts], dtype=float)
            distribution = AnswerDistribution.from_codes(parsed, answer)
            valid = distribution.probs.sum(axis=1) > 0
            out[t] = Decoded(distribution, np.where(valid, parsed, np.nan), texts)
        return out


class ExactDecoder(Decoder):
    exact = True

    def decode(self, model, prompts, answer, parse, temperatures, max_new_tokens, seed):
        if not hasattr(model, "answer_distribution"):
            raise PluginError(
                f"decoder 'exact': the backend's model {type(model).__name__}"
                " has no answer_distribution; use decoding.decoder: sample"
            )
        probs = model.answer_distribution(prompts, answer.labels, list(temperatures))
        out = {}
        for t in temperatures:
            p = np.asarray(probs[t], dtype=float)
            valid = p.sum(axis=1) > 0
            codes = np.where(valid, answer.support[p.argmax(axis=1)], np.nan)
            out[t] = Decoded(AnswerDistribution(p, exact=True), codes)
        return out


def _or_nan(value):
    return np.nan if value is None else value
