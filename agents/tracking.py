"""TensorBoard event files without TensorFlow or torch (the ``tensorboard`` package alone).

Every agent writes the same tags through :class:`ScalarWriter`, so runs of the Q-learner, SB3
learners and baselines overlay in one TensorBoard view:

* ``rollout/reward_mean``: mean training reward over the last logging window;
* ``autoscale/energy_mj``, ``autoscale/qos_violation_rate``, ``autoscale/accuracy_violation_rate``,
  ``autoscale/oracle_match``: the same window, from ``info``;
* ``eval/energy_mj``, ``eval/ppw_vs_cpu``, ``eval/ppw_vs_cloud``, ``eval/oracle_match``,
  ``eval/qos_violation_rate``, ``eval/energy_gap_to_oracle``: the final greedy evaluation,
  logged at the last training step.
"""

from __future__ import annotations

import time
from pathlib import Path

from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboard.compat.proto.tensor_pb2 import TensorProto
from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
from tensorboard.summary.writer.event_file_writer import EventFileWriter


class ScalarWriter:
    """Writes scalars (and a text note) to one TensorBoard run directory."""

    def __init__(self, logdir: str | Path):
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self._writer = EventFileWriter(str(self.logdir))

    def scalar(self, tag: str, value: float, step: int) -> None:
        """Record ``tag = value`` at ``step``."""
        summary = Summary(value=[Summary.Value(tag=tag, simple_value=float(value))])
        self._writer.add_event(Event(wall_time=time.time(), step=int(step), summary=summary))

    def text(self, tag: str, markdown: str, step: int = 0) -> None:
        """Record a Markdown note (shown in TensorBoard's Text tab), e.g. the hyperparameters."""
        tensor = TensorProto(dtype=7, string_val=[markdown.encode()],  # 7 = DT_STRING
                             tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=1)]))
        meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="text"))
        summary = Summary(value=[Summary.Value(tag=tag, tensor=tensor, metadata=meta)])
        self._writer.add_event(Event(wall_time=time.time(), step=int(step), summary=summary))

    def close(self) -> None:
        """Flush and close the event file."""
        self._writer.flush()
        self._writer.close()


def run_name(agent: str, device: str, scenario: str, setting: str, seed: int) -> str:
    """The run directory name used under ``tb/``: one per (agent, cell, seed)."""
    return f"{device}__{scenario}__{setting}__{agent.replace('/', '-').replace(':', '-')}__{seed}"
