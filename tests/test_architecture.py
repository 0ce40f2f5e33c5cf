"""The package's modules import only what README's Architecture table allows."""

from __future__ import annotations

import ast
from pathlib import Path

import autoscale_env

ROOT = Path(autoscale_env.__file__).parent

#: module -> package modules it may import (README, Architecture). ``live.*`` stands for the
#: live backend's own submodules.
ALLOWED = {
    "errors": set(),
    "core": {"config"},  # type hints only (TYPE_CHECKING)
    "config": {"core", "errors"},
    "backends.power": set(),
    "backends.radio": {"config"},
    "reward": {"config"},
    "state": {"config", "core"},
    "rules": {"config", "core", "reward", "state", "backends.power", "backends.radio"},
    "files": {"errors"},
    "traces": {"config", "core", "errors", "files"},
    "backends": {"errors"},
    "backends.sim": {"config", "core", "rules"},
    "backends.replay": {"config", "core", "errors", "traces", "rules"},
    "env": {"config", "core", "errors", "backends", "rules", "state"},
    "vector": {"env", "backends.sim", "rules", "errors"},
    "recording": {"config", "core", "errors", "files", "traces", "backends"},
    "calibrate": {"config", "core", "errors", "files", "traces", "backends.radio"},
    "sim_traces": {"config", "traces", "recording", "backends.sim"},
    "provenance": {"config"},
    "fit_bins": {"config", "state"},
    "estimates": {"config", "errors", "provenance", "backends.sim"},
    "validate": {"config", "errors"},
    "__main__": set(),  # runs agents.cli (outside the package) when it is installed
    "backends.live.backend": {"config", "core", "errors", "backends.sim", "backends.radio",
                              "live.*"},
    "__main__": set(),  # the CLI lives in agents (imported lazily)
    "provenance": {"config"},
    "validate": {"config", "errors"},
    "fit_bins": {"config", "state"},
    "estimates": {"config", "errors", "provenance", "backends.sim"},
    "fleet": {"fleet.config", "fleet.core", "fleet.env", "fleet.env_args"},
    "fleet.config": {"config", "errors"},
    "fleet.contention": {"config", "backends.radio", "fleet.config"},
    "fleet.worlds": {"core", "backends", "backends.sim", "rules"},
    "fleet.core": {"config", "core", "errors", "reward", "rules", "state", "fleet.config",
                   "fleet.contention", "fleet.worlds"},
    "fleet.env_args": {"errors", "fleet.config", "fleet.core"},
    "fleet.env": {"errors", "fleet.core", "fleet.env_args"},
}


def imports(path: Path) -> set[str]:
    """Package modules ``path`` imports (``autoscale_env.`` stripped; the package itself for
    ``from autoscale_env import x`` is resolved to ``x`` when ``x`` is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("autoscale_env"):
            base = node.module.removeprefix("autoscale_env").lstrip(".")
            for alias in node.names:
                name = f"{base}.{alias.name}".lstrip(".")
                if (ROOT / f"{name.replace('.', '/')}.py").exists() or \
                        (ROOT / name.replace(".", "/")).is_dir():
                    found.add(name)
                elif base:
                    found.add(base)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("autoscale_env."):
                    found.add(alias.name.removeprefix("autoscale_env."))
    return {"live.*" if m.startswith("backends.live.") else m for m in found}


def test_every_module_imports_only_what_the_architecture_allows():
    for module, allowed in ALLOWED.items():
        path = ROOT / (module.replace(".", "/") + ".py")
        if not path.exists():
            path = ROOT / module.replace(".", "/") / "__init__.py"
        extra = imports(path) - allowed - {module}
        assert not extra, f"autoscale_env.{module} imports {sorted(extra)} (README Architecture)"


def test_every_top_level_module_is_in_the_table():
    modules = {p.stem for p in ROOT.glob("*.py") if p.stem != "__init__"}
    modules |= {p.parent.name for p in ROOT.glob("*/__init__.py")}  # packages (backends, fleet)
    assert modules <= set(ALLOWED), sorted(modules - set(ALLOWED))


def test_every_fleet_module_is_in_the_table():
    modules = {f"fleet.{p.stem}" for p in (ROOT / "fleet").glob("*.py") if p.stem != "__init__"}
    assert modules <= set(ALLOWED), sorted(modules - set(ALLOWED))
