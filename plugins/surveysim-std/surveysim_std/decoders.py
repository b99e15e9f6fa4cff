"""Decoders: how answers are drawn from a model.

``sample`` is the paper's decoding: greedy at temperature 0, ancestral sampling at temperature t,
at most ``max_new_tokens`` new tokens, then the answer parser chain. ``exact`` asks the model for
the probability of every valid answer (backends that implement ``answer_distribution``), which
gives metrics without sampling noise: the numbers of a scale, or for a question with options
every spelling of each option's label (:func:`option_strings`), summed per option.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from surveysim_core.answers import AnswerDistribution, AnswerType
from surveysim_core.errors import PluginError
from surveysim_core.option_order import has_options
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
        if has_options(answer):
            strings, index = option_strings(answer, parse)
        else:
            strings, index = list(answer.labels), np.arange(len(answer.labels))
        probs = model.answer_distribution(prompts, strings, list(temperatures))
        out = {}
        for t in temperatures:
            p = np.zeros((len(prompts), len(answer.support)))
            # the spellings of an option are different generations: their probabilities add
            np.add.at(p.T, index, np.asarray(probs[t], dtype=float).T)
            valid = p.sum(axis=1) > 0
            codes = np.where(valid, answer.support[p.argmax(axis=1)], np.nan)
            out[t] = Decoded(AnswerDistribution(p, exact=True), codes)
        return out


def option_strings(
    answer: AnswerType, parse: Callable[[str], float | None]
) -> tuple[list[str], np.ndarray]:
    """The answer strings the exact decoder scores for a question with options, and the
    option (column of ``answer.support``) each one means.

    Candidates: every label and alias as written, with spaces collapsed, in lower case,
    capitalised and in upper case (the ``choice`` parser ignores case and spacing), then the
    numbers 0 to k (a template that numbers the options, read by ``first_integer``). Each
    candidate means the option the question's parser chain reads from it; a candidate that it
    reads as no option is left out, so the exact distribution counts what sampling would.
    """
    names = [*answer.labels, *(getattr(answer.options, "aliases", None) or {})]
    candidates: list[str] = []
    for name in names:
        base = " ".join(name.split())
        candidates += [name, base, base.lower(), base[:1].upper() + base[1:].lower(), base.upper()]
    candidates += [str(i) for i in range(len(answer.support) + 1)]
    strings, index = [], []
    for text in dict.fromkeys(c for c in candidates if c):
        code = parse(text)
        column = int(answer.index_of(np.array([np.nan if code is None else code]))[0])
        if column >= 0:
            strings.append(text)
            index.append(column)
    if not strings:
        raise PluginError(
            f"decoder 'exact': the answer parser reads none of the labels of {answer.describe()}"
            " as an option; use decoding.decoder: sample"
        )
    return strings, np.asarray(index, dtype=np.int64)


def _or_nan(value):
    return np.nan if value is None else value
