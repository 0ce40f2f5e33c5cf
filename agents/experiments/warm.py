"""Compile the kernels ahead of their first use: ``autoscale warm``.

In a fresh install the first use of each compiled kernel compiles it: tens of seconds for each
face of the environment on a small machine (``docs/performance.md``, start-up). numba caches the
machine code beside the source (or under ``NUMBA_CACHE_DIR``), so later processes load it in
about a second. :func:`warm` runs the first use of each face in a process of its own, several at
once, so that an image build, a CI job or each node of a cluster pays the compilation once and
in parallel, instead of every process that happens to start first.

Each part is the smallest real use of one face: ``env`` (``gym.make``, a few hundred steps
across an episode boundary), ``vector`` (the native vector env through an autoreset), ``fleet``
(the fleet's array core through a block boundary, and a batch of joint actions) and
``qlearning`` (the Q-learner's batched learning and a prediction). Results are thrown away.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

#: Seconds one part may take before :func:`warm` gives up on it (a cold compile of the largest
#: part takes under a minute on a 2-core machine).
PART_TIMEOUT_S = 900


def _env() -> None:
    import gymnasium as gym

    import autoscale_env  # noqa: F401  (registers AutoScale-v0)
    env = gym.make("AutoScale-v0")
    env.reset(seed=0)
    for step in range(250):  # past the first episode's end: the reset path too
        _, _, terminated, truncated, _ = env.step(step % env.action_space.n)
        if terminated or truncated:
            env.reset()
    env.close()


def _vector() -> None:
    import gymnasium as gym
    import numpy as np

    import autoscale_env  # noqa: F401
    env = gym.make_vec("AutoScale-v0", num_envs=2, vectorization_mode="vector_entry_point")
    env.reset(seed=0)
    for _ in range(105):  # through the autoreset step, where the next blocks are made
        env.step(np.zeros(2, dtype=np.int64))
    env.close()


def _fleet() -> None:
    import numpy as np

    from autoscale_env.fleet import make_core
    core = make_core(3)
    core.reset(0)
    for _ in range(105):  # through a block boundary
        core.step(np.zeros(3, dtype=np.int64))
    core.evaluate(np.zeros((2, 3), dtype=np.int64))
    core.close()


def _qlearning() -> None:
    import gymnasium as gym

    import autoscale_env  # noqa: F401
    from agents import make_agent
    env = gym.make("AutoScale-v0")
    agent = make_agent("qlearning", env, seed=0).learn(250)
    agent.predict(env.reset(seed=1)[0])
    env.close()


#: The parts, longest first (the order :func:`warm` starts them in).
PARTS: dict[str, Callable[[], None]] = {
    "fleet": _fleet, "env": _env, "vector": _vector, "qlearning": _qlearning}


def warm(parts: Sequence[str] | None = None, workers: int = 2,
         timeout_s: float = PART_TIMEOUT_S) -> dict[str, float]:
    """Compile the kernels of ``parts`` (default: all of :data:`PARTS`), each in a fresh process,
    ``workers`` at a time; returns the seconds each took (about a second or two each once the
    cache is warm). Raises ``ValueError`` for an unknown part and ``RuntimeError`` naming the
    part, with the end of its error output, when one fails or runs past ``timeout_s``."""
    names = list(PARTS) if parts is None else list(parts)
    unknown = [p for p in names if p not in PARTS]
    if unknown:
        raise ValueError(f"unknown part(s) {unknown}; valid: {', '.join(PARTS)}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")

    def run(name: str) -> float:
        start = time.perf_counter()
        try:
            done = subprocess.run([sys.executable, "-m", __name__, name], capture_output=True,
                                  text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"warm {name}: still compiling after {timeout_s:.0f} s") from None
        if done.returncode != 0:
            raise RuntimeError(f"warm {name} failed (exit {done.returncode}): "
                               f"{done.stderr.strip()[-2000:]}")
        return time.perf_counter() - start

    with ThreadPoolExecutor(max_workers=min(workers, max(1, len(names)))) as pool:
        seconds = dict(zip(names, pool.map(run, names)))
    return seconds


if __name__ == "__main__":  # one part, in the process warm() starts for it
    PARTS[sys.argv[1]]()
