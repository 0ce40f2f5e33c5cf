"""The simulated world: calibrated device profiles, a utilisation-based power model, a
signal-strength network model and stochastic runtime variance.

This module owns the *processes* (which request comes next, under which co-running load and
signal); what a request costs on each target is :class:`autoscale_env.world.rules.OutcomeModel`, the one
implementation of the outcome rules. Requests are generated in blocks with vectorised numpy, with
every target's outcome (so the oracle is known). The world does not react to actions, which is
what makes computing a block ahead legal.

Seeds (the contract; ``tests/backends/test_sim_batched.py`` checks it):

* ``reset(rng)`` draws from the env's generator only: static setting ``u = rng.random(3)`` (the
  episode's co-running app, Wi-Fi RSSI and Wi-Fi Direct RSSI, each index ``floor(u * len(choices))``
  into ``settings.toml``'s lists), then, in both settings, the episode key
  ``rng.bit_generator.random_raw(2)``. So every episode consumes the same few words of the env's
  generator, however many requests the previous episode used.
* The key is the 128-bit state of the episode's own PCG64 stream (fixed increment: all episodes
  are positions on one 2**128 cycle, far apart). Every request's randomness comes from that
  stream, **request by request**: request ``i`` of the episode uses words ``i*W .. i*W+W-1``.
  Hence a seed's trajectory does not depend on ``block_size`` nor on how many worlds are computed
  together; blocks only say how many requests are computed at once. Every request gets fresh
  words (nothing is reused across requests, episodes or sub-envs).

The ``W = K + P`` words of one request, in order:

    1. ``K`` uniforms ``u = (w >> 11) * 2**-53`` (exactly what ``rng.random()`` makes of a word),
       ``K = 1`` (static) or ``11`` (dynamic). Word 0: the network, index
       ``floor(u * len(scenario.networks))``. Dynamic only: word 1 app switch (a request starts a
       new co-running-app segment when ``u < 1 / app_mean_requests``, so segments last a
       geometric number of requests), word 2 the new segment's app (index as above), words 3-4
       signal segment switch of Wi-Fi / Wi-Fi Direct (``u < 1 / rssi_segment_mean_requests``),
       words 5-6 their new segment's mean RSSI (``low + (high - low) * u`` over the setting's
       range), words 7-8 a deep drop starts (``u < rssi_drop_probability``), words 9-10 its length
       (geometric with mean ``rssi_drop_mean_requests``, by inversion against a table of
       ``(1 - p) ** m``, ``m <= 1024``). Drops overlap by union and carry over between blocks.
    2. ``P`` words of standard normals by the Box-Muller transform in float32, two per word:
       ``a = ((w >> 40) + 0.5) * 2**-24``, ``b = (w & (2**24 - 1)) * 2**-24``,
       ``z[j] = sqrt(-2 ln a) * cos(2 pi b)`` and ``z[P + j] = sqrt(-2 ln a) * sin(2 pi b)`` for
       normal word ``j`` (24 bits are plenty for noise). ``P = ceil(M / 2)``; normals ``0 ..
       n_noise-1`` are the noise rows of :meth:`autoscale_env.world.rules.OutcomeModel.outcomes` as
       ``exp(sigma * z)`` in float32 (lognormal, median 1; ``local_latency_sigma`` for local
       targets, ``server_latency_sigma`` for remote ones, ``goodput_sigma`` for the two links).
       Dynamic only, 4 more: co-running CPU jitter, memory jitter, Wi-Fi fading, Wi-Fi Direct
       fading (times their sigmas). ``M = n_noise`` or ``n_noise + 4``; an odd last normal is
       unused.

Everything after the draws is elementwise arithmetic, table look-ups and running maxima along the
request axis, written for E worlds at once on row-major ``(rows, E, n)`` arrays. The native vector
env (:mod:`autoscale_env.vector`) draws each sub-env's words from its own episode stream and
computes a chunk of sub-envs in one pass with the same code, which is why its sub-envs equal
single envs bit for bit.
"""

from __future__ import annotations

import math

import numpy as np

from autoscale_env.world.types import MAX_EPISODE_STEPS

from autoscale_env.world import config
from autoscale_env.world.types import RequestBlock, Target, Workload
from autoscale_env.world.rules import OutcomeModel, Scratch, reference_energy_mj

#: Requests computed per block: the reset observation plus ``MAX_EPISODE_STEPS`` steps, so that an
#: episode under ``gym.make``'s default ``TimeLimit`` is computed in one pass. Performance only: a
#: seed's trajectory does not depend on it.
DEFAULT_BLOCK_SIZE = MAX_EPISODE_STEPS + 1

#: Longest deep signal drop the inversion table can produce (requests).
MAX_DROP_REQUESTS = 1024

#: Increment of every episode stream (PCG64's default one; any odd 128-bit number would do).
_EPISODE_INC = np.random.PCG64(0).state["state"]["inc"]

# Uniform words of a request (dynamic setting); see the module docstring.
_U_NETWORK, _U_APP_SWITCH, _U_APP = 0, 1, 2
_U_SEG_SWITCH, _U_SEG_MEAN, _U_DROP_START, _U_DROP_LEN = slice(3, 5), slice(5, 7), slice(7, 9), slice(9, 11)


class SimState:
    """Process state of ``n_worlds`` simulated worlds between blocks (one row per world).

    Attributes:
        streams: each world's episode stream (a PCG64 keyed at reset).
        held: static: (co_cpu_pct, co_mem_pct, rssi_wifi_dbm, rssi_p2p_dbm) of the episode.
        fresh: dynamic: the next request is the episode's first (starts new segments).
        app: dynamic: index of the current co-running app segment's app.
        rssi_mean: dynamic: current segment mean RSSI of (Wi-Fi, Wi-Fi Direct), dBm.
        drop_left: dynamic: requests still inside a deep drop begun in an earlier block, per link.
    """

    __slots__ = ("app", "drop_left", "fresh", "held", "rssi_mean", "streams")

    def __init__(self, n_worlds: int):
        self.streams = [np.random.PCG64(0) for _ in range(n_worlds)]
        self.held = np.zeros((n_worlds, 4))
        self.fresh = np.ones(n_worlds, dtype=bool)
        self.app = np.zeros(n_worlds, dtype=np.int64)
        self.rssi_mean = np.zeros((n_worlds, 2))
        self.drop_left = np.zeros((n_worlds, 2), dtype=np.int64)


class SimBackend:
    """Analytical world model for one phone in one scenario and setting.

    Args:
        device: bundled phone name (``mi8pro``, ``galaxy_s10e``, ``moto_x_force``), a profile path,
            or an already loaded :class:`~autoscale_env.world.config.DeviceProfile` (e.g. a perturbed
            copy for a sensitivity analysis).
        scenario: ``non_streaming``, ``streaming`` or ``translation``.
        setting: ``static`` (conditions drawn per episode, then held) or ``dynamic``.
        block_size: requests computed per block (performance only, see the module docstring).
        edge, cloud, links, workloads: already loaded remote profiles, link models and catalog,
            passed on to :class:`~autoscale_env.world.rules.OutcomeModel` (default: the bundled data).
        settings: an already loaded ``(apps, static, dynamic)`` as
            :func:`~autoscale_env.world.config.load_settings` returns it (default: the bundled data).
            These, a loaded ``device`` and a loaded :class:`~autoscale_env.world.config.Scenario` let a
            caller build a world with some numbers changed (``autoscale sensitivity``) through
            the constructor alone.
    """

    deterministic = True
    energy_source = "model"

    def __init__(self, device: str | config.DeviceProfile = "mi8pro",
                 scenario: str | config.Scenario = "non_streaming", setting: str = "dynamic",
                 block_size: int = DEFAULT_BLOCK_SIZE, *,
                 edge: str | config.DeviceProfile | None = None,
                 cloud: str | config.DeviceProfile | None = None,
                 links: dict[str, config.LinkModel] | None = None,
                 workloads: tuple[Workload, ...] | None = None,
                 settings: tuple | None = None):
        self.setting = config.check_setting(setting)
        self.block_size = int(block_size)
        if self.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.model = OutcomeModel(device, scenario, edge=edge, cloud=cloud, links=links,
                                  workloads=workloads)
        self.phone = self.model.phone
        self.scenario = self.model.scenario
        self.device_name = self.phone.name
        self.workloads: tuple[Workload, ...] = self.model.workloads
        self.targets: tuple[Target, ...] = self.model.targets
        #: (n_workloads, n_targets) accuracy of each network on each target
        self.accuracy_table = self.model.accuracy
        self.reference_energy_mj = reference_energy_mj(self.phone, self.workloads)
        self.apps, self.static, self.dynamic = (
            settings if settings is not None else config.load_settings())
        names = [w.name for w in self.workloads]
        self._scenario_networks = np.array(
            [names.index(n) for n in self.scenario.networks], dtype=np.int64)
        self._setup_processes()
        self._state = SimState(1)
        self._started = False
        self._scratch = Scratch()

    def _setup_processes(self) -> None:
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
        L, R = self.model.n_local, self.model.n_remote
        self._n_noise = self.model.n_noise
        self._n_normal = self._n_noise + (0 if self.setting == "static" else 4)
        self._n_pairs = (self._n_normal + 1) // 2  # Box-Muller: two normals per word
        #: sigma of each noise row: local targets, remote targets, then the two links' goodput
        self._noise_sigma32 = np.array(
            [sig.local_latency_sigma] * L + [sig.server_latency_sigma] * R
            + [sig.goodput_sigma] * 2, dtype=np.float32)[:, None, None]

    # ---------------------------------------------------------------------------------------
    # Backend protocol

    def reset(self, rng: np.random.Generator) -> None:
        """Start an episode: static draws its held conditions, dynamic restarts its processes."""
        self.reset_world(rng, self._state, 0)
        self._started = True

    def next_block(self) -> RequestBlock:
        """Generate the next ``block_size`` requests with every target's outcome."""
        if not self._started:
            raise RuntimeError("SimBackend.next_block() called before reset()")
        net, cpu, mem, wifi, p2p, latency, energy = self.generate(
            self.draw(self._state, 0)[None], self._state, slice(0, 1))
        return RequestBlock(  # outcome matrices are (n, n_targets) views of target-major arrays
            network=net[0], co_cpu_pct=cpu[0], co_mem_pct=mem[0], rssi_wifi_dbm=wifi[0],
            rssi_p2p_dbm=p2p[0], latency_ms=latency[:, 0].T, energy_mj=energy[:, 0].T,
            accuracy=self.accuracy_table[net[0]], energy_source=self.energy_source,
        )

    def provenance(self) -> dict[str, str]:
        """Which model produced the numbers (written into trace headers)."""
        return {"model": "autoscale_env.world.rules.OutcomeModel",
                "streams": "one PCG64 stream per episode, request-major words"}

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
        latency, energy = self.model.outcomes(net, *ctx)
        return RequestBlock(network=net, co_cpu_pct=ctx[0], co_mem_pct=ctx[1],
                            rssi_wifi_dbm=ctx[2], rssi_p2p_dbm=ctx[3], latency_ms=latency.T,
                            energy_mj=energy.T, accuracy=self.accuracy_table[net],
                            energy_source=self.energy_source)

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
        position: the static conditions (static setting), then the episode key."""
        static = self.setting == "static"
        if static:
            apps, wifi, p2p = self._static_choices
        else:
            state.fresh[worlds] = True
            state.drop_left[worlds] = 0
        streams = state.streams
        for rng, world in zip(rngs, worlds.tolist()):
            if static:
                u = rng.random(3)
                state.held[world, :2] = apps[min(int(u[0] * len(apps)), len(apps) - 1)]
                state.held[world, 2] = wifi[min(int(u[1] * len(wifi)), len(wifi) - 1)]
                state.held[world, 3] = p2p[min(int(u[2] * len(p2p)), len(p2p) - 1)]
            hi, lo = rng.bit_generator.random_raw(2).tolist()
            streams[world].state = {"bit_generator": "PCG64",
                                    "state": {"state": (hi << 64) | lo, "inc": _EPISODE_INC},
                                    "has_uint32": 0, "uinteger": 0}

    @property
    def words_per_request(self) -> int:
        """``W = K + P``: random 64-bit words each request consumes (module docstring)."""
        return self._n_uniform + self._n_pairs

    def draw(self, state: SimState, world: int, out: np.ndarray | None = None,
             n: int | None = None) -> np.ndarray:
        """The next ``n`` (default ``block_size``) requests' words of world ``world`` from its
        episode stream: ``(n, W)`` uint64, request-major (into ``out`` when given)."""
        n = self.block_size if n is None else n
        raw = state.streams[world].random_raw((n, self.words_per_request))
        if out is None:
            return raw
        out[...] = raw
        return out

    def generate(self, raw: np.ndarray, state: SimState, worlds,
                 out: tuple[np.ndarray, np.ndarray] | None = None,
                 scratch: Scratch | None = None) -> tuple[np.ndarray, ...]:
        """Blocks of E worlds at once from their random words.

        Args:
            raw: the worlds' :meth:`draw` words stacked, (E, n, W) uint64.
            state: process state; rows ``worlds`` are read and advanced.
            worlds: index array or slice of ``state`` rows, in the order of ``raw``.
            out: optional ``(latency_ms, energy_mj)`` arrays of shape (n_targets, E, n) to fill.
            scratch: work arrays (one :class:`~autoscale_env.world.rules.Scratch` per thread); default
                the backend's own.

        Returns:
            ``(network, co_cpu_pct, co_mem_pct, rssi_wifi_dbm, rssi_p2p_dbm, latency_ms,
            energy_mj)``; contexts are ``(E, n)``, outcomes target-major ``(n_targets, E, n)``.
            They may be scratch arrays, valid until the next call with the same scratch.
        """
        ws = self._scratch if scratch is None else scratch
        E, n, W = raw.shape
        K, NN = self._n_uniform, self._n_noise
        words = ws("words", (W, E, n), np.uint64)
        words[...] = raw.transpose(2, 0, 1)  # word-major: every row below is contiguous
        u = np.right_shift(words[:K], 11, out=ws("u_bits", (K, E, n), np.uint64))
        u = np.multiply(u, 2.0 ** -53, out=ws("uniform", (K, E, n)))
        z = _box_muller(words[K:], ws)
        S = len(self._scenario_networks)
        pick = np.multiply(u[_U_NETWORK], S, out=ws("pick", (E, n))).astype(np.int64)
        net = self._scenario_networks.take(np.minimum(pick, S - 1, out=pick))
        if self.setting == "static":
            held = state.held[worlds]
            cpu, mem, wifi, p2p = (np.repeat(held[:, k:k + 1], n, axis=1) for k in range(4))
        else:
            cpu, mem, rssi = self._dynamic_contexts(u, z[NN:NN + 4], state, worlds)
            wifi, p2p = rssi[0], rssi[1]
        # lognormal noise = exp(sigma * z) in float32, where numpy vectorises exp
        scaled = np.multiply(z[:NN], self._noise_sigma32, out=ws("noise32", (NN, E, n), np.float32))
        np.exp(scaled, out=scaled)
        noise = ws("noise", (NN, E, n))
        noise[...] = scaled
        latency, energy = self.model.outcomes(net, cpu, mem, wifi, p2p, noise, out=out, scratch=ws)
        return net, cpu, mem, wifi, p2p, latency, energy

    # ---------------------------------------------------------------------------------------
    # The processes

    def _dynamic_contexts(self, u: np.ndarray, z: np.ndarray, state: SimState, worlds):
        """Co-running apps (E, n) and both links' signal (2, E, n); advances ``state``.

        ``u`` (11, E, n) and ``z`` (4, E, n) are the draws (module docstring).
        """
        d = self.dynamic
        n = u.shape[-1]
        fresh = state.fresh[worlds]

        # Apps switch after geometric holding times (a Bernoulli switch per request).
        switch = u[_U_APP_SWITCH] < 1.0 / d.app_mean_requests
        switch[:, 0] |= fresh
        A = len(self._app_cpu)
        choice = (u[_U_APP] * A).astype(np.int64)
        np.minimum(choice, A - 1, out=choice)
        app = _hold(choice, switch, state.app[worlds])
        state.app[worlds] = app[:, -1]
        mean_cpu = self._app_cpu.take(app)
        busy = mean_cpu > 0  # an empty background stays at exactly 0 %
        cpu = _jitter(mean_cpu, d.app_cpu_jitter_pct, z[0], busy)
        mem = _jitter(self._app_mem.take(app), d.app_mem_jitter_pct, z[1], busy)

        # Signal (2, E, n): piecewise-constant means (the user moves), fading, deep drops.
        switch = u[_U_SEG_SWITCH] < 1.0 / d.rssi_segment_mean_requests
        switch[:, :, 0] |= fresh
        candidate = self._rssi_span * u[_U_SEG_MEAN]
        candidate += self._rssi_low
        mean = _hold(candidate, switch, state.rssi_mean[worlds].T)
        state.rssi_mean[worlds] = mean[:, :, -1].T
        rssi = np.multiply(z[2:4], d.rssi_fading_sigma_db)
        rssi += mean
        starts = u[_U_DROP_START] < d.rssi_drop_probability
        ends = np.zeros(starts.shape, dtype=np.int64)
        at = np.nonzero(starts)
        if len(at[0]):
            lengths = u[_U_DROP_LEN][at]
            below = np.searchsorted(self._drop_thresholds, lengths, side="right")
            ends[at] = at[2] + (1 + MAX_DROP_REQUESTS) - below
        reach = np.maximum.accumulate(ends, axis=-1)
        np.maximum(reach, state.drop_left[worlds].T[:, :, None], out=reach)
        state.drop_left[worlds] = np.maximum(reach[:, :, -1] - n, 0).T
        rssi -= d.rssi_drop_depth_db * (reach >= _positions(n))  # x - 0.0 == x, as a where()
        state.fresh[worlds] = False
        return cpu, mem, rssi


def _jitter(mean: np.ndarray, sigma: float, z: np.ndarray, busy: np.ndarray) -> np.ndarray:
    """``mean + sigma * z`` clipped to [1, 100] where ``busy``, exactly 0.0 elsewhere."""
    x = np.multiply(z, sigma)
    x += mean
    np.maximum(x, 1.0, out=x)
    np.minimum(x, 100.0, out=x)
    x *= busy
    return x


def _box_muller(words: np.ndarray, scratch: Scratch) -> np.ndarray:
    """(P, ...) uint64 words -> (2P, ...) float32 standard normals (module docstring)."""
    P = words.shape[0]
    bits = scratch("bm.bits", words.shape, np.uint64)
    radius = scratch("bm.radius", words.shape, np.float32)
    angle = scratch("bm.angle", words.shape, np.float32)
    z = scratch("bm.z", (2 * P,) + words.shape[1:], np.float32)
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
    np.cos(angle, out=z[:P])
    np.sin(angle, out=z[P:])
    z[:P] *= radius
    z[P:] *= radius
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
