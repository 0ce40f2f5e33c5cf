"""A training run killed with SIGKILL and resumed ends with an uninterrupted run's Q-table."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from agents.experiments.train import latest_checkpoint, train


def q_of(path):
    with np.load(path, allow_pickle=False) as d:
        return d["q"].tobytes()


@pytest.mark.slow
def test_kill_minus_9_midway_then_resume(tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "agents.cli", "train", "--agent", "qlearning", "--steps", "60000",
           "--seed", "7", "--checkpoint-every", "5000", "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    killed_at = None
    while time.monotonic() < deadline and proc.poll() is None:
        ckpt = latest_checkpoint(out / "checkpoints")
        if ckpt is not None and int(ckpt.stem.split("-")[1]) >= 25000:
            os.kill(proc.pid, signal.SIGKILL)
            killed_at = ckpt.name
            break
        time.sleep(0.002)
    proc.wait(timeout=30)
    assert killed_at is not None and proc.returncode == -signal.SIGKILL, "was not killed midway"
    assert not (out / "model.npz").exists()
    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stderr
    full = train(agent="qlearning", steps=60000, seed=7, out=tmp_path / "full", progress=False)
    assert q_of(out / "model.npz") == q_of(full)
