"""The ``autoscale`` command explains itself: help and defaults everywhere, valid names, evaluate."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agents import agent_names
from agents.cli import main
from agents.experiments.benchmark import output_listing
from autoscale_env.world import config

ROOT = Path(__file__).resolve().parents[2]


def _help(capsys, *command: str) -> str:
    assert main([*command, "--help"]) == 0
    # one line of words; a name the help wrapped after a hyphen ("linucb-\nraw") joined again
    return " ".join(capsys.readouterr().out.split()).replace("- ", "-")


def test_benchmark_help_shows_every_default(capsys):
    text = _help(capsys, "benchmark")
    assert "[default: 64000]" in text and "[default: runs/benchmark]" in text


def test_help_lists_the_valid_names(capsys):
    text = _help(capsys, "benchmark")
    for name in [a for a in agent_names() if a != "fixed:<target>"]:
        assert name in text
    for name in [*config.device_names(), *config.load_scenarios(), *config.SETTINGS,
                 *config.FEATURE_SETS, *config.load_reward_presets(), "fixed:<target>",
                 "local/dsp/int8", "package.module:Class"]:
        assert name in text, name


def test_sweep_and_serve_help_show_defaults(capsys):
    out = _help(capsys, "sweep")
    assert "--engine" in out and "[default: local]" in out and "qlearning" in out
    out = _help(capsys, "serve")
    assert "--max-connections" in out and "[default: 32]" in out


def test_train_prints_the_benchmark_table_and_evaluate_reloads_the_model(tmp_path, capsys):
    out = tmp_path / "q"
    assert main(["train", "--steps", "2000", "--scenario", "translation", "--setting", "static",
                 "--eval-steps", "300", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert f"model: {out / 'model.npz'}" in text
    row = "| mi8pro | translation | static | qlearning | 1 |"
    assert row in text and "| agent | eff. vs mobile CPU (x)" in text
    train_line = next(line for line in text.splitlines() if line.startswith(row))
    # the same model, the same evaluation requests: the same numbers
    assert main(["evaluate", "--model", str(out / "model.npz"), "--seeds", "1",
                 "--eval-steps", "300"]) == 0
    again = capsys.readouterr().out
    assert train_line in again.splitlines()
    assert main(["evaluate", "--model", str(out / "model.npz"), "--setting", "static,dynamic",
                 "--seeds", "2", "--eval-steps", "200"]) == 0
    table = capsys.readouterr().out
    assert "| mi8pro | translation | static | qlearning | 2 |" in table
    assert "| mi8pro | translation | dynamic | qlearning | 2 |" in table


@pytest.mark.slow
def test_evaluate_loads_sb3_and_baseline_models(tmp_path, capsys):
    pytest.importorskip("stable_baselines3")
    assert main(["train", "--agent", "ppo", "--steps", "256", "--hp", "n_steps=128",
                 "--eval-steps", "0", "--out", str(tmp_path / "ppo"), "--quiet"]) == 0
    assert main(["train", "--agent", "fixed:local/cpu/fp32", "--steps", "1", "--eval-steps", "0",
                 "--out", str(tmp_path / "cpu"), "--quiet"]) == 0
    capsys.readouterr()
    assert list((tmp_path / "ppo" / "tb").glob("*/ppo_*/events.out.tfevents.*")), \
        "train writes SB3's own train/* scalars beside ours"
    assert main(["evaluate", "--model", str(tmp_path / "ppo" / "model.zip"), "--seeds", "1",
                 "--eval-steps", "200"]) == 0
    assert "| mi8pro | non_streaming | dynamic | ppo | 1 |" in capsys.readouterr().out
    assert main(["evaluate", "--model", str(tmp_path / "cpu" / "model.json"), "--seeds", "1",
                 "--eval-steps", "200"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines()
                if ln.startswith("| mi8pro | non_streaming | dynamic | fixed:local/cpu/fp32 | 1 |"))
    assert "| 1.00 |" in line  # the mobile CPU against itself


@pytest.mark.parametrize("content, suffix, word", [
    (b"not a zip", ".npz", "not a readable"),
    (b"{}", ".json", "not a saved baseline"),
    (b"x", ".pt", "unknown model file type"),
])
def test_evaluate_refuses_junk_naming_the_file(tmp_path, capsys, content, suffix, word):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(content)
    assert main(["evaluate", "--model", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and word in err


@pytest.mark.slow
def test_benchmark_lists_every_file_it_produced(tmp_path, capsys):
    assert main(["benchmark", "--agents", "qlearning,random", "--seeds", "1", "--train-steps",
                 "500", "--eval-steps", "100", "--log-interval", "250", "--out", str(tmp_path),
                 "--quiet"]) == 0
    tail = capsys.readouterr().out.split("wrote to ")[-1]
    assert tail == output_listing(tmp_path)[len("wrote to "):] + "\n"
    produced = {p.name for p in tmp_path.iterdir()}
    for name in produced:
        assert str(tmp_path / name) in tail, name
    assert "2 TensorBoard runs" in tail


def test_a_missing_extra_gives_the_install_hint_not_a_traceback():
    code = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "torch":
                    raise ModuleNotFoundError("No module named 'torch' (blocked by the test)")
        sys.meta_path.insert(0, Block())
        from agents.cli import main
        assert main(["serve", "--help"]) == 0  # the help needs no extra
        sys.exit(main(["serve", "--role", "edge"]))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert proc.returncode == 2
    assert "autoscale-env[live]" in proc.stderr and "Traceback" not in proc.stderr
