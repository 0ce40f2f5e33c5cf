"""The simulated world: calibrated device profiles, a utilisation-based power model, a
signal-strength network model and stochastic runtime variance.

Requests are generated in blocks of ``block_size`` with vectorised numpy, and every target's outcome
is computed for each request (so the oracle is known). The world does not react to actions: which
target ran a request does not change the next request's conditions. Random draws come only from the
generator passed to :meth:`SimBackend.reset`, in a fixed order, so a seed fixes the trajectory.
"""

from __future__ import annotations

import numpy as np

from autoscale_env import config
from autoscale_env.backends import power, radio
from autoscale_env.core import RequestBlock, Target, Workload

#: Requests generated per block. Part of the definition of a seed's trajectory: changing it
#: changes which random numbers land on which request.
DEFAULT_BLOCK_SIZE = 100


class SimBackend:
    """Analytical world model for one phone in one scenario and setting.

    Args:
        device: bundled phone name (``mi8pro``, ``galaxy_s10e``, ``moto_x_force``) or a profile path.
        scenario: ``non_streaming``, ``streaming`` or ``translation``.
        setting: ``static`` (conditions drawn per episode, then held) or ``dynamic``.
        block_size: requests generated per block.
    """

    deterministic = True
    energy_source = "model"

    def __init__(self, device: str = "mi8pro", scenario: str = "non_streaming",
                 setting: str = "dynamic", block_size: int = DEFAULT_BLOCK_SIZE):
        self.phone = config.load_device(device)
        if self.phone.kind != "phone":
            raise config.ConfigError(f"{self.phone.path}: device must be a phone profile, got kind {self.phone.kind!r}")
        self.scenario = config.get_scenario(scenario)
        self.setting = config.check_setting(setting)
        self.block_size = int(block_size)
        self.edge = config.load_device(self.phone.edge)
        self.cloud = config.load_device(self.phone.cloud)
        self.links = config.load_links()
        self.apps, self.static, self.dynamic = config.load_settings()
        catalog = config.load_workloads()
        self.workloads: tuple[Workload, ...] = tuple(catalog.values())
        self.targets: tuple[Target, ...] = self.phone.targets
        self._scenario_networks = np.array(
            [list(catalog).index(n) for n in self.scenario.networks], dtype=np.int64)
        self._precompute()
        self._rng: np.random.Generator | None = None

    # ---------------------------------------------------------------------------------------
    # Per (workload, target) constants, computed once

    def _precompute(self) -> None:
        W, T = len(self.workloads), len(self.targets)
        names = [w.name for w in self.workloads]
        self._local = np.array([t.is_local for t in self.targets])
        self._base_ms = np.zeros((W, T))
        self._server_ms = np.zeros((W, T))
        self.accuracy_table = np.zeros((W, T))
        busy, idle, kc, km = (np.zeros((W, T)) for _ in range(4))
        self._link_of = np.array([1 if t.location == "edge" else 0 for t in self.targets])
        # Targets that end up on the same physical unit (a fallback) share its noise draw, so a
        # fallback is reliably a little worse than asking for that unit, never a coin flip.
        self._noise_col = np.zeros((W, T), dtype=np.int64)
        for j, t in enumerate(self.targets):
            for i, net in enumerate(names):
                if t.is_local:
                    unit, ms = self.phone.unit_latency_ms(net, t.unit)
                    proc = self.phone.processors[unit.split("/")[0]]
                    self._base_ms[i, j] = ms
                    busy[i, j], idle[i, j] = proc.busy_power_w, proc.idle_power_w
                    kc[i, j], km[i, j] = proc.cpu_interference, proc.mem_interference
                else:
                    host = self.edge if t.location == "edge" else self.cloud
                    unit, ms = host.unit_latency_ms(net, t.unit)
                    self._server_ms[i, j] = ms + host.overhead_ms
                runs_on = Target(t.location, *unit.split("/"))
                self._noise_col[i, j] = self.targets.index(runs_on) if runs_on in self.targets else j
                precision = unit.split("/")[1]
                self.accuracy_table[i, j] = self.workloads[i].accuracy[precision]
        self._busy_w, self._idle_w, self._kc, self._km = busy, idle, kc, km
        self._up_bytes = np.array([w.input_bytes for w in self.workloads], dtype=float)
        self._down_bytes = np.array([w.output_bytes for w in self.workloads], dtype=float)
        cpu = self.targets.index(Target("local", "cpu", "fp32"))
        self.reference_energy_mj = self._base_ms[:, cpu] * (
            busy[:, cpu] + self.phone.base_power_w)

    # ---------------------------------------------------------------------------------------
    # Backend protocol

    def reset(self, rng: np.random.Generator) -> None:
        """Start an episode: static draws its held conditions, dynamic its initial state."""
        self._rng = rng
        if self.setting == "static":
            s = self.static
            app = self.apps[s.apps[rng.integers(len(s.apps))]]
            self._static_ctx = (
                app.cpu_pct, app.mem_pct,
                s.rssi_wifi_dbm[rng.integers(len(s.rssi_wifi_dbm))],
                s.rssi_p2p_dbm[rng.integers(len(s.rssi_p2p_dbm))],
            )
        else:
            d = self.dynamic
            self._app = int(rng.integers(len(d.apps)))
            self._app_left = 0
            self._rssi_mean = [0.0, 0.0]
            self._rssi_left = [0, 0]
            self._drop_left = [0, 0]

    def next_block(self) -> RequestBlock:
        """Generate the next ``block_size`` requests with every target's outcome."""
        rng = self._rng
        if rng is None:
            raise RuntimeError("SimBackend.next_block() called before reset()")
        n = self.block_size
        network = self._scenario_networks[rng.integers(len(self._scenario_networks), size=n)]
        if self.setting == "static":
            cpu, mem, wifi, p2p = (np.full(n, v) for v in self._static_ctx)
            sig = self.static
        else:
            cpu, mem = self._dynamic_apps(rng, n)
            wifi = self._dynamic_rssi(rng, n, 0, self.dynamic.rssi_wifi_range_dbm)
            p2p = self._dynamic_rssi(rng, n, 1, self.dynamic.rssi_p2p_range_dbm)
            sig = self.dynamic
        T = len(self.targets)
        rows = np.arange(n)[:, None]
        cols = self._noise_col[network]
        local_noise = rng.lognormal(0.0, sig.local_latency_sigma, size=(n, T))[rows, cols]
        server_noise = rng.lognormal(0.0, sig.server_latency_sigma, size=(n, T))[rows, cols]
        goodput_noise = rng.lognormal(0.0, sig.goodput_sigma, size=(n, 2))
        latency, energy = self._outcomes(network, cpu, mem, wifi, p2p,
                                         local_noise, server_noise, goodput_noise)
        return RequestBlock(
            network=network, co_cpu_pct=cpu, co_mem_pct=mem, rssi_wifi_dbm=wifi,
            rssi_p2p_dbm=p2p, latency_ms=latency, energy_mj=energy,
            accuracy=self.accuracy_table[network], energy_source=self.energy_source,
        )

    def expected(self, network: str, *, co_cpu_pct: float = 0.0, co_mem_pct: float = 0.0,
                 rssi_wifi_dbm: float = -55.0, rssi_p2p_dbm: float = -50.0) -> RequestBlock:
        """Every target's noise-free outcome for one request under the given conditions.

        A what-if tool (the table of which target wins where is built with it); it draws no
        random numbers and does not disturb an episode in progress.
        """
        names = [w.name for w in self.workloads]
        if network not in names:
            raise config.UnknownNameError("network", network, names)
        net = np.array([names.index(network)])
        ctx = [np.array([float(v)]) for v in (co_cpu_pct, co_mem_pct, rssi_wifi_dbm, rssi_p2p_dbm)]
        ones = np.ones((1, len(self.targets)))
        latency, energy = self._outcomes(net, *ctx, ones, ones, np.ones((1, 2)))
        return RequestBlock(network=net, co_cpu_pct=ctx[0], co_mem_pct=ctx[1],
                            rssi_wifi_dbm=ctx[2], rssi_p2p_dbm=ctx[3], latency_ms=latency,
                            energy_mj=energy, accuracy=self.accuracy_table[net],
                            energy_source=self.energy_source)

    def execute(self, block: RequestBlock, index: int, action: int):
        """Never needed: sim blocks carry every target's outcome."""
        raise NotImplementedError("sim blocks carry outcomes; the env reads them directly")

    def close(self) -> None:
        """Nothing to release."""

    # ---------------------------------------------------------------------------------------
    # The world model

    def _outcomes(self, network, cpu, mem, wifi, p2p, local_noise, server_noise, goodput_noise):
        """(latency_ms, energy_mj), each (n, n_targets), for every target of every request."""
        lat_local, e_local = power.local_run(
            base_ms=self._base_ms[network], noise=local_noise,
            co_cpu_frac=(cpu / 100.0)[:, None], co_mem_frac=(mem / 100.0)[:, None],
            cpu_interference=self._kc[network], mem_interference=self._km[network],
            busy_power_w=self._busy_w[network], idle_power_w=self._idle_w[network],
            base_power_w=self.phone.base_power_w,
        )
        rssi = np.stack([wifi, p2p], axis=1)[:, self._link_of]
        noise = goodput_noise[:, self._link_of]
        lat_remote = np.empty_like(lat_local)
        e_remote = np.empty_like(e_local)
        for k, name in enumerate(("wifi", "p2p")):
            cols = self._link_of == k
            lat_remote[:, cols], e_remote[:, cols] = radio.offload(
                self.links[name], wifi_active_w=self.phone.wifi_active_w,
                base_power_w=self.phone.base_power_w, rssi_dbm=rssi[:, cols],
                goodput_noise=noise[:, cols], up_bytes=self._up_bytes[network][:, None],
                down_bytes=self._down_bytes[network][:, None],
                server_ms=self._server_ms[network][:, cols] * server_noise[:, cols],
                request_gap_ms=self.scenario.request_gap_ms,
            )
        local = self._local
        return np.where(local, lat_local, lat_remote), np.where(local, e_local, e_remote)

    def _dynamic_apps(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Co-running apps switching after geometric holding times, with per-request jitter."""
        d = self.dynamic
        idx = np.empty(n, dtype=np.int64)
        filled = 0
        while filled < n:
            if self._app_left == 0:
                self._app = int(rng.integers(len(d.apps)))
                self._app_left = int(rng.geometric(1.0 / d.app_mean_requests))
            k = min(self._app_left, n - filled)
            idx[filled:filled + k] = self._app
            self._app_left -= k
            filled += k
        profiles = [self.apps[a] for a in d.apps]
        mean_cpu = np.array([p.cpu_pct for p in profiles])[idx]
        mean_mem = np.array([p.mem_pct for p in profiles])[idx]
        busy = mean_cpu > 0  # an empty background stays at exactly 0 %
        cpu = np.where(busy, np.clip(mean_cpu + rng.normal(0, d.app_cpu_jitter_pct, n), 1, 100), 0.0)
        mem = np.where(busy, np.clip(mean_mem + rng.normal(0, d.app_mem_jitter_pct, n), 1, 100), 0.0)
        return cpu, mem

    def _dynamic_rssi(self, rng: np.random.Generator, n: int, link: int,
                      range_dbm: tuple[float, ...]) -> np.ndarray:
        """Signal: piecewise-constant means (the user moves), fading, and occasional deep drops."""
        d = self.dynamic
        mean = np.empty(n)
        filled = 0
        while filled < n:
            if self._rssi_left[link] == 0:
                self._rssi_mean[link] = float(rng.uniform(*range_dbm))
                self._rssi_left[link] = int(rng.geometric(1.0 / d.rssi_segment_mean_requests))
            k = min(self._rssi_left[link], n - filled)
            mean[filled:filled + k] = self._rssi_mean[link]
            self._rssi_left[link] -= k
            filled += k
        rssi = mean + rng.normal(0.0, d.rssi_fading_sigma_db, n)
        starts = rng.random(n) < d.rssi_drop_probability
        lengths = rng.geometric(1.0 / d.rssi_drop_mean_requests, size=n)
        dropped = np.zeros(n, dtype=bool)
        end = self._drop_left[link]  # a drop begun in the previous block runs on into this one
        dropped[:end] = True
        for i in np.flatnonzero(starts):
            dropped[i:i + lengths[i]] = True
            end = max(end, i + int(lengths[i]))
        self._drop_left[link] = max(0, end - n)
        return np.where(dropped, rssi - d.rssi_drop_depth_db, rssi)
