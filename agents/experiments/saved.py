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

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym

import autoscale_env  # noqa: F401  (registers AutoScale-v0)
from autoscale_env.world import config
from autoscale_env.world.errors import ModelFileError
from autoscale_env.world.files import load_json

if TYPE_CHECKING:
    from agents.base import Agent

#: File kinds the bundled agents save (a user's agent may save any file ``describe`` reads).
KINDS = {".npz": "Q-table or bandit model (qlearning, tabular-bandit, linucb, thompson, predictor)",
         ".zip": "Stable-Baselines3 model (dqn, ppo, a2c)",
         ".json": "baseline description (oracle, random, fixed:<target>)"}

#: The cell evaluated when neither the caller nor the model file names one.
DEFAULT_CELL = ("mi8pro", "non_streaming", "dynamic")


def describe(path: str | Path) -> dict[str, Any]:
    """What a saved model says about itself: ``agent`` (the name that loads it), and ``nvec``,
    ``env`` and ``num_timesteps`` when recorded."""
    path = Path(path)
    suffix = path.suffix
    if suffix == ".npz":
        from agents.qlearning import json_metadata
        from autoscale_env.world.files import load_npz
        if not path.is_file():
            raise ModelFileError(f"{path}: no such model file")
        data = load_npz(path, ModelFileError)  # sizes and shapes checked before any allocation
        if "meta" not in data:
            raise ModelFileError(f"{path}: not an autoscale model (no 'meta' array)")
        meta = json_metadata(data["meta"], str(path), "meta")
        if not isinstance(meta, dict) or not isinstance(meta.get("agent"), str):
            raise ModelFileError(f"{path}: metadata names no agent")
        return {"agent": meta["agent"], "nvec": meta.get("nvec"), "env": meta.get("env") or {},
                "num_timesteps": meta.get("num_timesteps")}
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
        return {"agent": agent, "nvec": meta.get("nvec"), "env": meta.get("env") or {},
                "num_timesteps": meta.get("num_timesteps")}
    if suffix == ".json":
        try:
            meta = load_json(path, ModelFileError, what="saved baseline")
            agent = meta["agent"]
        except ModelFileError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ModelFileError(f"{path}: not a saved baseline ({e})") from None
        return {"agent": agent, "nvec": None, "env": {}, "num_timesteps": 0}
    raise ModelFileError(f"{path}: unknown model file type {suffix!r}; valid: "
                         + ", ".join(f"{k} ({v})" for k, v in KINDS.items()))


def load_saved(path: str | Path, env: gym.Env, agent: str | None = None) -> Agent:
    """Load the agent saved at ``path`` for ``env`` (refused if made for another env), with the
    class of ``agent`` (a name or ``package.module:Class``; default: the name the file records)."""
    from agents import agent_class
    cls = agent_class(agent or describe(path)["agent"])
    return cls.load(str(path), env=env)


def chosen_cells(meta: dict[str, Any], devices: Sequence[str] | None,
                 scenarios: Sequence[str] | None, settings: Sequence[str] | None,
                 ) -> tuple[tuple[list[str], list[str], list[str]], str]:
    """The cells to evaluate on and why: given ones, else the model's recorded cell, else the default.

    Returns ``((devices, scenarios, settings), reason)``; ``meta`` is :func:`describe`'s answer.
    """
    recorded = meta.get("env") or {}
    given = {"device": devices, "scenario": scenarios, "setting": settings}
    chosen: dict[str, list[str]] = {}
    sources: dict[str, list[str]] = {"given": [], "recorded": [], "default": []}
    for i, key in enumerate(("device", "scenario", "setting")):
        if given[key]:
            chosen[key] = list(given[key])
            sources["given"].append(key)
        elif recorded.get(key):
            chosen[key] = [recorded[key]]
            sources["recorded"].append(key)
        else:
            chosen[key] = [DEFAULT_CELL[i]]
            sources["default"].append(key)
    def words(keys: list[str]) -> str:
        return keys[0] if len(keys) == 1 else ", ".join(keys[:-1]) + " and " + keys[-1]

    parts = []
    if sources["given"]:
        parts.append(words(sources["given"]) + " as given")
    if sources["recorded"]:
        parts.append(words(sources["recorded"]) + " recorded in the model file "
                     "(the cell it was trained on)")
    if sources["default"]:
        parts.append(words(sources["default"]) + " by default (the model file records "
                     "none; pass --device/--scenario/--setting to choose)")
    return (chosen["device"], chosen["scenario"], chosen["setting"]), "; ".join(parts)


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
                   reward: str = "energy", agent: str | None = None,
                   announce: bool = True) -> list[dict[str, Any]]:
    """Evaluate a saved agent greedily on every given cell and seed; rows as in ``results.csv``.

    Cells not given default to the one recorded in the model file (a Q-table records its
    device, scenario and setting), else to mi8pro / non_streaming / dynamic. Seeds are the
    benchmark's evaluation seeds (``EVAL_SEED_OFFSET + seed``), so a model trained by
    ``autoscale train --seed s`` is scored on requests it never saw, as in the benchmark.
    With ``announce`` (the default) one line on stderr says which cells run and why.
    """
    from agents import CLOUD, MOBILE_CPU
    from agents.experiments.benchmark import EVAL_SEED_OFFSET
    from agents.experiments.evaluation import evaluate

    try:
        meta = describe(path)
    except ModelFileError:
        if agent is None:
            raise
        meta = {"agent": agent, "nvec": None, "env": {}}  # a user's own file kind: its load reads it
    name = agent or meta["agent"]
    (devices, scenarios, settings), why = chosen_cells(meta, devices, scenarios, settings)
    if announce:
        # a model scored on a cell it never saw looks broken: say which cells run and why
        print(f"evaluating {path} ({name}) on device={','.join(devices)}, "
              f"scenario={','.join(scenarios)}, setting={','.join(settings)}: {why}",
              file=sys.stderr)
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
                    loaded = load_saved(path, env, name)
                    for seed in range(seeds):
                        result = evaluate(loaded, env, eval_steps, seed=EVAL_SEED_OFFSET + seed,
                                          cpu_target=MOBILE_CPU.split(":", 1)[1],
                                          cloud_target=CLOUD.split(":", 1)[1])
                        rows.append({"agent": name, "device": device,
                                     "scenario": scenario, "setting": setting, "seed": seed,
                                     **result.metrics(),
                                     "train_steps": int(loaded.num_timesteps),
                                     "eval_steps": eval_steps,
                                     "memory_bytes": int(loaded.nbytes)})
                finally:
                    env.close()
    return rows
