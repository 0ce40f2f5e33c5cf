"""The replay backend: requests and outcomes read from a recorded trace.

``gym.make("AutoScale-v0", backend="replay", trace=PATH_OR_NAME)`` replays a trace written by
``autoscale record`` (or by hand, see ``traces/README.md``). Device, scenario and setting come from
the trace's header; passing them as well only checks that they agree.

Episode semantics (``order``):

``"sequential"`` (default)
    The trace is a tape played in request-id order. ``reset`` with a *new* generator (that is,
    ``env.reset(seed=...)``, or the very first reset) rewinds the tape to its first request.
    ``reset`` with the generator of the previous episode (a plain ``env.reset()``, as after a
    truncation) continues the tape: at the start of the next recorded episode when the header
    has ``episode_requests`` (the rest of the interrupted one is skipped, as a new sim episode
    would skip it), else right after the last request handed out. At the end the tape wraps to
    its first request. So a seed fixes the trajectory, and a trace recorded from the sim with
    seed ``s`` replays, after ``reset(seed=s)``, the very requests and outcomes the sim showed.
``"shuffle"``
    Requests in a random order: ``reset`` with a new generator draws a permutation of all
    requests from it; later episodes continue through that permutation; when it is used up a new
    one is drawn from the same generator. Deterministic for a seed, different per seed (so the
    sub-envs of a vector env see different orders). Shuffling breaks the temporal structure of a
    dynamic trace (signal segments, app switches): use it for training on a static pool of
    conditions, sequential to reproduce a run.

Blocks hold at most ``block_size`` requests, end at recorded episode boundaries (sequential) and
where the per-request energy source changes (a block has one). Outcome matrices have ``NaN`` for
targets a partial trace did not record; the environment reports those as ``info["error"]``.

``reference_energy_mj`` (``E_ref`` of the reward): when the trace's device is a bundled phone
profile, the sim model's (:func:`autoscale_env.world.rules.reference_energy_mj` of the profile, a pure
function of it), so replaying a sim trace
scores exactly like the sim. Otherwise it is taken from the trace: per network, the median
``local/cpu/fp32`` energy over requests with no co-running load (0 % CPU and memory), or, when
there are none, the smallest ``local/cpu/fp32`` energy recorded; ``reference_energy_mj={network:
mJ}`` in ``backend_options`` overrides it per network. Networks the trace never names get NaN
(never used).
"""

from __future__ import annotations

import os

import numpy as np

from autoscale_env.world.types import MAX_EPISODE_STEPS

from autoscale_env.world import config

from autoscale_env.traces import format as traces
from autoscale_env.world.types import Outcome, RequestBlock, Target, Workload
from autoscale_env.world.errors import ConfigError, UnknownNameError

ORDERS = ("sequential", "shuffle")
#: Requests per block: one ``gym.make`` episode, as the sim.
DEFAULT_BLOCK_SIZE = MAX_EPISODE_STEPS + 1
_CPU = Target("local", "cpu", "fp32")


class ReplayBackend:
    """Replays a recorded trace (see the module docstring for the episode semantics).

    Args:
        trace: path to a ``.csv``, ``.csv.gz`` or ``.parquet`` trace, or a bundled trace name.
        device, scenario, setting: None to take the trace header's; otherwise they must match it.
        order: ``"sequential"`` or ``"shuffle"``.
        block_size: most requests per block.
        reference_energy_mj: optional ``{network: mJ}`` overriding ``E_ref`` per network.

    Raises:
        ConfigError: no trace, an argument that contradicts the header, a bad option.
        TraceFormatError: the trace is malformed, or ``E_ref`` cannot be derived from it.
    """

    deterministic = True

    def __init__(self, trace: str | os.PathLike | None = None, device: str | None = None,
                 scenario: str | None = None, setting: str | None = None, *,
                 order: str = "sequential", block_size: int = DEFAULT_BLOCK_SIZE,
                 reference_energy_mj: dict[str, float] | None = None):
        if trace is None:
            raise ConfigError("backend='replay' needs trace=<path to a trace file or a bundled "
                              f"trace name>; bundled: {', '.join(traces.bundled_traces())}")
        if order not in ORDERS:
            raise UnknownNameError("order", order, ORDERS)
        if int(block_size) < 1:
            raise ConfigError(f"block_size must be >= 1, got {block_size}")
        self.trace = traces.load_trace_cached(trace)
        t, h = self.trace, self.trace.header
        for arg, given, recorded in (("device", device, h.device),
                                     ("scenario", scenario, h.scenario),
                                     ("setting", setting, h.setting)):
            if given is not None and given != recorded:
                raise ConfigError(
                    f"{t.path}: {arg}={given!r} contradicts the trace, whose header field "
                    f"'{arg}' is {recorded!r}; leave {arg} unset to replay the trace as recorded")
        if t.n_requests == 0:
            raise ConfigError(f"{t.path}: the trace holds no complete request")
        self.device = h.device
        self.device_name = h.device
        self.scenario = config.get_scenario(h.scenario)
        self.setting = h.setting
        self.order = order
        self.block_size = int(block_size)
        self.targets: tuple[Target, ...] = t.targets
        self.workloads: tuple[Workload, ...] = t.workloads
        self.reference_energy_mj = self._reference(reference_energy_mj)

        # Target-major copies, so that a block's (n, n_targets) matrices are transposed views of
        # C-contiguous arrays (what the environment flattens without copying).
        self._latency = np.ascontiguousarray(t.latency_ms.T)
        self._energy = np.ascontiguousarray(t.energy_mj.T)
        self._accuracy = np.ascontiguousarray(t.accuracy.T)
        sources = t.request_energy_source()
        self._source_names, self._source = np.unique(sources.astype(str), return_inverse=True)
        self._source = self._source.reshape(-1)
        n = t.n_requests
        # Positions where a recorded episode starts (sequential blocks never cross one).
        if h.episode_requests:
            episode = t.request // h.episode_requests
            self._episode_starts = np.flatnonzero(np.r_[True, episode[1:] != episode[:-1]])
        else:
            self._episode_starts = np.array([0])
        # Positions where the energy source changes (a block has one source).
        self._source_starts = np.flatnonzero(np.r_[True, self._source[1:] != self._source[:-1]])
        self._n = n
        self._rng: np.random.Generator | None = None
        self._order: np.ndarray | None = None
        self._pos = 0

    # ---------------------------------------------------------------------------------------
    # Backend protocol

    def reset(self, rng: np.random.Generator) -> None:
        """Start an episode: rewind on a new generator, continue on the previous one."""
        if rng is not self._rng:
            # env.reset(seed=...) builds a new Generator; a plain reset() reuses the old one.
            # Rewinding only on a new one makes a seed fix the whole trajectory while plain
            # resets walk on through the trace, as the sim's episodes walk on through its world.
            self._rng = rng
            self._pos = 0
            self._order = rng.permutation(self._n) if self.order == "shuffle" else None
        elif self.order == "sequential" and self._pos < self._n:
            k = np.searchsorted(self._episode_starts, self._pos, side="left")
            self._pos = int(self._episode_starts[k]) if k < len(self._episode_starts) else self._n

    def next_block(self) -> RequestBlock:
        """The next requests, with every recorded target's outcome (NaN where not recorded)."""
        if self._rng is None:
            raise RuntimeError("ReplayBackend.next_block() called before reset()")
        if self._pos >= self._n:  # the end of the tape: wrap (shuffle: a fresh permutation)
            self._pos = 0
            if self.order == "shuffle":
                self._order = self._rng.permutation(self._n)
        start = self._pos
        stop = min(start + self.block_size, self._n)
        if self.order == "sequential":
            stop = min(stop, _next_after(self._episode_starts, start, self._n))
            stop = min(stop, _next_after(self._source_starts, start, self._n))
            idx = np.arange(start, stop)
        else:
            idx = self._order[start:stop]
            change = np.flatnonzero(self._source[idx] != self._source[idx[0]])
            if len(change):
                idx = idx[:change[0]]
                stop = start + len(idx)
        self._pos = stop
        t = self.trace
        return RequestBlock(  # fancy indexing copies: blocks never alias the shared trace
            network=t.network[idx], co_cpu_pct=t.co_cpu_pct[idx], co_mem_pct=t.co_mem_pct[idx],
            rssi_wifi_dbm=t.rssi_wifi_dbm[idx], rssi_p2p_dbm=t.rssi_p2p_dbm[idx],
            latency_ms=self._latency[:, idx].T, energy_mj=self._energy[:, idx].T,
            accuracy=self._accuracy[:, idx].T,
            energy_source=str(self._source_names[self._source[idx[0]]]),
        )

    def execute(self, block: RequestBlock, index: int, action: int) -> Outcome:
        """Never needed: replay blocks carry outcomes (NaN marks an unrecorded target)."""
        raise NotImplementedError("replay blocks carry outcomes; the env reads them directly")

    def close(self) -> None:
        """Nothing to release."""

    def provenance(self) -> dict[str, str]:
        """Where the requests come from (written into the header of a re-recording)."""
        return {"replayed_from": str(self.trace.path), "replay_order": self.order}

    # ---------------------------------------------------------------------------------------

    @property
    def position(self) -> int:
        """Index (in replay order) of the next request the tape would hand out."""
        return self._pos

    def _reference(self, override: dict[str, float] | None) -> np.ndarray:
        t = self.trace
        names = [w.name for w in t.workloads]
        if t.header.device in config.device_names():
            from autoscale_env.world.rules import reference_energy_mj  # what the profile defines
            ref = reference_energy_mj(config.load_device(t.header.device), t.workloads)
        else:
            ref = self._reference_from_trace()
        for name, value in (override or {}).items():
            if name not in names:
                raise UnknownNameError("network", name, names)
            value = float(value)
            if not (np.isfinite(value) and value > 0):
                raise ConfigError(f"reference_energy_mj[{name!r}] must be a positive number of "
                                  f"mJ, got {value!r}")
            ref[names.index(name)] = value
        present = np.unique(t.network)
        missing = [names[k] for k in present if not (np.isfinite(ref[k]) and ref[k] > 0)]
        if missing:
            traces._fail(
                f"{t.path}: cannot derive E_ref (the local/cpu/fp32 energy) of network "
                f"{missing[0]!r} from the trace: it has no local/cpu/fp32 row with energy > 0 "
                f"for it and device "
                f"{t.header.device!r} is not a bundled profile; pass backend_options="
                f"{{'reference_energy_mj': {{'{missing[0]}': <mJ>}}}}", path=t.path,
                column="energy_mj")
        return ref

    def _reference_from_trace(self) -> np.ndarray:
        t = self.trace
        ref = np.full(len(t.workloads), np.nan)
        if _CPU not in t.targets:
            return ref
        energy = t.energy_mj[:, t.targets.index(_CPU)]
        quiet = (t.co_cpu_pct == 0) & (t.co_mem_pct == 0)
        for k in np.unique(t.network):
            mine = (t.network == k) & np.isfinite(energy)
            if (mine & quiet).any():
                ref[k] = float(np.median(energy[mine & quiet]))
            elif mine.any():
                ref[k] = float(energy[mine].min())
        return ref


def _next_after(starts: np.ndarray, pos: int, end: int) -> int:
    """The first entry of sorted ``starts`` greater than ``pos`` (``end`` if none)."""
    k = np.searchsorted(starts, pos, side="right")
    return int(starts[k]) if k < len(starts) else end


__all__ = ["DEFAULT_BLOCK_SIZE", "ORDERS", "ReplayBackend"]
