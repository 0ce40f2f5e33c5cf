"""The simulated world: calibrated device profiles, a utilisation-based power model, a
signal-strength network model and stochastic runtime variance.

Requests are generated in blocks of ``block_size`` with vectorised numpy, and every target's outcome
is computed for each request (so the oracle is known). The world does not react to actions: which
target ran a request does not change the next request's conditions, which is what makes computing a
whole block ahead legal. Random draws come only from the generator passed to
:meth:`SimBackend.reset`, in the fixed order below, so a seed fixes the trajectory.

Draw order (part of the definition of a seed's trajectory, as is ``block_size``; changing either
changes which random numbers land on which request):

``reset(rng)``
    * static: ``u = rng.random(3)``: the co-running app, the Wi-Fi RSSI and the Wi-Fi Direct RSSI of
      the episode, each as index ``floor(u * len(choices))`` into ``settings.toml``'s lists.
    * dynamic: nothing; the episode's first request starts a new app segment and new signal
      segments on both links.

``next_block()``, for ``n = block_size`` requests, one call: ``raw =
rng.bit_generator.random_raw((K + P, n))``, 64-bit words of the generator's own stream, turned into
numbers as follows.

    1. Rows ``0 .. K-1``: uniforms ``u = (raw >> 11) * 2**-53`` (exactly what ``rng.random()``
       makes of a word), ``K = 1`` (static) or ``11`` (dynamic). Row 0: the network, index
       ``floor(u * len(scenario.networks))``. Dynamic only: row 1 app switch (a request starts a
       new co-running-app segment when ``u < 1 / app_mean_requests``, so segments last a
       geometric number of requests), row 2 the new segment's app (index as above), rows 3-4
       signal segment switch of Wi-Fi / Wi-Fi Direct (``u < 1 / rssi_segment_mean_requests``),
       rows 5-6 their new segment's mean RSSI (``low + (high - low) * u`` over the setting's
       range), rows 7-8 a deep drop starts (``u < rssi_drop_probability``), rows 9-10 its length
       (geometric with mean ``rssi_drop_mean_requests``, by inversion against a table of
       ``(1 - p) ** m``, ``m <= 1024``). Drops overlap by union and carry over into the next block.
    2. Rows ``K .. K+P-1``: standard normals by the Box-Muller transform in float32, two per word:
       ``a = ((w >> 40) + 0.5) * 2**-24``, ``b = (w & (2**24 - 1)) * 2**-24``,
       ``z[j] = sqrt(-2 ln a) * cos(2 pi b)`` and ``z[P + j] = sqrt(-2 ln a) * sin(2 pi b)`` for
       word row ``K + j`` (about twice as fast as ``rng.standard_normal``, whose per-number cost
       dominated the vector env; 24 bits are plenty for noise). ``P = ceil(M / 2)``; normal rows
       ``0 .. n_local-1``: runtime noise of each local target, ``exp(local_latency_sigma * z)``
       (lognormal, median 1, in float32; rows in target order); next ``n_remote`` rows: server
       runtime noise (``server_latency_sigma``); next 2 rows: goodput noise of Wi-Fi and Wi-Fi
       Direct (``goodput_sigma``). Dynamic only, 4 more rows: co-running CPU jitter, memory
       jitter, Wi-Fi fading, Wi-Fi Direct fading (times their sigmas). ``M = 11`` or ``15``;
       an odd last normal is unused.

A target whose unit cannot run a network falls back to another unit (``fallback_unit``) and then
shares that unit's target's noise row, so a fallback is reliably a little worse than asking for
that unit directly, never a coin flip.

Everything after the draws is elementwise arithmetic, comparisons, table look-ups and running
maxima along the request axis, written for E worlds at once: per-request arrays are (E, n) and
per-target arrays are target-major (n_targets, E, n), so that every operation runs over long rows.
The native vector env (:mod:`autoscale_env.vector`) draws each sub-env's numbers from its own
generator in the order above (straight into one buffer per chunk of sub-envs) and computes the
chunk's blocks in one pass with the same code, which is why its sub-envs equal single envs bit for
bit. (Elementwise numpy results do not depend on how many elements an array has.)
"""

from __future__ import annotations

import math

import numpy as np

from autoscale_env import MAX_EPISODE_STEPS, config
from autoscale_env.backends import power, radio
from autoscale_env.core import RequestBlock, Target, Workload
from autoscale_env.state import Binner

#: Requests generated per block: the reset observation plus ``MAX_EPISODE_STEPS`` steps, so that an
#: episode under ``gym.make``'s default ``TimeLimit`` consumes exactly one block and no request is
#: generated only to be thrown away by the next reset. Part of the definition of a seed's trajectory.
DEFAULT_BLOCK_SIZE = MAX_EPISODE_STEPS + 1

#: Longest deep signal drop the inversion table can produce (requests).
MAX_DROP_REQUESTS = 1024

# Rows of the uniform draws (dynamic setting); see the module docstring.
_U_NETWORK, _U_APP_SWITCH, _U_APP = 0, 1, 2
_U_SEG_SWITCH, _U_SEG_MEAN, _U_DROP_START, _U_DROP_LEN = slice(3, 5), slice(5, 7), slice(7, 9), slice(9, 11)


class SimState:
    """Process state of ``n_worlds`` simulated worlds between blocks (one row per world).

    Attributes:
        held: static: (co_cpu_pct, co_mem_pct, rssi_wifi_dbm, rssi_p2p_dbm) of the episode.
        fresh: dynamic: the next request is the episode's first (starts new segments).
        app: dynamic: index of the current co-running app segment's app.
        rssi_mean: dynamic: current segment mean RSSI of (Wi-Fi, Wi-Fi Direct), dBm.
        drop_left: dynamic: requests still inside a deep drop begun in an earlier block, per link.
    """

    __slots__ = ("app", "drop_left", "fresh", "held", "rssi_mean")

    def __init__(self, n_worlds: int):
        self.held = np.zeros((n_worlds, 4))
        self.fresh = np.ones(n_worlds, dtype=bool)
        self.app = np.zeros(n_worlds, dtype=np.int64)
        self.rssi_mean = np.zeros((n_worlds, 2))
        self.drop_left = np.zeros((n_worlds, 2), dtype=np.int64)


class Scratch:
    """Reusable work arrays, one per (name, shape, dtype).

    Generating a chunk of many worlds' blocks needs temporaries of a few hundred kB each; freshly
    allocated, malloc maps and unmaps (or trims) them on every pass, and the page faults cost more
    than the arithmetic. Reusing them keeps the memory resident. Arrays returned to callers are
    never scratch arrays.
    """

    def __init__(self, max_arrays: int = 256):
        self._arrays: dict[tuple, np.ndarray] = {}
        self._max = max_arrays

    def __call__(self, name: str, shape: tuple[int, ...], dtype=float) -> np.ndarray:
        key = (name, shape, np.dtype(dtype).char)
        a = self._arrays.get(key)
        if a is None:
            if len(self._arrays) >= self._max:
                self._arrays.clear()
            a = self._arrays[key] = np.empty(shape, dtype)
        return a


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
        if self.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
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
        self._state = SimState(1)
        self._scratch = Scratch()

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
        # Targets that end up on the same physical unit (a fallback) share its noise draw.
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

        # The vectorised model works on local targets and remote targets as two column groups.
        local_idx = np.flatnonzero(self._local)
        remote_idx = np.flatnonzero(~self._local)
        self._n_local, self._n_remote = len(local_idx), len(remote_idx)
        order = np.concatenate([local_idx, remote_idx])
        self._column_order = None if np.array_equal(order, np.arange(T)) else np.argsort(order)
        group_pos = np.empty(T, dtype=np.int64)
        group_pos[local_idx] = np.arange(len(local_idx))
        group_pos[remote_idx] = np.arange(len(remote_idx))
        # Target-major tables (rows: targets of a group, columns: workloads), looked up with
        # table.take(network, axis=-1) -> (targets, E, n).
        self._local_noise_col = np.ascontiguousarray(group_pos[self._noise_col[:, local_idx]].T)
        self._remote_noise_col = np.ascontiguousarray(group_pos[self._noise_col[:, remote_idx]].T)
        a, b = power.energy_coefficients(busy_power_w=busy, idle_power_w=idle,
                                         cpu_interference=kc, base_power_w=self.phone.base_power_w)
        # (5, n_local, W): base latency, memory interference, CPU interference, energy a, energy b
        self._local_coef = np.ascontiguousarray(
            np.stack([self._base_ms, km, kc, a, b])[:, :, local_idx].transpose(0, 2, 1))
        self._remote_server_ms = np.ascontiguousarray(self._server_ms[:, remote_idx].T)
        self._remote_link = self._link_of[remote_idx]
        self._up_kbit = self._up_bytes * 8e-3
        self._down_kbit = self._down_bytes * 8e-3
        gap = self.scenario.request_gap_ms
        link_models = (self.links["wifi"], self.links["p2p"])
        tables = [radio.link_table(link, self.phone.wifi_active_w) for link in link_models]
        offsets = np.cumsum([0] + [len(t) for _, t in tables[:-1]])
        # per link: RSSI -> row of the stacked link tables (interval index + the link's offset)
        self._link_rows = [Binner(edges, side="right", table=np.arange(len(t)) + offset)
                           for (edges, t), offset in zip(tables, offsets)]
        # (4, intervals of both links): goodput, rtt, tx power, rx power
        self._link_table = np.ascontiguousarray(np.concatenate([t for _, t in tables]).T)
        timeout = np.array([link.timeout_ms for link in link_models])
        tail = np.array([radio.tail_energy_mj(link, self.phone.wifi_active_w, gap)
                         for link in link_models])
        self._remote_timeout_ms = timeout[self._remote_link]
        self._remote_tail_mj = tail[self._remote_link]
        self._timeout_ms = timeout

        # Dynamic processes
        d = self.dynamic
        self._app_cpu = np.array([self.apps[a].cpu_pct for a in d.apps], dtype=float)
        self._app_mem = np.array([self.apps[a].mem_pct for a in d.apps], dtype=float)
        ranges = np.array([d.rssi_wifi_range_dbm[:2], d.rssi_p2p_range_dbm[:2]], dtype=float)
        self._rssi_low = ranges[:, :1, None]
        self._rssi_span = ranges[:, 1:, None] - ranges[:, :1, None]
        q = 1.0 - 1.0 / d.rssi_drop_mean_requests
        # ascending (1-p)^m, m = MAX..1: a drop lasts 1 + #{m : u < (1-p)^m} requests
        self._drop_thresholds = q ** np.arange(MAX_DROP_REQUESTS, 0, -1, dtype=float)
        self._static_choices = (
            np.array([[self.apps[a].cpu_pct, self.apps[a].mem_pct] for a in self.static.apps]),
            np.array(self.static.rssi_wifi_dbm, dtype=float),
            np.array(self.static.rssi_p2p_dbm, dtype=float),
        )
        sig = self.static if self.setting == "static" else self.dynamic
        self._n_uniform = 1 if self.setting == "static" else 11
        L, R = self._n_local, self._n_remote
        self._n_noise = L + R + 2
        self._n_normal = self._n_noise + (0 if self.setting == "static" else 4)
        self._n_pairs = (self._n_normal + 1) // 2  # Box-Muller: two normals per word
        #: sigma of each noise row: local targets, remote targets, then the two links' goodput
        self._noise_sigma32 = np.array(
            [sig.local_latency_sigma] * L + [sig.server_latency_sigma] * R
            + [sig.goodput_sigma] * 2, dtype=np.float32)[:, None]

    # ---------------------------------------------------------------------------------------
    # Backend protocol

    def reset(self, rng: np.random.Generator) -> None:
        """Start an episode: static draws its held conditions, dynamic restarts its processes."""
        self._rng = rng
        self.reset_world(rng, self._state, 0)

    def next_block(self) -> RequestBlock:
        """Generate the next ``block_size`` requests with every target's outcome."""
        rng = self._rng
        if rng is None:
            raise RuntimeError("SimBackend.next_block() called before reset()")
        net, cpu, mem, wifi, p2p, latency, energy = self.generate(
            self.draw(rng)[None], self._state, slice(0, 1))
        return RequestBlock(  # outcome matrices are (n, n_targets) views of target-major arrays
            network=net[0], co_cpu_pct=cpu[0], co_mem_pct=mem[0], rssi_wifi_dbm=wifi[0],
            rssi_p2p_dbm=p2p[0], latency_ms=latency[:, 0].T, energy_mj=energy[:, 0].T,
            accuracy=self.accuracy_table[net[0]], energy_source=self.energy_source,
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
        net = np.array([[names.index(network)]])
        ctx = [np.array([[float(v)]]) for v in (co_cpu_pct, co_mem_pct, rssi_wifi_dbm, rssi_p2p_dbm)]
        latency, energy = self._outcomes(net, ctx[0], ctx[1], np.stack([ctx[2], ctx[3]]),
                                         np.ones((1, self._n_noise, 1)))
        return RequestBlock(network=net[0], co_cpu_pct=ctx[0][0], co_mem_pct=ctx[1][0],
                            rssi_wifi_dbm=ctx[2][0], rssi_p2p_dbm=ctx[3][0],
                            latency_ms=latency[:, 0].T, energy_mj=energy[:, 0].T,
                            accuracy=self.accuracy_table[net[0]], energy_source=self.energy_source)

    def execute(self, block: RequestBlock, index: int, action: int):
        """Never needed: sim blocks carry every target's outcome."""
        raise NotImplementedError("sim blocks carry outcomes; the env reads them directly")

    def close(self) -> None:
        """Nothing to release."""

    # ---------------------------------------------------------------------------------------
    # Batched interface (next_block with one world; the native vector env with many)

    def reset_world(self, rng: np.random.Generator, state: SimState, world: int) -> None:
        """Start a new episode of world ``world`` of ``state``, drawing from ``rng``."""
        self.reset_worlds([rng], state, np.array([world]))

    def reset_worlds(self, rngs, state: SimState, worlds: np.ndarray) -> None:
        """:meth:`reset_world` for each of ``worlds`` with the generator in ``rngs`` at its
        position (only the static setting draws anything)."""
        if self.setting == "static":
            apps, wifi, p2p = self._static_choices
            for rng, world in zip(rngs, worlds.tolist()):
                u = rng.random(3)
                state.held[world, :2] = apps[min(int(u[0] * len(apps)), len(apps) - 1)]
                state.held[world, 2] = wifi[min(int(u[1] * len(wifi)), len(wifi) - 1)]
                state.held[world, 3] = p2p[min(int(u[2] * len(p2p)), len(p2p) - 1)]
        else:
            state.fresh[worlds] = True
            state.drop_left[worlds] = 0

    def draw_shape(self, n: int | None = None) -> tuple[int, int]:
        """Shape ``(K + P, n)`` of one world's raw words for a block of ``n`` requests."""
        return self._n_uniform + self._n_pairs, self.block_size if n is None else n

    def draw(self, rng: np.random.Generator, out: np.ndarray | None = None) -> np.ndarray:
        """One world's random words for its next block (module docstring), into ``out``."""
        raw = rng.bit_generator.random_raw(self.draw_shape())
        if out is None:
            return raw
        out[...] = raw
        return out

    def generate(self, raw: np.ndarray, state: SimState, worlds,
                 out: tuple[np.ndarray, np.ndarray] | None = None,
                 scratch: Scratch | None = None) -> tuple[np.ndarray, ...]:
        """Blocks of E worlds at once from their random words.

        Args:
            raw: the worlds' :meth:`draw` words stacked, (E, K + P, n) uint64.
            state: process state; rows ``worlds`` are read and advanced.
            worlds: index array or slice of ``state`` rows, in the order of ``raw``.
            out: optional ``(latency_ms, energy_mj)`` arrays of shape (n_targets, E, n) to fill.
            scratch: work arrays (one :class:`Scratch` per thread); default the backend's own.

        Returns:
            ``(network, co_cpu_pct, co_mem_pct, rssi_wifi_dbm, rssi_p2p_dbm, latency_ms,
            energy_mj)``; contexts are ``(E, n)``, outcomes target-major ``(n_targets, E, n)``.
        """
        ws = self._scratch if scratch is None else scratch
        E, _, n = raw.shape
        K, P, NN = self._n_uniform, self._n_pairs, self._n_noise
        u = np.right_shift(raw[:, :K], 11, out=ws("u_bits", (E, K, n), np.uint64))
        u = np.multiply(u, 2.0 ** -53, out=ws("uniform", (E, K, n)))
        z = _box_muller(raw[:, K:], ws)
        S = len(self._scenario_networks)
        pick = np.multiply(u[:, _U_NETWORK], S, out=ws("pick", (E, n))).astype(np.int64)
        net = self._scenario_networks.take(np.minimum(pick, S - 1, out=pick))
        if self.setting == "static":
            held = state.held[worlds]
            cpu, mem, wifi, p2p = (np.repeat(held[:, k:k + 1], n, axis=1) for k in range(4))
            rssi = np.stack([wifi, p2p])
        else:
            normal = ws("context_normal", (E, 4, n))
            normal[...] = z[:, NN:NN + 4]
            cpu, mem, rssi = self._dynamic_contexts(u, normal, state, worlds)
            wifi, p2p = rssi[0], rssi[1]
        # lognormal noise = exp(sigma * z) in float32, where numpy vectorises exp; one kernel
        # handles every element of every world (elementwise results do not depend on E).
        scaled = np.multiply(z[:, :NN], self._noise_sigma32,
                             out=ws("noise32", (E, NN, n), np.float32))
        np.exp(scaled, out=scaled)
        noise = ws("noise", (E, NN, n))
        noise[...] = scaled
        latency, energy = self._outcomes(net, cpu, mem, rssi, noise, out=out, scratch=ws)
        return net, cpu, mem, wifi, p2p, latency, energy

    # ---------------------------------------------------------------------------------------
    # The world model

    def _dynamic_contexts(self, u: np.ndarray, z: np.ndarray, state: SimState, worlds):
        """Co-running apps (E, n) and both links' signal (2, E, n); advances ``state``.

        ``u`` (E, 11, n) and ``z`` (E, 4, n) are the draws (module docstring).
        """
        d = self.dynamic
        n = u.shape[-1]
        fresh = state.fresh[worlds]

        # Apps switch after geometric holding times (a Bernoulli switch per request).
        switch = u[:, _U_APP_SWITCH] < 1.0 / d.app_mean_requests
        switch[:, 0] |= fresh
        A = len(self._app_cpu)
        choice = (u[:, _U_APP] * A).astype(np.int64)
        np.minimum(choice, A - 1, out=choice)
        app = _hold(choice, switch, state.app[worlds])
        state.app[worlds] = app[:, -1]
        mean_cpu = self._app_cpu.take(app)
        busy = mean_cpu > 0  # an empty background stays at exactly 0 %
        cpu = _jitter(mean_cpu, d.app_cpu_jitter_pct, z[:, 0], busy)
        mem = _jitter(self._app_mem.take(app), d.app_mem_jitter_pct, z[:, 1], busy)

        # Signal (2, E, n): piecewise-constant means (the user moves), fading, deep drops.
        switch = u[:, _U_SEG_SWITCH].transpose(1, 0, 2) < 1.0 / d.rssi_segment_mean_requests
        switch[:, :, 0] |= fresh
        candidate = self._rssi_span * u[:, _U_SEG_MEAN].transpose(1, 0, 2)
        candidate += self._rssi_low
        mean = _hold(candidate, switch, state.rssi_mean[worlds].T)
        state.rssi_mean[worlds] = mean[:, :, -1].T
        rssi = np.multiply(z[:, 2:4].transpose(1, 0, 2), d.rssi_fading_sigma_db)
        rssi += mean
        starts = u[:, _U_DROP_START].transpose(1, 0, 2) < d.rssi_drop_probability
        ends = np.zeros(starts.shape, dtype=np.int64)
        at = np.nonzero(starts)
        if len(at[0]):
            lengths = u[:, _U_DROP_LEN].transpose(1, 0, 2)[at]
            below = np.searchsorted(self._drop_thresholds, lengths, side="right")
            ends[at] = at[2] + (1 + MAX_DROP_REQUESTS) - below
        reach = np.maximum.accumulate(ends, axis=-1)
        np.maximum(reach, state.drop_left[worlds].T[:, :, None], out=reach)
        state.drop_left[worlds] = np.maximum(reach[:, :, -1] - n, 0).T
        rssi -= d.rssi_drop_depth_db * (reach >= _positions(n))  # x - 0.0 == x, as a where()
        state.fresh[worlds] = False
        return cpu, mem, rssi

    def _outcomes(self, network, cpu, mem, rssi, noise,
                  out: tuple[np.ndarray, np.ndarray] | None = None,
                  scratch: Scratch | None = None):
        """(latency_ms, energy_mj), each target-major (n_targets, E, n).

        ``network``, ``cpu``, ``mem``: (E, n); ``rssi``: (2, E, n) (Wi-Fi, Wi-Fi Direct);
        ``noise``: (E, n_local + n_remote + 2, n) multiplicative noise rows (module docstring).
        Every temporary is a scratch array (``out=`` throughout), so a pass over many worlds
        allocates nothing big.
        """
        ws = self._scratch if scratch is None else scratch
        S = network.shape
        L, R = self._n_local, self._n_remote
        if out is None or self._column_order is not None:
            latency = np.empty((L + R,) + S)
            energy = np.empty_like(latency)
        else:
            latency, energy = out

        # Local targets: power.local_run in the factored form of power.py
        cpu_frac = np.divide(cpu, 100.0, out=ws("cpu_frac", S))
        mem_frac = np.divide(mem, 100.0, out=ws("mem_frac", S))
        c = self._local_coef.take(network, axis=-1, out=ws("local_coef", (5, L) + S), mode="clip")
        busy = np.multiply(c[1], mem_frac, out=ws("busy", (L,) + S))
        busy += 1.0
        busy *= c[0]
        busy *= _pick(noise, 0, self._local_noise_col, network, ws, "local")
        f = np.multiply(c[2], cpu_frac, out=ws("f", (L,) + S))
        f += 1.0
        np.multiply(busy, f, out=latency[:L])
        np.multiply(c[4], cpu_frac, out=f)
        f += c[3]
        np.multiply(busy, f, out=energy[:L])

        # Links: radio.offload from the link tables, per link (2, E, n) ...
        k = ws("interval", (2,) + S, np.int64)
        for link, rows in enumerate(self._link_rows):
            rows(rssi[link], out=k[link])
        tab = self._link_table.take(k, axis=-1, out=ws("link_table", (4, 2) + S), mode="clip")
        goodput_noise = noise[:, L + R:].transpose(1, 0, 2)
        rate = np.multiply(tab[0], goodput_noise, out=ws("rate", (2,) + S))
        disconnected = np.less_equal(rate, 0.0, out=ws("disconnected", (2,) + S, bool))
        rate += disconnected  # 0 -> 1 kbit/ms where disconnected (results unused there)
        up_ms = np.divide(self._up_kbit.take(network), rate, out=ws("up_ms", (2,) + S))
        down_ms = np.divide(self._down_kbit.take(network), rate, out=ws("down_ms", (2,) + S))
        before_server = np.add(up_ms, tab[1], out=ws("before_server", (2,) + S))
        radio_mj = np.multiply(tab[2], up_ms, out=ws("radio_mj", (2,) + S))
        radio_mj += np.multiply(tab[3], down_ms, out=up_ms)
        timeout_mj = np.add(tab[2], self.phone.base_power_w, out=ws("timeout_mj", (2,) + S))
        timeout_mj *= self._timeout_ms[:, None, None]

        # ... then the remote targets (n_remote, E, n)
        link = self._remote_link
        per_remote = ws("per_remote", (R,) + S)
        lat = latency[L:]
        np.multiply(self._remote_server_ms.take(network, axis=-1, out=per_remote, mode="clip"),
                    _pick(noise, L, self._remote_noise_col, network, ws, "remote"), out=lat)
        lat += before_server.take(link, axis=0, out=per_remote, mode="clip")
        lat += down_ms.take(link, axis=0, out=per_remote, mode="clip")
        e = energy[L:]
        np.multiply(lat, self.phone.base_power_w, out=e)
        e += radio_mj.take(link, axis=0, out=per_remote, mode="clip")
        e += self._remote_tail_mj[:, None, None]
        if disconnected.any():  # rare: a link below its disconnection threshold
            down = disconnected.take(link, axis=0, out=ws("down", (R,) + S, bool), mode="clip")
            np.copyto(lat, self._remote_timeout_ms[:, None, None], where=down)
            np.copyto(e, timeout_mj.take(link, axis=0, out=per_remote, mode="clip"), where=down)

        if self._column_order is not None:
            latency, energy = latency[self._column_order], energy[self._column_order]
            if out is not None:
                out[0][...], out[1][...] = latency, energy
                latency, energy = out
        return latency, energy



def _pick(noise: np.ndarray, first_row: int, rows: np.ndarray, network: np.ndarray,
          scratch: Scratch, group: str) -> np.ndarray:
    """Per target and request, the noise row its unit uses (a fallback shares its unit's row):
    ``out[j, e, i] = noise[e, first_row + rows[j, network[e, i]], i]``, as one flat take."""
    E, M, n = noise.shape
    index = rows.take(network, axis=-1, mode="clip",
                      out=scratch(group + ".row", rows.shape[:1] + network.shape, np.int64))
    index += first_row
    index *= n
    index += _cached(("cells", E, M, n), lambda: (np.arange(E)[:, None] * (M * n) + np.arange(n)))
    return noise.reshape(-1).take(index, out=scratch(group + ".noise", index.shape), mode="clip")


def _jitter(mean: np.ndarray, sigma: float, z: np.ndarray, busy: np.ndarray) -> np.ndarray:
    """``mean + sigma * z`` clipped to [1, 100] where ``busy``, exactly 0.0 elsewhere."""
    x = np.multiply(z, sigma)
    x += mean
    np.maximum(x, 1.0, out=x)
    np.minimum(x, 100.0, out=x)
    x *= busy
    return x


def _box_muller(words: np.ndarray, scratch: Scratch) -> np.ndarray:
    """(E, P, n) uint64 words -> (E, 2P, n) float32 standard normals (module docstring)."""
    E, P, n = words.shape
    bits = scratch("bm.bits", words.shape, np.uint64)
    radius = scratch("bm.radius", words.shape, np.float32)
    angle = scratch("bm.angle", words.shape, np.float32)
    z = scratch("bm.z", (E, 2 * P, n), np.float32)
    np.right_shift(words, 40, out=bits)
    radius[...] = bits  # 24 bits: exact in float32
    radius += np.float32(0.5)
    radius *= np.float32(2.0 ** -24)  # a in (0, 1)
    np.log(radius, out=radius)
    radius *= np.float32(-2.0)
    np.sqrt(radius, out=radius)
    np.bitwise_and(words, 0xFFFFFF, out=bits)
    angle[...] = bits
    angle *= np.float32(2.0 * np.pi * 2.0 ** -24)
    np.cos(angle, out=z[:, :P])
    np.sin(angle, out=z[:, P:])
    z[:, :P] *= radius
    z[:, P:] *= radius
    return z


_CACHE: dict[tuple, np.ndarray] = {}


def _cached(key: tuple, make) -> np.ndarray:
    """A read-only array built once per ``key`` (blocks come in few shapes)."""
    out = _CACHE.get(key)
    if out is None:
        out = make()
        out.flags.writeable = False
        if len(_CACHE) < 256:
            _CACHE[key] = out
    return out


def _positions(n: int) -> np.ndarray:
    """``np.arange(1, n + 1)`` (cached)."""
    return _cached(("positions", n), lambda: np.arange(1, n + 1))


def _hold(values: np.ndarray, switch: np.ndarray, carried: np.ndarray) -> np.ndarray:
    """Piecewise-constant process along the last axis: position ``k`` holds ``values`` at the last
    ``switch`` at or before ``k``, or ``carried`` (one per row) before the row's first switch."""
    shape = values.shape
    n = shape[-1]
    ext = np.empty(shape[:-1] + (n + 1,), dtype=values.dtype)
    ext[..., 0] = carried
    ext[..., 1:] = values
    last = switch * _positions(n)
    np.maximum.accumulate(last, axis=-1, out=last)
    rows = math.prod(shape[:-1])
    last += _cached(("rows", ext.shape), lambda: np.arange(0, rows * (n + 1), n + 1).reshape(
        shape[:-1] + (1,)))
    return ext.reshape(-1).take(last)
