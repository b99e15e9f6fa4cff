"""Readers for long-format survey files. They read; the core validates."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from surveysim_core.errors import DataError


def read_csv(path: Path) -> pd.DataFrame:
    # everything as text: the core decides what is a number, so "007" or "5.5" are not mangled
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def read_parquet(path: Path) -> pd.DataFrame:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise DataError(
            f"{path}: reading Parquet needs pyarrow: pip install 'surveysim-core[parquet]'"
        ) from None
    return pd.read_parquet(path)


def read_jsonl(path: Path) -> pd.DataFrame:
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: line {number}: not valid JSON: {exc.msg}") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}: line {number}: expected a JSON object")
            rows.append(row)
    return pd.DataFrame(rows)
