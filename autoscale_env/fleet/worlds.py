"""Each phone's own world, stacked: the requests and every target's outcome, per round.

Every phone of a fleet has its own backend world (device, scenario, setting, random generator),
exactly the world AutoScale-v0 would give it alone; this module draws their next blocks and stacks
them as arrays with the request as first axis and the phone as second, so a fleet step is a slice.

Two ways to get the blocks, with identical results (a test checks it):

* the public :class:`~autoscale_env.world.types.Backend` protocol, ``reset(rng)`` / ``next_block()``, one
  backend per phone (any backend whose blocks carry outcomes);
* for ``sim`` phones, one backend per (device, scenario, setting) group computing the group's
  blocks in one compiled pass (``reset_worlds`` / ``generate``, the public batched interface the
  native vector env uses). It is taken when the backend offers it, else the fleet falls back to
  the protocol. This is the part to re-point when the simulator's rules API changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from autoscale_env.backends import make_backend
from autoscale_env.backends.sim import Requests
from autoscale_env.world.types import Backend, RequestBlock, Target, Workload

_BATCHED = ("reset_worlds", "block_size", "generate", "accuracy_table")
#: :class:`FleetBlock`'s request contexts, (B, N), and outcomes, (B, N, T), in the generator's order.
_CONTEXT = ("network", "co_cpu_pct", "co_mem_pct", "rssi_wifi_dbm", "rssi_p2p_dbm")
_OUTCOMES = ("latency_ms", "energy_mj", "accuracy")


@dataclass
class FleetBlock:
    """The next ``B`` requests of every phone: ``(B, N)`` contexts, ``(B, N, T)`` outcomes
    (``T`` = most targets of any phone; a phone's missing targets hold NaN)."""

    network: np.ndarray
    co_cpu_pct: np.ndarray
    co_mem_pct: np.ndarray
    rssi_wifi_dbm: np.ndarray
    rssi_p2p_dbm: np.ndarray
    latency_ms: np.ndarray
    energy_mj: np.ndarray
    accuracy: np.ndarray

    def __len__(self) -> int:
        return self.network.shape[0]

    @classmethod
    def empty(cls, B: int, N: int, T: int) -> FleetBlock:
        """Uninitialised arrays for ``B`` requests of ``N`` phones with up to ``T`` targets."""
        return cls(network=np.empty((B, N), np.int64), co_cpu_pct=np.empty((B, N)),
                   co_mem_pct=np.empty((B, N)), rssi_wifi_dbm=np.empty((B, N)),
                   rssi_p2p_dbm=np.empty((B, N)), latency_ms=np.empty((B, N, T)),
                   energy_mj=np.empty((B, N, T)), accuracy=np.empty((B, N, T)))


class FleetWorlds:
    """The worlds of N phones.

    Args:
        phones: ``(device, scenario, setting)`` per phone (used when ``backend`` is a name).
        backend: a backend name (``sim``, or ``replay`` with ``backend_options``) or one
            :class:`~autoscale_env.world.types.Backend` instance per phone.
        backend_options: extra keyword arguments for every backend (e.g. ``block_size``).
        batched: allow the batched ``sim`` path (results are identical; False forces the protocol).
        threads: threads computing a big group's blocks (each takes a contiguous slice of the
            group's phones; results are identical: each phone's episode is computed whole by
            one thread). Default: numba's thread count.
    """

    def __init__(self, phones: Sequence[tuple[str, str, str]], backend: str | Sequence[Backend] = "sim",
                 backend_options: dict[str, Any] | None = None, batched: bool = True,
                 threads: int | None = None):
        options = dict(backend_options or {})
        self.threads = None if threads is None else max(1, int(threads))
        self.n_phones = N = len(phones) if isinstance(backend, str) else len(backend)
        if N < 1:
            raise ValueError("a fleet needs at least one phone")
        self._groups: list[tuple[Any, np.ndarray, Any]] = []  # (backend, phones, batched state)
        self.backends: list[Backend] = []
        if isinstance(backend, str):
            keys: dict[tuple, list[int]] = {}
            for k, p in enumerate(phones):
                keys.setdefault(tuple(p), []).append(k)
            per_phone: list[Backend | None] = [None] * N
            for (device, scenario, setting), members in keys.items():
                first = make_backend(backend, device=device, scenario=scenario, setting=setting,
                                     **options)
                state = _batched_state(first, len(members)) if batched else None
                if state is not None:
                    self._groups.append((first, np.array(members), state))
                    for k in members:
                        per_phone[k] = first
                else:
                    for i, k in enumerate(members):
                        per_phone[k] = first if i == 0 else make_backend(
                            backend, device=device, scenario=scenario, setting=setting, **options)
                        self._groups.append((per_phone[k], np.array([k]), None))
            self.backends = per_phone  # type: ignore[assignment]
        else:
            self.backends = list(backend)
            self._groups = [(b, np.array([k]), None) for k, b in enumerate(self.backends)]
        self.targets: list[tuple[Target, ...]] = [tuple(b.targets) for b in self.backends]
        self.n_targets = np.array([len(t) for t in self.targets])
        self.T = int(self.n_targets.max())
        self.workloads: tuple[Workload, ...] = tuple(self.backends[0].workloads)
        for k, b in enumerate(self.backends):
            if tuple(w.name for w in b.workloads) != tuple(w.name for w in self.workloads):
                raise ValueError(f"phone {k}'s backend has another workload catalog than phone 0's; "
                                 f"a fleet's phones must index the same networks")
        self.reference_energy_mj = np.stack(
            [np.asarray(b.reference_energy_mj, dtype=float) for b in self.backends])

    @property
    def batched(self) -> bool:
        """True when at least one group takes the batched path."""
        return any(state is not None for _, _, state in self._groups)

    def reset(self, rngs: Sequence[np.random.Generator]) -> None:
        """Start every phone's episode, phone ``k`` drawing from ``rngs[k]`` only."""
        self._rngs = list(rngs)
        for b, members, state in self._groups:
            if state is None:
                b.reset(self._rngs[members[0]])
            else:
                b.reset_worlds([self._rngs[k] for k in members.tolist()], state,
                               np.arange(len(members)))

    def next_block(self, out: FleetBlock | None = None) -> FleetBlock:
        """Every phone's next block, stacked: sim groups write it in place, others are copied.

        ``out``: a block this method returned before, to fill again instead of allocating one
        (when its length still fits): a fleet's blocks are megabytes, and fresh ones cost a page
        fault per 4 KiB on every block. A phone's missing targets are never written, so they
        keep the NaN they got when the block was allocated.
        """
        drawn = []  # protocol blocks, drawn first: their length must match before sim groups advance
        for b, members, state in self._groups:
            if state is None:
                blk: RequestBlock = b.next_block()
                if blk.latency_ms is None:
                    raise ValueError(f"{type(b).__name__} blocks carry no outcomes (a live backend?); "
                                     f"a fleet needs every target's outcome in advance")
                drawn.append((members, blk))
        lengths = {len(blk.network) for _, blk in drawn}
        lengths |= {int(b.block_size) for b, _, state in self._groups if state is not None}
        if len(lengths) != 1:
            raise ValueError(f"the phones' backends returned blocks of different lengths "
                             f"{sorted(lengths)}; give them one block_size")
        B, N, T = lengths.pop(), self.n_phones, self.T
        if out is None or out.latency_ms.shape != (B, N, T):
            out = FleetBlock.empty(B, N, T)
            if (self.n_targets < T).any():  # a phone's missing targets: unknown
                for a in (out.latency_ms, out.energy_mj, out.accuracy):
                    a.fill(np.nan)
        for members, blk in drawn:  # one phone each
            k = members[0]
            for name in _CONTEXT:
                getattr(out, name)[:, k] = getattr(blk, name)
            for name in _OUTCOMES:
                a = np.asarray(getattr(blk, name))
                getattr(out, name)[:, k, :a.shape[-1]] = a
        for b, members, state in self._groups:
            if state is not None:
                self._batched_block(b, members, state, out)
        return out

    def _batched_block(self, b, members: np.ndarray, state, out: FleetBlock) -> None:
        """One sim group's blocks in one compiled pass (phones split across threads), written
        straight into the group's phones of ``out``: the generator takes transposed views, so
        phone ``members[k]`` is its row ``members[k]``, and no transposed copy is made."""
        t = len(b.targets)
        views = Requests(*(getattr(out, name).T for name in _CONTEXT),
                         *(getattr(out, name)[:, :, :t].transpose(1, 0, 2)
                           for name in _OUTCOMES[:2]))
        b.generate(state, np.arange(len(members)), out=views, threads=self.threads, rows=members)
        # the sim's accuracy depends only on (network, target): one gather from its table
        if t == self.T and len(members) == self.n_phones:  # the whole fleet: no index needed
            np.take(b.accuracy_table, out.network, axis=0, out=out.accuracy)
        else:
            out.accuracy[:, members, :t] = b.accuracy_table[out.network[:, members]]

    def close(self) -> None:
        """Close every backend."""
        for b in {id(b): b for b in self.backends}.values():
            b.close()


def _batched_state(backend, n_worlds: int):
    """The :class:`~autoscale_env.backends.sim.SimState` of the batched ``sim`` path, or None
    when ``backend`` does not offer it (then the fleet uses the plain protocol, one backend per
    phone)."""
    if not all(hasattr(backend, name) for name in _BATCHED):
        return None
    from autoscale_env.backends.sim import SimState
    return SimState(n_worlds)
