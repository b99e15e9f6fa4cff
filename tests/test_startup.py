"""Start-up cost: ``surveysim --help`` and ``surveysim plugins`` import no heavy library."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ["torch", "transformers", "peft", "bitsandbytes", "sklearn", "catboost", "matplotlib"]
BIN = Path(sys.executable).parent


def imported_top_level_modules(importtime_stderr: str) -> set[str]:
    """Module names from ``python -X importtime`` lines: 'import time: self | cumulative | name'."""
    names = set()
    for line in importtime_stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            names.add(name.split(".")[0])
    return names


@pytest.mark.parametrize("args", [["--help"], ["plugins"]])
def test_cli_imports_no_heavy_library(args):
    proc = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-c",
            "from surveysim_core.cli import main; main()",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert ("Usage:" in proc.stdout) if args == ["--help"] else ("std 0.1.0" in proc.stdout)
    modules = imported_top_level_modules(proc.stderr)
    assert "surveysim_core" in modules  # the parsing works
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))


def test_building_the_cli_imports_no_heavy_library():
    code = (
        "import sys\n"
        "from surveysim_core.cli import build_cli\n"
        "group = build_cli()\n"
        "assert 'run' in group.commands and 'plugins' in group.commands\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_installed_console_script_help():
    script = BIN / "surveysim"
    if not script.exists():
        pytest.skip("the surveysim console script is not installed beside this Python")
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for command in ("run", "validate", "plugins", "data"):
        assert command in proc.stdout
