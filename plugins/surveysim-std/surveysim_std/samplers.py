"""Population samplers: where virtual participants' demographics come from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from surveysim_core.errors import DataError
from surveysim_core.protocols import Sampler
from surveysim_core.survey import SurveySpec


class TestSplitSampler(Sampler):
    """The test split's own respondents (what evaluation against held-out people uses)."""

    def sample(self, respondents, splits, seed, spec: SurveySpec | None = None) -> pd.DataFrame:
        return respondents.loc[splits["test"]]


class MarginalOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int = Field(1000, ge=1, description="Number of virtual participants.")
    marginals: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="Target share of each option per field (e.g. a target market); fields not"
        " given are drawn from the training split's marginals.",
    )


class MarginalSampler(Sampler):
    """Each field drawn independently from target marginals (or the training split's)."""

    Options = MarginalOptions

    def sample(self, respondents, splits, seed, spec: SurveySpec | None = None) -> pd.DataFrame:
        rng = np.random.default_rng(seed)
        opts = self.options or MarginalOptions()
        train = respondents.loc[splits["train"]]
        columns = {}
        for name in respondents.columns:
            if name in opts.marginals:
                shares = opts.marginals[name]
                allowed = spec.demographics[name].options if spec else list(shares)
                bad = [k for k in shares if k not in allowed]
                if bad:
                    raise DataError(f"sampler marginals.{name}: unknown option(s) {bad}")
                values = list(shares)
                weights = np.array([shares[k] for k in values], float)
            else:
                counts = train[name].value_counts()
                values, weights = list(counts.index), counts.to_numpy(float)
            picks = rng.choice(len(values), size=opts.n, p=weights / weights.sum())
            columns[name] = [values[k] for k in picks]
        index = pd.Index([f"v{i:05d}" for i in range(opts.n)], name="subject_id")
        return pd.DataFrame(columns, index=index)


class FileOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="CSV with subject_id and one column per demographic field.")


class FileSampler(Sampler):
    """Demographics read from a CSV file (multi-select values joined by '|')."""

    Options = FileOptions

    def sample(self, respondents, splits, seed, spec: SurveySpec | None = None) -> pd.DataFrame:
        path = Path(self.options.path)
        if not path.exists():
            raise DataError(f"{path}: no such file")
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        if "subject_id" not in table:
            raise DataError(f"{path}: missing column subject_id")
        missing = [c for c in respondents.columns if c not in table]
        if missing:
            raise DataError(f"{path}: missing columns: {', '.join(missing)}")
        out = table.set_index("subject_id")[list(respondents.columns)]
        if spec is not None:
            for name, fld in spec.demographics.items():
                for row, value in enumerate(out[name], start=1):
                    labels = value.split("|") if fld.multi else [value]
                    if any(label not in fld.options for label in labels):
                        raise DataError(
                            f"{path}: row {row}, column {name}: unknown option {value!r}"
                        )
                if fld.multi:
                    out[name] = [tuple(v.split("|")) for v in out[name]]
        return out
