"""Load any saved agent (Q-table ``.npz``, SB3 ``.zip``, baseline ``.json``) and evaluate it.

``autoscale evaluate --model PATH`` and the end of ``autoscale train`` use this: the rows it
returns have the columns of the benchmark's ``results.csv``, so
:func:`agents.experiments.benchmark.summarize` prints the same table.

Example::

    from agents.experiments.saved import evaluate_saved
    from agents.experiments.benchmark import summarize
    print(summarize(evaluate_saved("runs/q/model.npz", scenarios=["translation"])))
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym

import autoscale_env  # noqa: F401  (registers AutoScale-v0)
from autoscale_env.world import config
from autoscale_env.world.errors import ModelFileError
from autoscale_env.world.files import load_json

#: File kinds ``load_saved`` accepts.
KINDS = {".npz": "Q-table (qlearning)", ".zip": "Stable-Baselines3 model (dqn, ppo, a2c)",
         ".json": "baseline description (oracle, random, fixed:<target>)"}

#: The cell evaluated when neither the caller nor the model file names one.
DEFAULT_CELL = ("mi8pro", "non_streaming", "dynamic")


def describe(path: str | Path) -> dict[str, Any]:
    """What a saved model says about itself: ``agent``, and ``nvec`` / ``env`` when recorded."""
    path = Path(path)
    suffix = path.suffix
    if suffix == ".npz":
        from agents.qlearning import read_model_file
        _, meta = read_model_file(str(path))
        return {"agent": "qlearning", "nvec": meta.get("nvec"), "env": meta.get("env") or {}}
    if suffix == ".zip":
        side = Path(f"{path}.meta.json")
        try:
            meta = load_json(side, ModelFileError, what="model description")
            agent = meta["agent"]
        except ModelFileError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ModelFileError(f"{side}: missing or unreadable model description ({e})") from None
        if not path.is_file():
            raise ModelFileError(f"{path}: no such model file")
        return {"agent": agent, "nvec": meta.get("nvec"), "env": meta.get("env") or {}}
    if suffix == ".json":
        try:
            meta = load_json(path, ModelFileError, what="saved baseline")
            agent = meta["agent"]
        except ModelFileError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ModelFileError(f"{path}: not a saved baseline ({e})") from None
        return {"agent": agent, "nvec": None, "env": {}}
    raise ModelFileError(f"{path}: unknown model file type {suffix!r}; valid: "
                         + ", ".join(f"{k} ({v})" for k, v in KINDS.items()))


def load_saved(path: str | Path, env: gym.Env):
    """Load the agent saved at ``path`` for ``env`` (refused if made for another env)."""
    from agents import agent_class
    cls = agent_class(describe(path)["agent"])
    if hasattr(cls, "load"):
        return cls.load(str(path), env=env)
    from agents.baselines import load_baseline
    return load_baseline(str(path), env)


def _features_for(meta: dict[str, Any], device: str, scenario: str, setting: str,
                  features: str | None) -> str | None:
    """The bundled feature set whose state shape matches the model (``features`` if given)."""
    if features is not None or meta.get("nvec") is None:
        return features
    for name in config.FEATURE_SETS:
        env = gym.make("AutoScale-v0", device=device, scenario=scenario, setting=setting,
                       features=name)
        nvec = env.unwrapped.encoder.nvec.tolist()
        env.close()
        if nvec == meta["nvec"]:
            return name
    return None  # a custom features file: the loader's error says what the model needs


def evaluate_saved(path: str | Path, *, devices: Sequence[str] | None = None,
                   scenarios: Sequence[str] | None = None, settings: Sequence[str] | None = None,
                   seeds: int = 3, eval_steps: int = 5_000, features: str | None = None,
                   reward: str = "energy") -> list[dict[str, Any]]:
    """Evaluate a saved agent greedily on every given cell and seed; rows as in ``results.csv``.

    Cells not given default to the one recorded in the model file (a Q-table records its
    device, scenario and setting), else to mi8pro / non_streaming / dynamic. Seeds are the
    benchmark's evaluation seeds (``EVAL_SEED_OFFSET + seed``), so a model trained by
    ``autoscale train --seed s`` is scored on requests it never saw, as in the benchmark.
    """
    from agents import CLOUD, MOBILE_CPU
    from agents.experiments.benchmark import EVAL_SEED_OFFSET
    from agents.experiments.evaluation import evaluate

    meta = describe(path)
    recorded = meta["env"]
    devices = list(devices or [recorded.get("device") or DEFAULT_CELL[0]])
    scenarios = list(scenarios or [recorded.get("scenario") or DEFAULT_CELL[1]])
    settings = list(settings or [recorded.get("setting") or DEFAULT_CELL[2]])
    rows = []
    for device in devices:
        for scenario in scenarios:
            for setting in settings:
                feats = _features_for(meta, device, scenario, setting, features)
                kwargs: dict[str, Any] = {"features": feats}
                if reward != "energy":
                    kwargs["reward"] = reward
                env = gym.make("AutoScale-v0", device=device, scenario=scenario,
                               setting=setting, **kwargs)
                try:
                    agent = load_saved(path, env)
                    for seed in range(seeds):
                        result = evaluate(agent, env, eval_steps, seed=EVAL_SEED_OFFSET + seed,
                                          cpu_target=MOBILE_CPU.split(":", 1)[1],
                                          cloud_target=CLOUD.split(":", 1)[1])
                        rows.append({"agent": meta["agent"], "device": device,
                                     "scenario": scenario, "setting": setting, "seed": seed,
                                     **result.metrics(),
                                     "train_steps": int(getattr(agent, "num_timesteps", 0)),
                                     "eval_steps": eval_steps,
                                     "memory_bytes": int(getattr(agent, "nbytes", 0))})
                finally:
                    env.close()
    return rows
