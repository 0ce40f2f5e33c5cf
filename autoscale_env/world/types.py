"""Value types and the backend protocol: the seam between the environment and the world.

The environment (:mod:`autoscale_env.env`) knows nothing about physics, files or sockets. Everything
about the world sits behind :class:`Backend`: a backend produces *requests* (which network, under
which runtime conditions) in blocks, and says what happened when a request ran on a target.

Backends that can know every target's outcome before the agent acts (``sim``, ``replay``) fill the
block's outcome matrices; the environment then reads them and never calls :meth:`Backend.execute`.
Backends that must really run the request (``live``) leave them ``None`` and answer ``execute``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


#: Requests per episode under ``gym.make`` (TimeLimit truncation) [reconstructed].
MAX_EPISODE_STEPS = 100

LOCATIONS = ("local", "edge", "cloud")
PROCESSORS = ("cpu", "gpu", "dsp")
PRECISIONS = ("fp32", "fp16", "int8")

#: Values of ``Outcome.energy_source`` / ``info["energy_source"]``.
ENERGY_SOURCES = ("model", "rapl", "nvml", "measured", "none")


@dataclass(frozen=True, order=True)
class Target:
    """An execution target: where (``local``/``edge``/``cloud``), on what processor, at what precision.

    ``str(target)`` is the canonical name used everywhere (files, logs, command lines), e.g.
    ``"local/gpu/fp16"``; :meth:`parse` is its inverse.
    """

    location: str
    processor: str
    precision: str

    def __post_init__(self) -> None:
        for field, value, choices in (
            ("location", self.location, LOCATIONS),
            ("processor", self.processor, PROCESSORS),
            ("precision", self.precision, PRECISIONS),
        ):
            if value not in choices:
                raise ValueError(f"target {field} {value!r} is not one of {', '.join(choices)}")

    def __str__(self) -> str:
        return f"{self.location}/{self.processor}/{self.precision}"

    @property
    def is_local(self) -> bool:
        """True when the phone itself runs the inference."""
        return self.location == "local"

    @property
    def unit(self) -> str:
        """The processor/precision part, e.g. ``"gpu/fp16"`` (the key used in latency tables)."""
        return f"{self.processor}/{self.precision}"

    @classmethod
    def parse(cls, name: str) -> Target:
        """Parse ``"location/processor/precision"``; raises ``ValueError`` naming the bad part."""
        parts = str(name).strip().split("/")
        if len(parts) != 3:
            raise ValueError(
                f"target name {name!r} must look like 'location/processor/precision', "
                f"e.g. 'local/gpu/fp16'"
            )
        return cls(*parts)


@dataclass(frozen=True)
class Workload:
    """A network a request can name, with the paper's structural features (layer counts)."""

    name: str
    display_name: str
    conv: int
    fc: int
    rc: int
    input_bytes: int
    output_bytes: int
    accuracy: dict[str, float]
    """Accuracy per precision (``"fp32"``, ``"fp16"``, ``"int8"``) as a fraction in [0, 1]."""
    source: str = ""


#: Columns of :class:`RequestBlock` that hold the raw runtime context, in observation order after
#: the workload features. Units are in the names.
@dataclass(frozen=True)
class Scenario:
    """An application scenario: which networks, the QoS target, the accuracy tolerance."""

    name: str
    description: str
    qos_ms: float
    accuracy_tolerance: float
    """Largest acceptable accuracy loss against the network's FP32 accuracy (fraction)."""
    request_gap_ms: float
    networks: tuple[str, ...]


CONTEXT_FIELDS = ("co_cpu_pct", "co_mem_pct", "rssi_wifi_dbm", "rssi_p2p_dbm")


@dataclass
class RequestBlock:
    """A run of consecutive inference requests, as arrays (one row per request).

    The context columns are always present. The outcome matrices (one column per target, in
    ``Backend.targets`` order) are present when the backend knows every target's outcome in advance;
    a ``NaN`` there means "unknown for this target" (a partial trace).
    """

    network: np.ndarray
    """int, index into ``Backend.workloads``."""
    co_cpu_pct: np.ndarray
    """CPU utilisation of co-running apps, percent [0, 100]."""
    co_mem_pct: np.ndarray
    """Memory use of co-running apps, percent [0, 100]."""
    rssi_wifi_dbm: np.ndarray
    """Wi-Fi signal strength on the path to the cloud, dBm."""
    rssi_p2p_dbm: np.ndarray
    """Wi-Fi Direct signal strength to the edge device, dBm."""
    latency_ms: np.ndarray | None = None
    """(n, n_targets) end-to-end latency, or None when only ``execute`` can tell."""
    energy_mj: np.ndarray | None = None
    """(n, n_targets) phone energy, or None."""
    accuracy: np.ndarray | None = None
    """(n, n_targets) accuracy fraction, or None."""
    energy_source: str = "model"
    """How energy was obtained (see :data:`ENERGY_SOURCES`)."""

    def __len__(self) -> int:
        return len(self.network)


@dataclass(frozen=True)
class Outcome:
    """What happened when one request ran on one target (the live backend's answer)."""

    latency_ms: float
    energy_mj: float
    accuracy: float
    energy_source: str = "model"
    error: str = ""
    """Empty on success; otherwise why the request failed (it then misses QoS)."""


@runtime_checkable
class Backend(Protocol):
    """The world behind the environment: everything the env, the recorder and tools read.

    A class with these members (no base class needed) works with ``gym.make("AutoScale-v0",
    backend=instance_or_class)``, ``check_env``, sync vector envs and ``autoscale record``
    (``tests/test_backend_protocol.py`` defines one from this protocol alone).

    Attributes:
        targets: the execution targets the device offers, in action order.
        workloads: the networks requests may name (``RequestBlock.network`` indexes this).
        scenario: the scenario (``qos_ms``, ``accuracy_tolerance``, ``request_gap_ms``).
        setting: ``"static"`` or ``"dynamic"`` (or a backend's own word for its conditions).
        device_name: the device, as trace headers name it (a bundled profile name or a path).
        reference_energy_mj: per workload, ``E_ref`` of the reward, in ``workloads`` order; for a
            modelled phone :func:`autoscale_env.world.rules.reference_energy_mj` of its profile (a pure
            function of the profile), for a measured one its measured ``local/cpu/fp32`` energy.
        deterministic: True when the same rng gives the same requests and outcomes (sim, replay).

    Optional members, which the env looks up with ``getattr`` (a backend without them works):

    * ``observe_action(block, index, action)``: called after every step with the request just
      executed, for worlds where an action affects later requests (the drift backend's thermal
      model).
    * ``block_batch(block) -> (batch, j) | None``: when the block ``next_block`` just returned is
      row ``j`` of a batch computed together (a :class:`RequestBlock` of ``(E, n)`` arrays; the
      sim's first blocks of coming episodes), so the env scores and encodes the batch once.
    """

    targets: tuple[Target, ...]
    workloads: tuple[Workload, ...]
    scenario: Scenario
    setting: str
    device_name: str
    reference_energy_mj: np.ndarray
    deterministic: bool

    def reset(self, rng: np.random.Generator) -> None:
        """Start a new episode; ``rng`` is the only randomness the backend may use."""

    def next_block(self) -> RequestBlock:
        """The next requests of the episode (at least one)."""

    def execute(self, block: RequestBlock, index: int, action: int) -> Outcome:
        """Run request ``index`` of ``block`` on ``targets[action]`` (only for blocks without outcomes)."""

    def provenance(self) -> dict[str, Any]:
        """Where the numbers come from (host, model, files), merged into trace headers."""

    def close(self) -> None:
        """Release processes and sockets; safe to call twice."""
