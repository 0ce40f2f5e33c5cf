"""The package's metadata states compatible ranges; the optional dependencies stay optional."""

from __future__ import annotations

import configparser
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _requirements() -> list[tuple[str, Requirement]]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    found = [("install_requires", line) for line in
             cfg["options"]["install_requires"].splitlines()]
    for extra, block in cfg["options.extras_require"].items():
        found += [(f"[{extra}]", line) for line in block.splitlines()]
    return [(where, Requirement(line.strip())) for where, line in found
            if line.strip() and not line.strip().startswith("#")]


def test_metadata_has_no_exact_or_local_version_pins():
    reqs = _requirements()
    assert any(r.name == "torch" for _, r in reqs)  # the check really sees the extras
    for where, req in reqs:
        for spec in req.specifier:
            assert "+" not in spec.version, (
                f"setup.cfg {where}: {req} pins a local version; pins belong in constraints.txt")
            assert spec.operator not in ("==", "==="), (
                f"setup.cfg {where}: {req} is an exact pin; use a compatible range "
                f"(>=x,<y) and pin it in constraints.txt")


def test_no_local_version_anywhere_in_the_build_metadata():
    for name in ("setup.cfg", "pyproject.toml"):
        text = (ROOT / name).read_text()
        assert "+cpu" not in text and "+cu" not in text, f"{name} names a local torch build"


def test_every_metadata_requirement_with_a_constraint_pin_accepts_the_pin():
    """constraints.txt (what CI and the README install) must satisfy setup.cfg's ranges."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"constraints.txt: {line} is not an exact pin"
            pins[req.name.lower()] = spec.version
    assert {"torch", "tensorboardx"} <= set(pins)
    for where, req in _requirements():
        if req.name.lower() in pins:
            assert req.specifier.contains(pins[req.name.lower()], prereleases=True), (
                f"setup.cfg {where}: {req} does not accept the pinned {pins[req.name.lower()]}")


# Every optional dependency is made unimportable in the child process, as on a machine where
# only gymnasium, numpy and numba (the env's own requirements) are installed.
BLOCKED = ("torch", "stable_baselines3", "tensorboardX", "tensorboard", "matplotlib", "psutil",
           "pyarrow", "ray", "tqdm", "pandas", "scipy")

CHILD = textwrap.dedent(f"""
    import sys
    BLOCKED = {BLOCKED!r}

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)")
            return None

    sys.meta_path.insert(0, Block())
    import gymnasium as gym
    import autoscale_env
    for backend in ("sim", "replay"):
        kwargs = {{"trace": "sim-mi8pro-non_streaming-static"}} if backend == "replay" else {{}}
        env = gym.make("AutoScale-v0", backend=backend, **kwargs)
        obs, info = env.reset(seed=0)
        for a in range(int(env.action_space.n)):
            obs, r, term, trunc, info = env.step(a)
        env.close()
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not loaded, loaded
    print("ok", info["target"])
""")


@pytest.mark.slow
def test_env_works_with_only_gymnasium_and_numpy():
    proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok ")


def test_the_blocker_really_blocks():
    """The finder above must make an optional import fail (else the test proves nothing)."""
    code = CHILD.split("import gymnasium")[0] + "import torch\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert proc.returncode != 0 and "blocked by the test" in proc.stderr


@pytest.mark.parametrize("module", ["autoscale_env.backends.live.backend",
                                    "autoscale_env.backends.live.server"])
def test_live_backend_without_torch_names_the_extra(module):
    code = CHILD.split("import gymnasium")[0] + textwrap.dedent(f"""
        try:
            import {module}
        except ImportError as e:
            print(type(e).__name__, e)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("DependencyMissing"), proc.stdout
    assert "autoscale-env[live]" in proc.stdout
