"""The house keeps its rules: import contracts (import-linter, ``.importlinter``), the lint rule
set (ruff, ``pyproject.toml``), and no module reads another module's private names."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:  # the [test] extra installs both; a missing one is a broken install
        pytest.fail(f"{name} is not installed: pip install -c constraints.txt '.[test]'")
    return found


def test_import_contracts_hold():
    """Every contract of .importlinter is kept (layers, forbidden imports, no circles)."""
    done = subprocess.run([_tool("lint-imports"), "--no-cache"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_ruff_passes():
    done = subprocess.run([_tool("ruff"), "check", "."], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout[-4000:]




def private_imports(text: str) -> list[str]:
    found = []
    for match in re.finditer(r"^\s*from (?:agents|autoscale_env)[\w.]* import (\([^)]*\)|.*)$",
                             text, re.M):
        names = match.group(1).strip("()").replace("\n", " ")
        for name in names.split("#")[0].split(","):
            name = name.strip().split(" as ")[0]
            if name.startswith("_") and not name.startswith("__"):
                found.append(name)
    return found


def test_the_private_name_check_sees_both_forms():
    assert private_imports("from agents.bandits import _Hidden\n") == ["_Hidden"]
    assert private_imports("from autoscale_env.world import (\n    config,\n    _x,\n)\n") == ["_x"]
    assert private_imports("from autoscale_env.version import __version__\n") == []


def test_no_module_imports_another_modules_private_names():
    offenders = []
    for top in ("autoscale_env", "agents", "scripts"):
        for path in sorted((REPO / top).rglob("*.py")):
            names = private_imports(path.read_text())
            if names:
                offenders.append(f"{path.relative_to(REPO)}: {', '.join(names)}")
    assert not offenders, "\n".join(offenders)
