"""No module imports another module's private names (``from x import _name``): helpers shared
across modules or packages are public (e.g. ``surveysim_hf.forward``)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def private_imports(source: str) -> list[str]:
    """``module: name`` for every ``from module import _name`` (dunder names such as
    ``__version__`` are public)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            for alias in node.names:
                name = alias.name
                if name.startswith("_") and not (name.startswith("__") and name.endswith("__")):
                    found.append(f"{module}: {name}")
    return found


def test_the_check_finds_private_imports():
    source = (
        "from surveysim_hf.exact import _unwrap, model_logits_at\n"
        "from .exact import (\n    answer_distribution,\n    _mask_dtype,\n)\n"
        "from surveysim_core import __version__\n"
        "def f():\n    from surveysim_hf.exact import _output_size\n"
    )
    assert private_imports(source) == [
        "surveysim_hf.exact: _unwrap",
        ".exact: _mask_dtype",
        "surveysim_hf.exact: _output_size",
    ]


def test_no_private_imports_across_modules():
    files = sorted((ROOT / "plugins").glob("*/*/**/*.py")) + sorted(
        (ROOT / "surveysim_core").rglob("*.py")
    )
    assert any(f.name == "packing.py" for f in files)  # the scan does reach the plugins
    offenders = [
        f"{path.relative_to(ROOT)}: {hit}"
        for path in files
        for hit in private_imports(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
