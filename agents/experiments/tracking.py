"""TensorBoard logs through tensorboardX (the ``[tensorboard]`` extra).

Every agent writes the same tags through :class:`ScalarWriter`, so runs of the Q-learner, SB3
learners and baselines overlay in one TensorBoard view:

* ``rollout/reward_mean``: mean training reward over the last logging window;
* ``autoscale/energy_mj``, ``autoscale/qos_violation_rate``, ``autoscale/accuracy_violation_rate``,
  ``autoscale/oracle_match``: the same window, from ``info``;
* ``eval/<metric>`` for every numeric metric of the task's ``results.csv`` row (see
  :func:`log_evaluation`): a learner's at its last training step; a baseline's (which does not
  learn) as a flat reference line over the whole training axis;
* HParams (``agent``, ``device``, ``scenario``, ``setting``, ``seed``, the env options and the
  agent's hyperparameters -> the ``eval/*`` metrics), so a benchmark's or sweep's runs compare in
  TensorBoard's HParams tab (:meth:`ScalarWriter.hparams`).

Without tensorboardX nothing is written and one warning names the extra to install.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agents.base import Agent

logger = logging.getLogger(__name__)

#: Columns of a results row that identify the task or restate the configuration: not metrics.
NOT_METRICS = frozenset({"agent", "device", "scenario", "setting", "seed", "train_steps",
                         "eval_steps"})

_warned = False


def _events_writer_class():
    global _warned
    try:
        EventsWriter = _import_events_writer()
    except ImportError:
        if not _warned:
            logger.warning("tensorboardX is not installed: no TensorBoard logs; install it with: "
                           "pip install -c constraints.txt 'autoscale-env[tensorboard]'")
            _warned = True
        return None
    return EventsWriter


def _import_events_writer():
    """``tensorboardX.event_file_writer.EventsWriter``, imported without importing torch.

    tensorboardX's writer modules try ``import torch`` only to accept torch tensors as values;
    we log Python floats, and importing torch costs seconds in every sweep worker. A ``None`` in
    ``sys.modules`` makes that ``import torch`` fail fast with ImportError (which tensorboardX
    catches); the entry is removed afterwards so a later ``import torch`` works as usual. When
    torch is already imported, it is left alone.
    """
    import sys
    blocked = "torch" not in sys.modules
    if blocked:
        sys.modules["torch"] = None  # type: ignore[assignment]
    try:
        import tensorboardX  # noqa: F401  (its package import is the one that tries torch)
        from tensorboardX.event_file_writer import EventsWriter
    finally:
        if blocked and sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]
    return EventsWriter


class ScalarWriter:
    """Scalars, text notes and HParams of one TensorBoard run directory.

    The event file is tensorboardX's own (``EventsWriter``: the ``events.out.tfevents.*`` file
    and records its ``SummaryWriter`` writes), written by the calling thread. ``SummaryWriter``
    hands every event to a writer thread through an inter-process queue and starts that thread
    and queue for every run; in a sweep of many short tasks that machinery cost more than the
    events (a baseline's task took 60 ms with it, 26 ms without any logging). Events are
    buffered by the file and reach the disk at :meth:`close` (flushed and fsynced).
    """

    def __init__(self, logdir: str | Path):
        self.logdir = Path(logdir)
        cls = _events_writer_class()
        self._enabled = cls is not None
        self._w = None
        if cls is not None:
            self.logdir.mkdir(parents=True, exist_ok=True)
            self._w = cls(str(self.logdir / "events"))

    @property
    def enabled(self) -> bool:
        """False when tensorboardX is missing (every call is then a no-op)."""
        return self._enabled

    def _add(self, summary, step: int | None) -> None:
        from tensorboardX.proto.event_pb2 import Event
        event = Event(summary=summary, wall_time=time.time())
        if step is not None:
            event.step = int(step)
        self._w.write_event(event)

    def scalar(self, tag: str, value: float, step: int) -> None:
        """Record ``tag = value`` at ``step``."""
        self.scalar_group({tag: value}, step)

    def scalars(self, prefix: str, values: Mapping[str, Any], step: int) -> list[str]:
        """Record every finite number in ``values`` as ``prefix/<key>``; returns the tags."""
        group = {}
        for key, value in values.items():
            number = _number(value)
            if number is not None:
                group[f"{prefix}/{key}"] = number
        self.scalar_group(group, step)
        return list(group)

    def scalar_group(self, values: Mapping[str, float], step: int) -> None:
        """Record ``tag = value`` for every item at ``step``, as one event (TensorBoard reads
        every value of an event: the same scalars as one :meth:`scalar` call each)."""
        if self._w is None or not values:
            return
        from tensorboardX.proto.summary_pb2 import Summary
        self._add(Summary(value=[Summary.Value(tag=tag, simple_value=float(value))
                                 for tag, value in values.items()]), int(step))

    def text(self, tag: str, markdown: str, step: int = 0) -> None:
        """Record a Markdown note (shown in TensorBoard's Text tab), e.g. the hyperparameters."""
        if self._w is not None:
            from tensorboardX.summary import text
            self._add(text(tag, markdown), int(step))

    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        """Record this run as one HParams session: ``hparams`` -> final ``metrics``.

        The metric values must also be logged as scalars under the same tags (they are:
        ``eval/*``); only the session's start and end go here, and no experiment summary, so
        TensorBoard builds the HParams table from every run's session (their union of
        hyperparameters, since agents have different ones).
        """
        if self._w is None:
            return
        from tensorboardX.summary import hparams as hparams_summaries
        clean = {k: _hparam_value(v) for k, v in hparams.items()}
        _, start, end = hparams_summaries(clean, {k: float(v) for k, v in metrics.items()})
        self._add(start, None)
        self._add(end, None)

    def close(self) -> None:
        """Flush and close the event file (safe to call twice; later calls write nothing)."""
        if self._w is not None:
            self._w.close()
            self._w = None


def log_evaluation(writer: ScalarWriter, row: Mapping[str, Any], *, learns: bool,
                   train_steps: int, log_interval: int) -> list[str]:
    """Write a results row's metrics as ``eval/*``; returns the tags.

    Generic over the row: every numeric column that is not an identity or configuration column
    (:data:`NOT_METRICS`) is logged, so metrics added to the results later appear too. A learner's
    evaluation is one point at ``train_steps``; a baseline's is a flat line at every
    ``log_interval`` from 0 to ``train_steps``, to read against the learners' curves.
    """
    metrics = {k: v for k, v in row.items() if k not in NOT_METRICS}
    steps: Iterable[int] = [train_steps]
    if not learns and train_steps > 0:
        interval = max(1, log_interval)
        steps = sorted({*range(0, train_steps, interval), train_steps})
    tags: list[str] = []
    for step in steps:
        tags = writer.scalars("eval", metrics, step)
    return tags


def agent_hyperparameters(agent: Agent) -> dict[str, Any]:
    """An agent's hyperparameters (:attr:`agents.base.Agent.hparams`)."""
    return dict(agent.hparams)


def task_hparams(row: Mapping[str, Any], env_kwargs: Mapping[str, Any],
                 agent: Any) -> dict[str, Any]:
    """The HParams of one task: its cell, seed, env options and the agent's hyperparameters."""
    hyperparameters = agent_hyperparameters(agent)
    out: dict[str, Any] = {k: row[k] for k in ("agent", "device", "scenario", "setting", "seed")
                           if k in row}
    out["features"] = str(env_kwargs.get("features", "paper"))
    out["reward"] = str(env_kwargs.get("reward", "energy"))
    for key in ("train_steps", "eval_steps"):
        if key in row:
            out[key] = row[key]
    for key, value in hyperparameters.items():
        out[f"hp/{key}"] = value
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _hparam_value(value: Any) -> bool | int | float | str:
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)  # lists (net_arch), None, ...


def run_name(agent: str, device: str, scenario: str, setting: str, seed: int) -> str:
    """The run directory name used under ``tb/``: one per (agent, cell, seed)."""
    return f"{device}__{scenario}__{setting}__{agent.replace('/', '-').replace(':', '-')}__{seed}"
