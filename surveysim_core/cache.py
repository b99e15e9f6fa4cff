"""A content-addressed cache of stage results, shared by every run on a machine.

An entry is a folder ``<root>/<kind>/<key>/`` whose key is the hash of everything its content
depends on (a system's settings, the data it saw, its prompts). It is written under a temporary
name and renamed into place, with ``manifest.json`` holding the SHA-256 of every file; an entry
whose files do not match their hashes (a crash half-way, a disk error, an edit) is deleted and
recomputed, never trusted. Only arrays (``.npz`` without pickles), JSON and the files a backend
writes are stored.

Root: ``SURVEYSIM_CACHE`` if set, else ``output.cache_dir`` of the run, else
``~/.cache/surveysim``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from surveysim_core.answers import AnswerDistribution
from surveysim_core.files import file_sha256
from surveysim_core.protocols import ItemSet, SystemAnswers
from surveysim_core.rundir import is_main_process

MANIFEST = "manifest.json"


def cache_root(configured: str | None = None) -> Path:
    """Where the cache lives: ``SURVEYSIM_CACHE``, else the configured folder, else
    ``~/.cache/surveysim``."""
    env = os.environ.get("SURVEYSIM_CACHE")
    if env:
        return Path(env).expanduser()
    if configured:
        return Path(configured).expanduser()
    return Path("~/.cache/surveysim").expanduser()


def digest(*parts: Any) -> str:
    """The SHA-256 of JSON-able parts (keys sorted), as a cache key."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def items_fingerprint(items: ItemSet, with_prompts: bool) -> str:
    """A hash of an item set: its items and respondents, and its prompts when asked."""
    h = hashlib.sha256()
    columns = [c for c in items.items.columns if c != "answer_text"]
    h.update(pd.util.hash_pandas_object(items.items[columns], index=False).to_numpy().tobytes())
    h.update(pd.util.hash_pandas_object(items.respondents.astype(str)).to_numpy().tobytes())
    if with_prompts:
        for prompt in items.prompts:
            h.update(prompt.system.encode())
            h.update(b"\0")
            h.update(prompt.user.encode())
            for question, answer in prompt.history:  # respondent memory: earlier turns
                h.update(b"\2" + question.encode() + b"\3" + answer.encode())
            h.update(b"\1")
    return h.hexdigest()[:32]


class Cache:
    """Entries by kind and key; ``reused`` and ``computed`` list what this run did."""

    def __init__(self, root: Path, progress: Callable[[str], None] = lambda m: None):
        self.root = Path(root)
        self.progress = progress
        self.reused: list[str] = []
        self.computed: list[str] = []

    def entry(self, kind: str, key: str) -> Path | None:
        """The folder of a valid entry, or None (a corrupt one is removed first)."""
        path = self.root / kind / key
        manifest = path / MANIFEST
        if not manifest.is_file():
            if path.exists():
                self._discard(path, "no manifest")
            return None
        try:
            files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
            bad = [n for n, h in files.items() if file_sha256(path / n) != h]
        except (OSError, ValueError, KeyError, TypeError):
            bad = ["manifest.json"]
        if bad:
            self._discard(path, f"hash mismatch in {', '.join(sorted(bad))}")
            return None
        return path

    def has(self, kind: str, key: str) -> bool:
        """Whether an entry is there (by its manifest; :meth:`entry` checks its hashes on use)."""
        return (self.root / kind / key / MANIFEST).is_file()

    def _discard(self, path: Path, why: str) -> None:
        self.progress(f"cache: {path} is corrupt ({why}); recomputing it")
        if is_main_process():
            shutil.rmtree(path, ignore_errors=True)

    def put(self, kind: str, key: str, write: Callable[[Path], object]) -> Path | None:
        """Write an entry through ``write(folder)``, atomically; the entry's folder, or None in
        a non-main process (only the main process writes)."""
        if not is_main_process():
            return None
        final = self.root / kind / key
        tmp = self.root / kind / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            write(tmp)
            files = {
                str(p.relative_to(tmp)): file_sha256(p)
                for p in sorted(tmp.rglob("*"))
                if p.is_file()
            }
            (tmp / MANIFEST).write_text(json.dumps({"files": files}, indent=1), encoding="utf-8")
            if final.exists():  # a corrupt entry, or another run wrote it meanwhile
                shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return final

    # -- answers ------------------------------------------------------------------------------
    def get_answers(self, kind: str, key: str) -> list[SystemAnswers] | None:
        path = self.entry(kind, key)
        if path is None:
            return None
        meta = json.loads((path / "answers.json").read_text(encoding="utf-8"))
        with np.load(path / "arrays.npz", allow_pickle=False) as arrays:
            out = []
            for i, m in enumerate(meta):
                codes = arrays[f"codes_{i}"] if m["has_codes"] else None
                expected = arrays[f"expected_{i}"] if m.get("has_expected") else None
                out.append(
                    SystemAnswers(
                        m["setting"],
                        AnswerDistribution(arrays[f"probs_{i}"], m["exact"]),
                        codes,
                        m["temperature"],
                        m["params"],
                        m["texts"],
                        expected,
                    )
                )
        return out

    def put_answers(self, kind: str, key: str, answers: list[SystemAnswers]) -> None:
        def write(folder: Path) -> None:
            arrays: dict[str, np.ndarray] = {}
            meta = []
            for i, a in enumerate(answers):
                arrays[f"probs_{i}"] = np.asarray(a.distribution.probs, dtype=float)
                if a.codes is not None:
                    arrays[f"codes_{i}"] = np.asarray(a.codes, dtype=float)
                if a.expected is not None:
                    arrays[f"expected_{i}"] = np.asarray(a.expected, dtype=float)
                meta.append(
                    {
                        "setting": a.setting,
                        "exact": bool(a.distribution.exact),
                        "has_codes": a.codes is not None,
                        "has_expected": a.expected is not None,
                        "temperature": a.temperature,
                        "params": a.params,
                        "texts": a.texts,
                    }
                )
            # numpy's stubs match **arrays against savez's allow_pickle (a keyword only since
            # numpy 2.1, so it is not passed: the core allows numpy 1.24)
            np.savez(folder / "arrays.npz", **arrays)  # type: ignore[arg-type]
            (folder / "answers.json").write_text(json.dumps(meta, default=str), encoding="utf-8")

        self.put(kind, key, write)

    # -- small values -------------------------------------------------------------------------
    def get_value(self, kind: str, key: str) -> dict[str, Any] | None:
        path = self.entry(kind, key)
        if path is None:
            return None
        return json.loads((path / "value.json").read_text(encoding="utf-8"))

    def put_value(self, kind: str, key: str, value: dict[str, Any]) -> None:
        self.put(kind, key, lambda folder: (folder / "value.json").write_text(json.dumps(value)))

    # -- folders (adapters) -------------------------------------------------------------------
    def put_folder(self, kind: str, key: str, source: Path) -> Path | None:
        """A copy of ``source`` as an entry, without resumable training state (``checkpoint*``
        and per-epoch copies): what loading the adapter needs, not what resuming needs."""
        ignore = shutil.ignore_patterns("checkpoint*", "epochs", "*.tmp")
        return self.put(
            kind,
            key,
            lambda folder: shutil.copytree(source, folder, ignore=ignore, dirs_exist_ok=True),
        )
