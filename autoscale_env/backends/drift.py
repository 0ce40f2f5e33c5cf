"""Drift: the simulated world in which one thing shifts at a known request index and stays.

``DriftBackend`` wraps a :class:`~autoscale_env.backends.sim.SimBackend` of the dynamic setting
through its public surface (``reset``, ``next_block``, ``targets``, ``workloads``, ...) and edits
each block it returns: requests from index ``shift_at`` on (counted over the backend's lifetime,
across episode resets: a shift is a change of the world, not of an episode) get the shifted
context, and every target's outcome is recomputed for it. The shifts are data
(``data/drift.toml``); their kinds:

``rssi``
    A link's RSSI becomes ``level + spread * (rssi - centre)`` (before and/or after the shift).
    Outcomes: ``outcome * expected(shifted) / expected(original)``: the noise-free model's ratio
    carries the request's own runtime noise over to the new signal; where the shifted link is
    disconnected the (deterministic) timeout outcome is used as is.
``load``
    Co-running CPU and memory use grow; outcomes by the same ratio.
``cloud_queue``
    Every cloud request waits the M/M/1 mean queueing delay ``rho / (1 - rho) * service_ms`` at
    the phone's base power (a disconnected request times out before it queues).
``thermal``
    A first-order thermal model of the phone. After each executed request ``k`` (latency ``L``,
    phone energy ``E``, request gap ``g``), over ``dt = max(g, L)``::

        P = (E + base_w * max(0, g - L)) / dt                       # mean phone power, W
        T <- T + (ambient + R * P - T) * (1 - exp(-dt / tau))       # degrees C

    and every block's CPU/GPU targets run at frequency fraction
    ``f = max(f_min, 1 - slowdown_per_c * max(0, T - trip))``: latency ``/ f``, energy ``+ base_w *``
    the extra time (the processor's own energy per inference is taken as unchanged: lower DVFS
    voltage saves about what hot silicon leaks; estimate). The ambient temperature rises at the
    shift. ``T`` is read when a block is generated (101 requests, 3.4 s of streaming, against a
    2-minute time constant), so each block's outcomes, and with them ``oracle_action``, are
    known before the agent acts; the oracle stays the best *myopic* choice (it ignores the heat
    its choice adds). The env reports executed requests through the optional ``observe_action``
    hook (``AutoScaleEnv`` calls it after each step when a backend defines it; only thermal
    backends do, so the others cost nothing).

The one place that touches the simulator's internals is :func:`expected_outcomes` (the
noise-free model of a batch of requests); porting this module to another rules engine means
re-pointing that function.

Determinism: a fresh backend with the same seed gives the same requests and outcomes, and (for
thermal) the same temperatures under the same actions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from autoscale_env.world import config, schemas
from autoscale_env.backends.sim import DEFAULT_BLOCK_SIZE, SimBackend
from autoscale_env.world.errors import ConfigError
from autoscale_env.world.types import RequestBlock
from autoscale_env.world.errors import UnknownNameError

DRIFT_FILE = Path(__file__).resolve().parent.parent / "data" / "drift.toml"
KINDS = schemas.SHIFT_KINDS
LINKS = schemas.LINKS


# ----------------------------------------------------------------------------------------------
# The adapter to the simulator's rules


def expected_outcomes(sim: SimBackend, network: np.ndarray, co_cpu_pct: np.ndarray,
                      co_mem_pct: np.ndarray, rssi_wifi_dbm: np.ndarray,
                      rssi_p2p_dbm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free ``(latency_ms, energy_mj)``, each ``(n, n_targets)``, of ``n`` requests.

    THE adapter between drift and the world's rules: ``sim.model`` is the sim's
    :class:`autoscale_env.world.rules.OutcomeModel`.
    """
    return sim.model.outcomes(network, co_cpu_pct, co_mem_pct, rssi_wifi_dbm, rssi_p2p_dbm)


# ----------------------------------------------------------------------------------------------
# The shifts (data/drift.toml)


@dataclass(frozen=True)
class Shift:
    """One drift scenario of ``drift.toml``."""

    name: str
    description: str
    scenario: str
    kind: str
    params: dict[str, Any]
    source: str


@dataclass(frozen=True)
class DriftRun:
    """``[run]``: the default shift index and the requests run after it."""

    shift_at: int
    after: int


def load_drift(path: str | Path | None = None) -> tuple[DriftRun, dict[str, Shift]]:
    """Read ``drift.toml`` (or ``path``); errors name the file and the field."""
    path = Path(path) if path is not None else DRIFT_FILE
    doc = schemas.validate(schemas.DriftFile, config.read_toml(path), path)
    run = DriftRun(shift_at=doc.run.shift_at, after=doc.run.after)
    shifts = {}
    for name, table in doc.shifts.items():
        where = ("shifts", name)
        kind = schemas.validate(schemas.ShiftKind, table, path, prefix=where).kind
        t = schemas.validate(schemas.SHIFT_SCHEMAS[kind], table, path, prefix=where)
        config.get_scenario(t.scenario)
        params = t.model_dump(exclude={"description", "scenario", "kind", *schemas.META_KEYS})
        if "processors" in params:
            params["processors"] = tuple(params["processors"])
        shifts[name] = Shift(name, t.description, t.scenario, kind, params, t.source)
    if not shifts:
        raise ConfigError(f"{path}: no [shifts.NAME] tables")
    return run, shifts


def shift_names(path: str | Path | None = None) -> list[str]:
    """Names of the bundled drift scenarios."""
    return list(load_drift(path)[1])


# ----------------------------------------------------------------------------------------------
# The backend


class DriftBackend:
    """The dynamic-setting sim with one shift (see the module docstring).

    Args:
        device: bundled phone name or profile path.
        scenario: overrides the shift's own scenario (default: the one in ``drift.toml``).
        setting: ``drift`` (or ``dynamic``, the same): the world before the shift.
        shift: name of a ``[shifts.NAME]`` table of ``drift.toml``.
        shift_at: request index of the shift (default ``[run] shift_at``).
        drift_file: another drift TOML file.
        block_size: requests per block (as the sim's).

    Attributes besides the backend protocol: ``requests`` (generated so far), ``temperature_c``
    and ``frequency_fraction`` (thermal only; the latter as applied to the latest block).
    """

    deterministic = True
    energy_source = "model"

    def __init__(self, device: str = "mi8pro", scenario: str | None = None,
                 setting: str = "drift", shift: str = "wifi_weak", shift_at: int | None = None,
                 drift_file: str | None = None, block_size: int = DEFAULT_BLOCK_SIZE):
        if setting not in ("drift", "dynamic"):
            raise UnknownNameError("setting (drift backend)", setting, ["drift", "dynamic"])
        run, shifts = load_drift(drift_file)
        if shift not in shifts:
            raise UnknownNameError("drift shift", shift, shifts)
        self.shift = shifts[shift]
        self.shift_at = run.shift_at if shift_at is None else int(shift_at)
        if self.shift_at < 0:
            raise ValueError(f"shift_at must be >= 0, got {shift_at}")
        self.sim = SimBackend(device=device, scenario=scenario or self.shift.scenario,
                              setting="dynamic", block_size=block_size)
        sim = self.sim
        self.phone = sim.phone
        self.scenario = sim.scenario
        self.setting = f"drift:{shift}"
        self.targets = sim.targets
        self.workloads = sim.workloads
        self.reference_energy_mj = sim.reference_energy_mj
        self.requests = 0
        self._block_start = 0
        self._local = np.array([t.is_local for t in self.targets])
        p = self.shift.params
        kind = self.shift.kind
        if kind == "rssi":
            _, _, dynamic = config.load_settings()
            low, high = (dynamic.rssi_wifi_range_dbm if p["link"] == "wifi"
                         else dynamic.rssi_p2p_range_dbm)[:2]
            self._centre_dbm = (low + high) / 2.0
            self._link = config.load_links()[p["link"]]
        elif kind == "cloud_queue":
            cloud = config.load_device(self.phone.cloud)
            rho = p["utilization"]
            wait = np.zeros((len(self.workloads), len(self.targets)))
            for j, t in enumerate(self.targets):
                if t.location == "cloud":
                    for i, w in enumerate(self.workloads):
                        if w.name in cloud.latency_ms:
                            service = cloud.unit_latency_ms(w.name, t.unit)[1] + cloud.overhead_ms
                            wait[i, j] = rho / (1.0 - rho) * service
            self._wait_ms = wait
            self._wifi_disconnect_dbm = config.load_links()["wifi"].disconnect_rssi_dbm
        elif kind == "thermal":
            self._throttled = np.array([t.is_local and t.processor in p["processors"]
                                        for t in self.targets])
            self._tau_ms = p["time_constant_s"] * 1000.0
            self._gap_ms = float(self.scenario.request_gap_ms)
            self._base_w = float(self.phone.base_power_w)
            # start in equilibrium with an idle phone
            self.temperature_c = p["ambient_before_c"] + p["thermal_resistance_c_per_w"] * self._base_w
            self.frequency_fraction = 1.0
            self.observe_action = self._observe_thermal  # the env's optional hook

    # -- backend protocol -----------------------------------------------------------------------

    def reset(self, rng: np.random.Generator) -> None:
        """Start an episode of the wrapped sim (the request count and the heat carry on)."""
        self.sim.reset(rng)

    def next_block(self) -> RequestBlock:
        """The sim's next block, shifted where its requests are at or past ``shift_at``."""
        block = self.sim.next_block()
        n = len(block)
        start = self.requests
        self.requests += n
        self._block_start = start
        after = np.arange(start, start + n) >= self.shift_at
        kind = self.shift.kind
        if kind == "thermal":
            return self._thermal_block(block)
        if not after.any() and not (kind == "rssi" and self.shift.params["before_dbm"] is not None):
            return block
        if kind == "rssi":
            return self._rssi_block(block, after)
        if kind == "load":
            p = self.shift.params
            cpu = np.where(after, np.minimum(block.co_cpu_pct + p["add_cpu_pct"], 100.0),
                           block.co_cpu_pct)
            mem = np.where(after, np.minimum(block.co_mem_pct + p["add_mem_pct"], 100.0),
                           block.co_mem_pct)
            return self._recompute(block, co_cpu_pct=cpu, co_mem_pct=mem)
        return self._queue_block(block, after)

    def execute(self, block: RequestBlock, index: int, action: int):
        """Never needed: drift blocks carry every target's outcome."""
        raise NotImplementedError("drift blocks carry outcomes; the env reads them directly")

    def close(self) -> None:
        """Nothing to release."""
        self.sim.close()

    # -- the shifts -----------------------------------------------------------------------------

    def _rssi_block(self, block: RequestBlock, after: np.ndarray) -> RequestBlock:
        p = self.shift.params
        field = "rssi_wifi_dbm" if p["link"] == "wifi" else "rssi_p2p_dbm"
        rssi = getattr(block, field)
        moved = self._centre_dbm + p["spread"] * (rssi - self._centre_dbm)
        new = np.where(after, p["after_dbm"] + (moved - self._centre_dbm), rssi)
        if p["before_dbm"] is not None:
            new = np.where(after, new, p["before_dbm"] + (moved - self._centre_dbm))
        block = self._recompute(block, **{field: new})
        # a disconnected link gives the deterministic timeout outcome (no noise to carry over)
        down = new < self._link.disconnect_rssi_dbm
        if down.any():
            lat, en = self._expected_of(block)
            on_link = np.array([t.location == ("cloud" if p["link"] == "wifi" else "edge")
                                for t in self.targets])
            mask = down[:, None] & on_link[None, :]
            block.latency_ms[mask] = lat[mask]
            block.energy_mj[mask] = en[mask]
        return block

    def _expected_of(self, block: RequestBlock) -> tuple[np.ndarray, np.ndarray]:
        return expected_outcomes(self.sim, block.network, block.co_cpu_pct, block.co_mem_pct,
                                 block.rssi_wifi_dbm, block.rssi_p2p_dbm)

    def _recompute(self, block: RequestBlock, **context: np.ndarray) -> RequestBlock:
        """``block`` under a changed context: outcomes scaled by the noise-free model's ratio."""
        lat0, en0 = self._expected_of(block)
        shifted = replace(block, **{k: np.asarray(v, dtype=float) for k, v in context.items()})
        lat1, en1 = self._expected_of(shifted)
        shifted.latency_ms = block.latency_ms * (lat1 / lat0)
        shifted.energy_mj = block.energy_mj * (en1 / en0)
        return shifted

    def _queue_block(self, block: RequestBlock, after: np.ndarray) -> RequestBlock:
        wait = self._wait_ms[block.network]  # (n, T)
        wait = wait * (after & (block.rssi_wifi_dbm >= self._wifi_disconnect_dbm))[:, None]
        return replace(block, latency_ms=block.latency_ms + wait,
                       energy_mj=block.energy_mj + self.phone.base_power_w * wait)

    # -- thermal --------------------------------------------------------------------------------

    def _thermal_block(self, block: RequestBlock) -> RequestBlock:
        p = self.shift.params
        over = max(0.0, self.temperature_c - p["trip_c"])
        f = max(p["min_frequency_fraction"], 1.0 - p["slowdown_per_c"] * over)
        self.frequency_fraction = f
        if f == 1.0:
            return block
        extra_ms = block.latency_ms * (1.0 / f - 1.0) * self._throttled[None, :]
        return replace(block, latency_ms=block.latency_ms + extra_ms,
                       energy_mj=block.energy_mj + self._base_w * extra_ms)

    def _observe_thermal(self, block: RequestBlock, index: int, action: int) -> None:
        """Heat the phone with the request just executed (the env's ``observe_action`` hook)."""
        p = self.shift.params
        latency = float(block.latency_ms[index, action])
        energy = float(block.energy_mj[index, action])
        gap = self._gap_ms
        dt = latency if latency > gap else gap
        power_w = (energy + self._base_w * (gap - latency if gap > latency else 0.0)) / dt
        ambient = (p["ambient_after_c"] if self._block_start + index >= self.shift_at
                   else p["ambient_before_c"])
        steady = ambient + p["thermal_resistance_c_per_w"] * power_w
        self.temperature_c += (steady - self.temperature_c) * (1.0 - math.exp(-dt / self._tau_ms))
