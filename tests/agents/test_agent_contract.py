"""The agent contract: a user's own agent class, defined here, runs through the harness and the
command line exactly like the zoo's (``--agents package.module:Class``)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agents import agent_class, make_agent
from agents.base import Agent
from agents.cli import main
from autoscale_env.world.errors import ModelFileError

ROOT = Path(__file__).resolve().parents[2]


class MeanRewardAgent(Agent):
    """A context-free learner: tries every target in turn, then keeps the best mean reward."""

    name = "mean-reward"
    model_suffix = ".json"

    def __init__(self, env, seed=0, tries=2):
        super().__init__(env, seed)
        self.tries = int(tries)
        n = int(env.action_space.n)
        self.total = np.zeros(n)
        self.count = np.zeros(n, dtype=np.int64)

    @property
    def hparams(self):
        return {"tries": self.tries}

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        if self.count.min() < self.tries:  # still exploring, round robin
            return int(self.count.argmin()), None
        return int((self.total / self.count).argmax()), None

    def learn(self, total_timesteps, callback=None, progress_bar=False):
        obs, info = self.env.reset(seed=self.seed)
        for _ in range(total_timesteps):
            action, _ = self.predict(obs)
            obs, reward, terminated, truncated, info = self.env.step(action)
            self.total[action] += reward
            self.count[action] += 1
            self.num_timesteps += 1
            if callback is not None:
                callback.on_step(action, reward, info)
            if terminated or truncated:
                obs, info = self.env.reset()
        return self

    def save(self, path):
        spec = f"{type(self).__module__}:{type(self).__qualname__}"
        Path(path).write_text(json.dumps({"agent": spec, "tries": self.tries,
                                          "total": self.total.tolist(),
                                          "count": self.count.tolist(),
                                          "num_timesteps": self.num_timesteps}))

    @classmethod
    def load(cls, path, env, **kwargs):
        try:
            meta = json.loads(Path(path).read_text())
            agent = cls(env, tries=meta["tries"])
            agent.total[...] = meta["total"]
            agent.count[...] = meta["count"]
            agent.num_timesteps = meta["num_timesteps"]
        except (OSError, ValueError, KeyError) as e:
            raise ModelFileError(f"{path}: not a mean-reward model ({e})") from None
        return agent


class NotAnAgent:
    pass


SPEC = f"{MeanRewardAgent.__module__}:MeanRewardAgent"


def rows(path: Path) -> list[dict]:
    with open(path / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_a_user_class_is_built_like_the_zoo_s_agents():
    import gymnasium as gym
    assert agent_class(SPEC) is MeanRewardAgent
    agent = make_agent(SPEC, gym.make("AutoScale-v0"), seed=3, tries=5)
    assert agent.seed == 3 and agent.tries == 5


def test_benchmark_runs_a_user_agent_and_its_greedy_choice_scores_as_that_fixed_target(
        tmp_path, capsys):
    assert main(["benchmark", "--agents", f"{SPEC},random", "--seeds", "1", "--train-steps",
                 "400", "--eval-steps", "200", "--out", str(tmp_path), "--no-figures",
                 "--quiet", "--hp", f"{SPEC}.tries=3"]) == 0
    mine = [r for r in rows(tmp_path) if r["agent"] == SPEC]
    assert len(mine) == 1 and mine[0]["train_steps"] == "400"
    # after training, the greedy agent always runs one target: it scores exactly as that target
    import gymnasium as gym
    env = gym.make("AutoScale-v0")
    agent = MeanRewardAgent(env, seed=0, tries=3).learn(400)
    best = str(env.unwrapped.targets[agent.predict(None)[0]])
    fixed = tmp_path / "fixed"
    assert main(["benchmark", "--agents", f"fixed:{best}", "--seeds", "1", "--eval-steps",
                 "200", "--out", str(fixed), "--no-figures", "--quiet"]) == 0
    for key in ("energy_mj", "oracle_match", "qos_violation_rate"):
        assert mine[0][key] == rows(fixed)[0][key], key


def test_train_then_evaluate_a_user_agent_give_the_same_row(tmp_path, capsys):
    out = tmp_path / "mine"
    assert main(["train", "--agent", SPEC, "--steps", "300", "--eval-steps", "200",
                 "--out", str(out), "--quiet", "--hp", "tries=4"]) == 0
    text = capsys.readouterr().out
    assert f"model: {out / 'model.json'}" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("| mi8pro |"))
    assert json.loads((out / "run.json").read_text())["hyperparameters"] == {"tries": 4}
    assert main(["evaluate", "--model", str(out / "model.json"), "--seeds", "1",
                 "--eval-steps", "200"]) == 0
    assert line in capsys.readouterr().out.splitlines()


def test_sweep_runs_a_user_agent_in_worker_processes(tmp_path):
    assert main(["sweep", "--agents", SPEC, "--seeds", "2", "--train-steps", "200",
                 "--eval-steps", "100", "--out", str(tmp_path), "--no-figures", "--quiet",
                 "--workers", "2"]) == 0
    assert sorted(r["seed"] for r in rows(tmp_path)) == ["0", "1"]


@pytest.mark.slow
def test_the_command_line_imports_an_agent_by_its_package_path(tmp_path):
    spec = "tests.agents.test_agent_contract:MeanRewardAgent"  # as a user types it
    proc = subprocess.run([sys.executable, "-m", "agents.cli", "benchmark", "--agents", spec,
                           "--seeds", "1", "--train-steps", "200", "--eval-steps", "100",
                           "--out", str(tmp_path), "--no-figures", "--quiet"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert [r["agent"] for r in rows(tmp_path)] == [spec]


@pytest.mark.parametrize("spec, says", [
    (f"{__name__}:NotAnAgent", "not a subclass of agents.base.Agent"),
    (f"{__name__}:Missing", "unknown agent"),
    ("no_such_package.module:Agent", "unknown agent"),
])
def test_a_bad_agent_path_is_a_usage_error(tmp_path, capsys, spec, says):
    assert main(["benchmark", "--agents", spec, "--out", str(tmp_path), "--quiet"]) == 2
    assert says in capsys.readouterr().err
