"""SPSS and Stata files through pyreadstat: codes, their value labels, and missing values.

Missing values become missing (NaN): SPSS user-defined missing values (discrete values and
ranges) and system missing, Stata's ``.`` and extended missing values ``.a`` to ``.z``.
The long-format readers decode every value-labelled column to its labels, so that a categorical
answer or a demographic field holds the option label the survey lists; a code with no label stays
a number (written as a whole number where it is one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from surveysim_core.errors import DataError


@dataclass
class LabelledTable:
    """A data file's columns as codes, with each column's value labels (code -> label)."""

    codes: pd.DataFrame
    value_labels: dict[str, dict[Any, str]] = field(default_factory=dict)
    source: str = ""


def read_labelled(path: str | Path) -> LabelledTable:
    """Read a .sav or .dta file; missing-value codes are read as missing."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        import pyreadstat
    except ImportError:
        raise DataError(
            f"{path}: reading SPSS and Stata files needs pyreadstat:"
            f" pip install -e plugins/surveysim-readstat"
        ) from None
    readers = {
        ".sav": pyreadstat.read_sav,
        ".zsav": pyreadstat.read_sav,
        ".dta": pyreadstat.read_dta,
    }
    if suffix not in readers:
        raise DataError(f"{path}: not an SPSS (.sav) or Stata (.dta) file")
    if not path.exists():
        raise DataError(f"{path}: no such file")
    try:
        # user_missing=False: SPSS user-missing codes and Stata .a-.z are read as NaN
        codes, meta = readers[suffix](str(path), user_missing=False)
    except Exception as exc:  # pyreadstat raises its own ReadstatError, PyreadstatError, ...
        raise DataError(f"{path}: could not be read as {suffix.lstrip('.')}: {exc}") from exc
    labels = {col: dict(mapping) for col, mapping in (meta.variable_value_labels or {}).items()}
    return LabelledTable(codes, labels, str(path))


def plain_value(value: Any) -> Any:
    """A code as a file would show it: 3.0 -> 3; missing stays None."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def label_of(value: Any, labels: dict[Any, str]) -> Any:
    """The value label of a code, else the code itself (missing stays None)."""
    value = plain_value(value)
    if value is None:
        return None
    for key in (value, float(value) if isinstance(value, int) else None):
        if key is not None and key in labels:
            return labels[key]
    return value


def decoded(table: LabelledTable) -> pd.DataFrame:
    """Every column with value labels decoded to its labels; other columns as plain values."""
    out = {}
    for col in table.codes.columns:
        labels = table.value_labels.get(col, {})
        out[col] = [label_of(v, labels) for v in table.codes[col]]
    return pd.DataFrame(out, columns=table.codes.columns, dtype=object)


def read_sav(path: Path) -> pd.DataFrame:
    """A long-format SPSS file, value labels decoded."""
    return decoded(read_labelled(path))


def read_dta(path: Path) -> pd.DataFrame:
    """A long-format Stata file, value labels decoded."""
    return decoded(read_labelled(path))
