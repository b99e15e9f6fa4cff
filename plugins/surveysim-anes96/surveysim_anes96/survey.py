"""The ANES 1996 survey object: ``survey.yaml``, and a population that is the real sample.

The survey has no generator of fake respondents: its ``synthesize`` hook writes the statsmodels
sample itself (all 944 respondents, or a seeded subsample when fewer are asked for) into the
run's data folder in surveysim's long format. A run config therefore says
``data: {source: synthetic}`` and needs no path; docs/tutorial-anes96.md explains the choice.
The same long-format file, once written (``surveysim data synth anes96 --out DIR``), can also be
read with ``data: {source: file, path: DIR/responses.csv}``.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np

from surveysim_core.errors import ConfigError
from surveysim_core.survey import Survey

HERE = resources.files("surveysim_anes96")


def build_survey() -> Survey:
    from surveysim_anes96.codebook import check_codebook

    survey = Survey.from_yaml(Path(str(HERE / "survey.yaml")), synthesize=synthesize)
    try:
        check_codebook(survey.spec)
    except ValueError as exc:
        raise ConfigError(f"{survey.source}: {exc}") from None
    return survey


def synthesize(out_dir: Path, subjects: int | None, seed: int) -> Path:
    """Write the real ANES 1996 sample as ``out_dir/responses.csv`` and return its path.

    ``subjects`` below 944 keeps a subsample of respondents drawn without replacement with
    ``seed`` (``seed`` has no other use); ``subjects`` above 944 is an error. ``source.json``
    beside it records where the data came from.
    """
    import statsmodels

    from surveysim_anes96.codebook import SOURCE, load_raw, long_table

    raw = load_raw()
    total = len(raw)
    if subjects is not None and subjects > total:
        raise ConfigError(
            f"data.subjects: the ANES 1996 sample has {total} respondents, {subjects} asked for"
        )
    if subjects is not None and subjects < total:
        keep = np.sort(np.random.default_rng(seed).choice(total, size=subjects, replace=False))
        raw = raw.iloc[keep]
    table = long_table(raw, SURVEY.spec)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "responses.csv"
    table.to_csv(path, index=False, lineterminator="\n")
    provenance = {
        "source": SOURCE,
        "statsmodels_version": statsmodels.__version__,
        "respondents": len(raw),
        "of": total,
        "subsample_seed": seed if len(raw) < total else None,
        "subject_id": "row index of statsmodels.datasets.anes96.load_pandas().data",
        "note": "real survey answers, not synthetic; codes decoded by surveysim_anes96.codebook",
    }
    (out / "source.json").write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    return path


SURVEY = build_survey()
