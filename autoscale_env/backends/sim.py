"""The simulated world: calibrated device profiles, a utilisation-based power model, a
signal-strength network model and stochastic runtime variance.

This module owns the *processes* (which request comes next, under which co-running load and
signal, with which runtime noise); what a request costs on each target is
:func:`autoscale_env.world.rules.request_outcomes`, the one implementation of the outcome rules.
:func:`simulate_request` makes one request; :func:`generate_loop` runs it over the requests of
many episodes (compiled, episodes in parallel). A request's sequential part (which app and signal
segments and drops it falls in, :func:`advance_processes`) is a few uniform draws; the rest is a
pure function of its key and index (:func:`request_context`, the noise, the outcomes), so one
episode's block can be split across threads too (:func:`segments_loop`, then
:func:`requests_loop` on request ranges). The world does not react to actions, which is what makes
computing a block of requests ahead legal (and the first blocks of coming episodes,
:class:`FirstBlocks`).

Randomness (the contract; ``tests/backends/test_sim_batched.py`` checks it)
--------------------------------------------------------------------------

Counter-based: **every random number is a pure function of (episode key, request index, draw
index)**, so a seed's trajectory is the same whatever the block size, the batch shape, the number
of sub-envs, the thread count or the order in which episodes are computed.

* ``reset(rng)`` takes one 64-bit word from the env's generator, ``rng.bit_generator.random_raw()``:
  the **episode key**. Every episode consumes exactly that much of the env's generator.
* Draw ``d`` of request ``i`` of the episode is the 64-bit word
  ``splitmix64(key + (i * DRAWS_PER_REQUEST + d + 1) * GOLDEN)``: SplitMix64 (Steele, Lea and
  Flood, OOPSLA 2014) read at counter ``i * 64 + d`` of the stream the key selects, with
  ``GOLDEN = 0x9E3779B97F4A7C15``. Words are never reused across requests or draws; two
  episodes' streams overlap only if their keys differ by a multiple of ``GOLDEN`` smaller than
  their counters (chance about ``2**-40`` per pair of episodes of a million requests).
* A **uniform** is ``(w >> 11) * 2**-53`` in [0, 1). A **standard normal** is the inverse normal
  CDF (Acklam's rational approximation, relative error below 1.2e-9) of
  ``p = ((w >> 11) + 0.5) * 2**-53``. A **lognormal** noise factor ``exp(sigma * z)`` of the same
  ``p`` is read from a table of ``NOISE_QUANTILES = 4096`` quantiles, linearly interpolated, for
  ``0.01 <= p <= 0.99`` (relative error below 1e-5; no transcendental function), and computed
  exactly in the tails.
* A choice among ``m`` items is ``min(floor(u * m), m - 1)``.

The draws of request ``i`` (slot ``d``):

====  ======================================================================================
0     the network, a choice among ``scenario.networks``
1-3   static setting, request 0 only: the episode's co-running app, Wi-Fi RSSI and Wi-Fi
      Direct RSSI (choices among ``settings.toml``'s lists), held for the episode
1, 2  dynamic: a new co-running-app segment starts when ``i == 0`` or ``u1 < 1 /
      app_mean_requests`` (segments last a geometric number of requests); its app is ``u2``'s
      choice
3, 4  dynamic, Wi-Fi / Wi-Fi Direct: a new signal segment starts when ``i == 0`` or
      ``u < 1 / rssi_segment_mean_requests``; 5, 6: its mean RSSI ``low + (high - low) * u``
7, 8  dynamic: a deep drop starts when ``u < rssi_drop_probability``; 9, 10: its length,
      geometric with mean ``rssi_drop_mean_requests`` by inversion, at most
      ``MAX_DROP_REQUESTS``. Drops overlap by union and carry over between blocks.
11-14 dynamic normals: co-running CPU jitter, memory jitter, Wi-Fi fading, Wi-Fi Direct fading
16+j  noise entry ``j`` (``OutcomeModel.outcomes``): lognormal ``exp(sigma * z)``, median 1;
      ``local_latency_sigma`` for local targets, ``server_latency_sigma`` for remote ones,
      ``goodput_sigma`` for the two links
====  ======================================================================================

The dynamic processes (app segments, signal segments, drops) advance sequentially within an
episode (their state, one row per episode in :class:`SimState`, carries over between blocks) and
in parallel across episodes.
"""

from __future__ import annotations

import functools
import math
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
from numba import config as numba_config
from numba import get_num_threads, njit

from autoscale_env.world import config
from autoscale_env.world.compiled import batch_loop
from autoscale_env.world.rules import OutcomeModel, PhoneWorld, reference_energy_mj, request_outcomes
from autoscale_env.world.types import MAX_EPISODE_STEPS, RequestBlock, Target, Workload

#: Requests computed per block: the reset observation plus ``MAX_EPISODE_STEPS`` steps, so that an
#: episode under ``gym.make``'s default ``TimeLimit`` is computed in one pass. Performance only: a
#: seed's trajectory does not depend on it.
DEFAULT_BLOCK_SIZE = MAX_EPISODE_STEPS + 1

#: Longest deep signal drop (requests).
MAX_DROP_REQUESTS = 1024

#: Counter stride between requests: draw slots per request (module docstring).
DRAWS_PER_REQUEST = 64
GOLDEN = np.uint64(0x9E3779B97F4A7C15)

# Draw slots (module docstring)
NETWORK = 0
STATIC_APP, STATIC_WIFI, STATIC_P2P = 1, 2, 3
APP_SWITCH, APP = 1, 2
SEGMENT_SWITCH, SEGMENT_MEAN, DROP_START, DROP_LENGTH = 3, 5, 7, 9  # + link (0 Wi-Fi, 1 Direct)
CPU_JITTER, MEM_JITTER, FADING = 11, 12, 13
NOISE = 16

if numba_config.DISABLE_JIT:  # plain Python: uint64 scalars wrap as intended, numpy warns
    warnings.filterwarnings("ignore", "overflow encountered in scalar", RuntimeWarning,
                            module=__name__)


# ----------------------------------------------------------------------------------------------
# Counter-based random numbers


@njit(cache=True, inline="always")
def random_word(key: np.uint64, request: int, draw: int) -> np.uint64:
    """Draw ``draw`` of request ``request`` of the episode keyed ``key``: a 64-bit word."""
    z = key + np.uint64(request * DRAWS_PER_REQUEST + draw + 1) * GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True, inline="always")
def uniform(key: np.uint64, request: int, draw: int) -> float:
    """A uniform in [0, 1)."""
    return float(random_word(key, request, draw) >> np.uint64(11)) * 2.0 ** -53


@njit(cache=True, inline="always")
def choice(u: float, m: int) -> int:
    """Index among ``m`` items of uniform ``u``."""
    return min(int(u * m), m - 1)


@njit(cache=True, inline="always")
def normal(key: np.uint64, request: int, draw: int) -> float:
    """A standard normal: the inverse CDF (:func:`inverse_normal_cdf`) of a uniform in (0, 1)."""
    return inverse_normal_cdf(_open_uniform(key, request, draw))


@njit(cache=True, inline="always")
def _open_uniform(key: np.uint64, request: int, draw: int) -> float:
    """A uniform in (0, 1): ``((w >> 11) + 0.5) * 2**-53``, except that the largest word, whose
    value rounds to exactly 1.0 (and would make the normal quantile NaN), gives the largest
    double below 1."""
    return min((float(random_word(key, request, draw) >> np.uint64(11)) + 0.5) * 2.0 ** -53,
               1.0 - 2.0 ** -53)


@njit(cache=True, inline="always")
def inverse_normal_cdf(p: float) -> float:
    """Acklam's rational approximation of the standard normal quantile (relative error below
    1.2e-9), for ``0 < p < 1``."""
    if 0.02425 <= p <= 1.0 - 0.02425:
        q = p - 0.5
        r = q * q
        return ((((((-3.969683028665376e+01 * r + 2.209460984245205e+02) * r
                    - 2.759285104469687e+02) * r + 1.383577518672690e+02) * r
                  - 3.066479806614716e+01) * r + 2.506628277459239e+00) * q
                / (((((-5.447609879822406e+01 * r + 1.615858368580409e+02) * r
                      - 1.556989798598866e+02) * r + 6.680131188771972e+01) * r
                    - 1.328068155288572e+01) * r + 1.0))
    q = math.sqrt(-2.0 * math.log(min(p, 1.0 - p)))
    tail = ((((((-7.784894002430293e-03 * q - 3.223964580411365e-01) * q
                - 2.400758277161838e+00) * q - 2.549732539343734e+00) * q
              + 4.374664141464968e+00) * q + 2.938163982698783e+00)
            / ((((7.784695709041462e-03 * q + 3.224671290700398e-01) * q
                 + 2.445134137142996e+00) * q + 3.754408661907416e+00) * q + 1.0))
    return tail if p < 0.5 else -tail


#: Quantiles of the lognormal noise tables (:func:`lognormal`).
NOISE_QUANTILES = 4096
#: Below this probability (and above one minus it) :func:`lognormal` uses the exact formula.
NOISE_EXACT_TAIL = 0.01


@functools.lru_cache(maxsize=256)
def lognormal_table(sigma: float) -> np.ndarray:
    """``exp(sigma * z(m / NOISE_QUANTILES))`` for ``m = 0 .. NOISE_QUANTILES`` (the end points,
    never read, hold the neighbouring values). Read-only and cached per ``sigma``: every env of a
    sweep would otherwise rebuild the same few tables (tens of ms per env)."""
    m = np.arange(NOISE_QUANTILES + 1) / NOISE_QUANTILES
    m[0], m[-1] = m[1], m[-2]
    table = np.exp(sigma * np.array([inverse_normal_cdf(float(p)) for p in m]))
    table.flags.writeable = False
    return table


@njit(cache=True, inline="always")
def lognormal(key: np.uint64, request: int, draw: int, sigma: float, tables: np.ndarray,
              row: int) -> float:
    """``exp(sigma * z)`` for the standard normal ``z`` of the draw, median 1: linear
    interpolation in row ``row`` of ``tables`` (that row: :func:`lognormal_table` of ``sigma``)
    between the ``NOISE_QUANTILES`` quantiles, the exact formula in the tails
    (``NOISE_EXACT_TAIL``). The table is read in two dimensions: a row view would cost a
    reference count per draw."""
    p = _open_uniform(key, request, draw)
    if NOISE_EXACT_TAIL <= p <= 1.0 - NOISE_EXACT_TAIL:
        x = p * NOISE_QUANTILES
        m = int(x)
        return tables[row, m] + (x - m) * (tables[row, m + 1] - tables[row, m])
    return math.exp(sigma * inverse_normal_cdf(p))


# ----------------------------------------------------------------------------------------------
# The processes, per request


class Processes(NamedTuple):
    """The numbers of a scenario and setting (``scenarios.toml``, ``settings.toml``) as the
    compiled processes take them: floats, and arrays for every list a request indexes at run
    time (the batch loops count no references, so an array read is one load; a run-time index
    into a tuple compiles to a branch per element, about 9 ns when the index is random)."""

    static: bool
    networks: np.ndarray          # workload index of each of the scenario's networks
    static_cpu: np.ndarray        # static setting: each app's CPU use (%)
    static_mem: np.ndarray
    static_wifi_dbm: np.ndarray   # static setting: Wi-Fi RSSI choices
    static_p2p_dbm: np.ndarray    # static setting: Wi-Fi Direct RSSI choices
    app_cpu: np.ndarray           # dynamic setting: each app's mean CPU use (%)
    app_mem: np.ndarray
    app_switch_p: float
    cpu_jitter_pct: float
    mem_jitter_pct: float
    rssi_low: tuple               # (Wi-Fi, Wi-Fi Direct) segment means range (dBm)
    rssi_span: tuple
    segment_switch_p: float
    fading_sigma_db: float
    drop_p: float
    drop_stay_p: float            # 1 - 1 / mean drop length
    drop_depth_db: float
    noise_sigma: np.ndarray       # (n_targets + 2,) sigma of each noise entry
    noise_table: np.ndarray       # (sigmas, NOISE_QUANTILES + 1): lognormal_table of each sigma
    noise_class: np.ndarray       # (n_targets + 2,) row of noise_table of each noise entry


@njit(cache=True, inline="always")
def _app_load(mean_pct: float, jitter_pct: float, z: float, busy: bool) -> float:
    """A running app's load (%): its mean plus jitter, in [1, 100]; exactly 0 without one."""
    if not busy:
        return 0.0
    return min(max(mean_pct + jitter_pct * z, 1.0), 100.0)


@njit(cache=True, inline="always")
def _drop_length(stay_p: float, u: float) -> int:
    """Geometric length (>= 1, mean ``1 / (1 - stay_p)``) by inversion of ``1 - u``."""
    if stay_p <= 0.0:
        return 1
    extra = math.floor(math.log(1.0 - u) / math.log(stay_p))
    return int(min(1.0 + extra, MAX_DROP_REQUESTS))


@njit(cache=True, inline="always")
def _advance_signal(proc: Processes, key, i: int, link: int, mean_dbm, drop_left):
    """``link``'s segment mean at request ``i`` and whether a deep drop covers it; advances the
    link's state (new segment, new drop, one request of the drop used)."""
    if i == 0 or uniform(key, i, SEGMENT_SWITCH + link) < proc.segment_switch_p:
        mean_dbm[link] = proc.rssi_low[link] + proc.rssi_span[link] * uniform(
            key, i, SEGMENT_MEAN + link)
    if uniform(key, i, DROP_START + link) < proc.drop_p:
        length = _drop_length(proc.drop_stay_p, uniform(key, i, DROP_LENGTH + link))
        drop_left[link] = max(drop_left[link], length)
    dropped = drop_left[link] > 0
    if dropped:
        drop_left[link] -= 1
    return mean_dbm[link], dropped


@njit(cache=True, inline="always")
def _signal(proc: Processes, key, i: int, link: int, mean_dbm: float, dropped: bool) -> float:
    """RSSI of ``link`` at request ``i``: its segment mean, fading, and the drop's depth."""
    rssi = mean_dbm + proc.fading_sigma_db * normal(key, i, FADING + link)
    if dropped:
        rssi -= proc.drop_depth_db
    return rssi


#: :func:`advance_processes`'s packed state: ``app * SEGMENT_APP + WIFI_DROP + P2P_DROP``.
WIFI_DROP, P2P_DROP, SEGMENT_APP = 1, 2, 4


@njit(cache=True, inline="always")
def advance_processes(proc: Processes, key, i: int, app, mean_dbm, drop_left):
    """The sequential part of request ``i`` (dynamic setting): which app segment and which
    signal segments and drops it falls in, as ``(segment, wifi_mean_dbm, p2p_mean_dbm)`` with
    ``segment`` packed as ``app * SEGMENT_APP`` plus ``WIFI_DROP`` and ``P2P_DROP`` when a drop
    covers that link. Advances the episode's state: requests of an episode must come in order.
    Everything else about a request is a pure function of its key and index
    (:func:`request_context`). The static setting has no state: ``(0, 0.0, 0.0)``."""
    if proc.static:
        return 0, 0.0, 0.0
    if i == 0 or uniform(key, i, APP_SWITCH) < proc.app_switch_p:
        app[0] = choice(uniform(key, i, APP), len(proc.app_cpu))
    wifi_mean, wifi_drop = _advance_signal(proc, key, i, 0, mean_dbm, drop_left)
    p2p_mean, p2p_drop = _advance_signal(proc, key, i, 1, mean_dbm, drop_left)
    segment = app[0] * SEGMENT_APP
    if wifi_drop:
        segment += WIFI_DROP
    if p2p_drop:
        segment += P2P_DROP
    return segment, wifi_mean, p2p_mean


@njit(cache=True, inline="always")
def request_context(proc: Processes, key, i: int, segment: int, wifi_mean_dbm: float,
                    p2p_mean_dbm: float):
    """Request ``i``'s network and context ``(network, cpu, mem, wifi, p2p)`` from its
    segments (:func:`advance_processes`): a pure function, so requests can be computed in any
    order once their segments are known."""
    network = proc.networks[choice(uniform(key, i, NETWORK), len(proc.networks))]
    if proc.static:
        held = choice(uniform(key, 0, STATIC_APP), len(proc.static_cpu))
        cpu, mem = proc.static_cpu[held], proc.static_mem[held]
        wifi = proc.static_wifi_dbm[choice(uniform(key, 0, STATIC_WIFI), len(proc.static_wifi_dbm))]
        p2p = proc.static_p2p_dbm[choice(uniform(key, 0, STATIC_P2P), len(proc.static_p2p_dbm))]
    else:
        app = segment // SEGMENT_APP
        busy = proc.app_cpu[app] > 0  # an empty background stays at exactly 0 %
        cpu = _app_load(proc.app_cpu[app], proc.cpu_jitter_pct, normal(key, i, CPU_JITTER), busy)
        mem = _app_load(proc.app_mem[app], proc.mem_jitter_pct, normal(key, i, MEM_JITTER), busy)
        wifi = _signal(proc, key, i, 0, wifi_mean_dbm, (segment & WIFI_DROP) != 0)
        p2p = _signal(proc, key, i, 1, p2p_mean_dbm, (segment & P2P_DROP) != 0)
    return network, cpu, mem, wifi, p2p


@njit(cache=True, inline="always")
def request_noise(proc: Processes, key, i: int, noise) -> None:
    """Request ``i``'s lognormal noise factors, into ``noise`` (n_targets + 2,)."""
    tables = proc.noise_table
    for j in range(len(noise)):
        noise[j] = lognormal(key, i, NOISE + j, proc.noise_sigma[j], tables, proc.noise_class[j])


@njit(cache=True, inline="always")
def simulate_request(proc: Processes, world: PhoneWorld, key, i: int, app, mean_dbm, drop_left,
                     noise, latency_ms, energy_mj):
    """Request ``i`` of the episode keyed ``key``: its network and context (returned) and every
    target's outcome (into ``latency_ms`` and ``energy_mj``).

    ``app`` (1,), ``mean_dbm`` (2,), ``drop_left`` (2,): the episode's dynamic state, advanced
    here (requests of an episode must come in order); ``noise`` (n_targets + 2,) is work space.
    """
    segment, wifi_mean, p2p_mean = advance_processes(proc, key, i, app, mean_dbm, drop_left)
    network, cpu, mem, wifi, p2p = request_context(proc, key, i, segment, wifi_mean, p2p_mean)
    request_noise(proc, key, i, noise)
    request_outcomes(world, network, cpu, mem, wifi, p2p, noise, latency_ms, energy_mj)
    return network, cpu, mem, wifi, p2p


@njit(cache=True, nogil=True)
def generate_loop(proc: Processes, world: PhoneWorld, keys, position, app, mean_dbm, drop_left,
                  worlds, rows, network, co_cpu_pct, co_mem_pct, rssi_wifi_dbm, rssi_p2p_dbm,
                  latency_ms, energy_mj) -> None:
    """The next ``n`` requests (``network.shape[1]``) of each episode ``worlds[k]`` of the state
    arrays, written to row ``rows[k]`` of the outputs ((rows, n) contexts, (rows, n, n_targets)
    outcomes); advances the episodes' positions and dynamic state. Episodes are independent:
    :func:`run_split` runs slices of them on threads."""
    _generate_rows(proc, world, keys, position, app, mean_dbm, drop_left, worlds, rows, network,
                   co_cpu_pct, co_mem_pct, rssi_wifi_dbm, rssi_p2p_dbm, latency_ms, energy_mj,
                   np.empty(len(proc.noise_sigma)))


@batch_loop(nogil=True)
def _generate_rows(proc, world, keys, position, app, mean_dbm, drop_left, worlds, rows, network,
                   co_cpu_pct, co_mem_pct, rssi_wifi_dbm, rssi_p2p_dbm, latency_ms, energy_mj,
                   noise) -> None:
    """:func:`generate_loop`'s loop (``noise``: work space), compiled without reference
    counting (:mod:`autoscale_env.world.compiled`)."""
    n = network.shape[1]
    for k in range(len(worlds)):
        e, row = worlds[k], rows[k]
        episode_app, episode_mean, episode_drop = app[e:e + 1], mean_dbm[e], drop_left[e]
        for r in range(n):
            (network[row, r], co_cpu_pct[row, r], co_mem_pct[row, r], rssi_wifi_dbm[row, r],
             rssi_p2p_dbm[row, r]) = simulate_request(
                proc, world, keys[e], position[e] + r, episode_app, episode_mean, episode_drop,
                noise, latency_ms[row, r], energy_mj[row, r])
        position[e] += n


# Two passes, for blocks of fewer episodes than threads: the sequential part of every request
# (segments_loop, one thread), then the rest (requests_loop), request ranges split across
# threads. The first pass leaves each request's segments where the second writes its context:
# ``network`` holds the packed segment, the two RSSI arrays the segment means.


@batch_loop(nogil=True)
def segments_loop(proc: Processes, keys, position, app, mean_dbm, drop_left, worlds, rows,
                  network, rssi_wifi_dbm, rssi_p2p_dbm) -> None:
    """First pass: :func:`advance_processes` of the next ``n`` requests (``network.shape[1]``)
    of each episode ``worlds[k]``, into row ``rows[k]`` of ``network`` (the packed segment) and
    the RSSI arrays (the segment means); advances the episodes' state and positions."""
    n = network.shape[1]
    for k in range(len(worlds)):
        e, row = worlds[k], rows[k]
        episode_app, episode_mean, episode_drop = app[e:e + 1], mean_dbm[e], drop_left[e]
        for r in range(n):
            network[row, r], rssi_wifi_dbm[row, r], rssi_p2p_dbm[row, r] = advance_processes(
                proc, keys[e], position[e] + r, episode_app, episode_mean, episode_drop)
        position[e] += n


@njit(cache=True, nogil=True)
def requests_loop(proc: Processes, world: PhoneWorld, keys, position, worlds, rows, lo, hi,
                  network, co_cpu_pct, co_mem_pct, rssi_wifi_dbm, rssi_p2p_dbm, latency_ms,
                  energy_mj) -> None:
    """Second pass, after :func:`segments_loop` (so request ``r`` of the block is request
    ``position - n + r`` of its episode): requests ``lo`` to ``hi`` of each episode's block,
    context (:func:`request_context`), noise and outcomes, in place."""
    _requests_rows(proc, world, keys, position, worlds, rows, lo, hi, network, co_cpu_pct,
                   co_mem_pct, rssi_wifi_dbm, rssi_p2p_dbm, latency_ms, energy_mj,
                   np.empty(len(proc.noise_sigma)))


@batch_loop(nogil=True)
def _requests_rows(proc, world, keys, position, worlds, rows, lo, hi, network, co_cpu_pct,
                   co_mem_pct, rssi_wifi_dbm, rssi_p2p_dbm, latency_ms, energy_mj, noise) -> None:
    """:func:`requests_loop`'s loop (``noise``: work space), without reference counting."""
    n = network.shape[1]
    for k in range(len(worlds)):
        e, row = worlds[k], rows[k]
        key, start = keys[e], position[e] - n
        for r in range(lo, hi):
            i = start + r
            net, cpu, mem, wifi, p2p = request_context(
                proc, key, i, network[row, r], rssi_wifi_dbm[row, r], rssi_p2p_dbm[row, r])
            network[row, r], co_cpu_pct[row, r], co_mem_pct[row, r] = net, cpu, mem
            rssi_wifi_dbm[row, r], rssi_p2p_dbm[row, r] = wifi, p2p
            request_noise(proc, key, i, noise)
            request_outcomes(world, net, cpu, mem, wifi, p2p, noise, latency_ms[row, r],
                             energy_mj[row, r])


# ----------------------------------------------------------------------------------------------
# Episodes on threads

#: Fewest requests per thread worth a second thread (:func:`run_split`).
MIN_REQUESTS_PER_THREAD = 4096
#: Fewest requests per thread worth a second thread in :meth:`SimBackend.generate`, which
#: splits a block's requests (a thread's share of a 1024-request block is ~150 us of work
#: against tens of us to hand it over).
MIN_REQUESTS_PER_SPLIT = 2048

_pool: ThreadPoolExecutor | None = None
_pool_owner = (0, 0)  # (pid, threads): a forked child or a new thread count starts a new pool
_pool_lock = threading.Lock()


def default_threads() -> int:
    """Threads the batch loops use: numba's thread count (``NUMBA_NUM_THREADS``,
    ``numba.set_num_threads``). Results never depend on it."""
    return int(get_num_threads())


def thread_pool(threads: int) -> ThreadPoolExecutor:
    """The ``threads - 1`` worker threads beside the caller's (one pool per process and
    thread count: a forked child or a new count starts a new one)."""
    global _pool, _pool_owner
    with _pool_lock:
        if _pool is None or _pool_owner != (os.getpid(), threads):
            _pool = ThreadPoolExecutor(threads - 1, thread_name_prefix="autoscale-kernel")
            _pool_owner = (os.getpid(), threads)
        return _pool


def run_calls(calls: list, threads: int) -> None:
    """Run ``fn(*args)`` of every ``(fn, args)`` in ``calls`` (compiled with ``nogil``), the
    first on the calling thread and the others on :func:`thread_pool`; returns when all are
    done (an exception in any is raised here)."""
    if len(calls) == 1:
        calls[0][0](*calls[0][1])
        return
    futures = [thread_pool(threads).submit(fn, *args) for fn, args in calls[1:]]
    try:
        calls[0][0](*calls[0][1])
    finally:
        for f in futures:
            f.result()


def run_split(loop, head: tuple, worlds: np.ndarray, rows: np.ndarray, tail: tuple,
              requests_per_world: int, threads: int | None = None) -> None:
    """``loop(*head, worlds, rows, *tail)`` with ``worlds``/``rows`` split into contiguous slices
    run on threads (the loops are compiled with ``nogil``). Each episode is computed by exactly
    one call, whole, so the results do not depend on the split."""
    threads = default_threads() if threads is None else max(1, int(threads))
    k = min(threads, len(worlds), max(1, len(worlds) * requests_per_world
                                      // MIN_REQUESTS_PER_THREAD))
    if k <= 1:
        loop(*head, worlds, rows, *tail)
        return
    bounds = np.linspace(0, len(worlds), k + 1).astype(np.int64)
    # The threads share the read-only tables: the loops run them through batch loops, which
    # count no references (world.compiled), so no cache line bounces between cores.
    run_calls([(loop, (*head, worlds[lo:hi], rows[lo:hi], *tail))
               for lo, hi in zip(bounds[:-1], bounds[1:])], threads)


def _generate(proc: Processes, world: PhoneWorld, state: tuple, worlds: np.ndarray,
              rows: np.ndarray, out: tuple, n: int, threads: int) -> None:
    """:meth:`SimBackend.generate`'s work on up to ``threads`` threads, each given at least
    ``MIN_REQUESTS_PER_SPLIT`` requests. With at least as many episodes as threads, each thread
    computes whole episodes (:func:`generate_loop`); with fewer (one env's block), the
    sequential pass runs first on one thread (:func:`segments_loop`, a few uniform draws per
    request) and the rest of every request, most of the work, is split by request ranges
    (:func:`requests_loop`). Both compute every request from the same draws in the same order
    of operations: the results are the same bit for bit whatever the split."""
    E = len(worlds)
    k = min(threads, max(1, E * n // MIN_REQUESTS_PER_SPLIT))
    if k <= 1:
        generate_loop(proc, world, *state, worlds, rows, *out)
    elif E >= k:
        bounds = np.linspace(0, E, k + 1).astype(np.int64).tolist()
        run_calls([(generate_loop, (proc, world, *state, worlds[lo:hi], rows[lo:hi], *out))
                   for lo, hi in zip(bounds[:-1], bounds[1:])], threads)
    else:
        network, rssi_wifi_dbm, rssi_p2p_dbm = out[0], out[3], out[4]
        segments_loop(proc, *state, worlds, rows, network, rssi_wifi_dbm, rssi_p2p_dbm)
        keys, position = state[:2]
        bounds = np.linspace(0, n, k + 1).astype(np.int64).tolist()
        run_calls([(requests_loop, (proc, world, keys, position, worlds, rows, lo, hi, *out))
                   for lo, hi in zip(bounds[:-1], bounds[1:])], threads)


# ----------------------------------------------------------------------------------------------
# The backend


class SimState:
    """Where ``n_worlds`` episodes stand between blocks (one row per episode).

    Attributes:
        keys: each episode's key (uint64, module docstring).
        position: requests of the episode generated so far.
        app: dynamic: current co-running app segment's app.
        mean_dbm: dynamic: current signal segment mean of (Wi-Fi, Wi-Fi Direct).
        drop_left: dynamic: requests still inside a deep drop, per link.
    """

    __slots__ = ("app", "drop_left", "keys", "mean_dbm", "position")

    def __init__(self, n_worlds: int):
        self.keys = np.zeros(n_worlds, dtype=np.uint64)
        self.position = np.zeros(n_worlds, dtype=np.int64)
        self.app = np.zeros(n_worlds, dtype=np.int64)
        self.mean_dbm = np.zeros((n_worlds, 2))
        self.drop_left = np.zeros((n_worlds, 2), dtype=np.int64)

    def arrays(self) -> tuple[np.ndarray, ...]:
        """``(keys, position, app, mean_dbm, drop_left)``, as the compiled loops take them."""
        return self.keys, self.position, self.app, self.mean_dbm, self.drop_left


class Requests(NamedTuple):
    """Blocks of ``E`` episodes: ``(E, n)`` network and contexts, ``(E, n, n_targets)`` outcomes."""

    network: np.ndarray
    co_cpu_pct: np.ndarray
    co_mem_pct: np.ndarray
    rssi_wifi_dbm: np.ndarray
    rssi_p2p_dbm: np.ndarray
    latency_ms: np.ndarray
    energy_mj: np.ndarray


#: Most episodes whose first block :meth:`SimBackend.next_block` computes in one call.
PREFETCH_EPISODES = 64


class FirstBlocks:
    """The first blocks of coming episodes, computed in one call (:meth:`SimBackend.reset`,
    :meth:`SimBackend.next_block`).

    An env resets a new episode every ``MAX_EPISODE_STEPS`` requests, one block by default, so
    one episode at a time the per-call costs (Python, numba's dispatch, then the env's scoring
    and encoding) outweigh the compiled work. Episode keys are consecutive words of the env's
    generator, so the keys of the next ``size`` episodes can be read ahead from a copy of it:
    the batch is computed (at the first :meth:`SimBackend.next_block` that needs it) from the
    generator's state at the reset that started it, and entry ``j`` is used only when the
    generator is exactly where the ``j``-th key is drawn (:meth:`follows`), so the trajectory is
    the one of one episode at a time. The size grows (1, 2, 4, ... ``prefetch_episodes``) while
    every entry is used and falls back to 1 on a miss (a seeded reset, a replaced generator):
    episodes reset with a seed each waste nothing, and a miss wastes at most one batch.
    """

    __slots__ = ("batch", "expected", "kind", "n", "next", "size", "start", "state")

    def __init__(self, rng: np.random.Generator, size: int, n: int):
        self.kind = type(rng.bit_generator)
        self.start = rng.bit_generator.state  # before the first entry's key
        self.size, self.n = size, n
        self.next = 0             # entries handed to resets so far
        self.expected = self.start  # the generator's state from which entry `next` is keyed
        self.batch: RequestBlock | None = None   # (size, n) arrays, once computed
        self.state: SimState | None = None       # each entry's state after its first block

    def follows(self, state: dict) -> bool:
        """Whether a reset from the generator ``state`` draws entry :attr:`next`'s key."""
        return state == self.expected

    def compute(self, sim: SimBackend) -> None:
        """The first ``n`` requests of each entry's episode, keyed from a copy of the generator."""
        peek = np.random.Generator(self.kind())
        peek.bit_generator.state = self.start
        worlds = np.arange(self.size)
        self.state = SimState(self.size)
        sim.reset_worlds([peek] * self.size, self.state, worlds)  # one word each, as resets
        r = sim.generate(self.state, worlds, n=self.n)
        self.batch = RequestBlock(
            network=r.network, co_cpu_pct=r.co_cpu_pct, co_mem_pct=r.co_mem_pct,
            rssi_wifi_dbm=r.rssi_wifi_dbm, rssi_p2p_dbm=r.rssi_p2p_dbm, latency_ms=r.latency_ms,
            energy_mj=r.energy_mj, accuracy=sim.accuracy_table[r.network],
            energy_source=sim.energy_source)


class SimBackend:
    """Analytical world model for one phone in one scenario and setting.

    Args:
        device: bundled phone name (``mi8pro``, ``galaxy_s10e``, ``moto_x_force``), a profile path,
            or an already loaded :class:`~autoscale_env.world.config.DeviceProfile` (e.g. a perturbed
            copy for a sensitivity analysis).
        scenario: ``non_streaming``, ``streaming`` or ``translation``.
        setting: ``static`` (conditions drawn per episode, then held) or ``dynamic``.
        block_size: requests computed per block (performance only, see the module docstring).
        prefetch_episodes: most episodes whose first block :meth:`next_block` computes in one
            call (:class:`FirstBlocks`; performance only, 1 computes one episode at a time).
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
                 settings: tuple | None = None, prefetch_episodes: int = PREFETCH_EPISODES):
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
        self.processes = self._processes()
        self.prefetch_episodes = max(1, int(prefetch_episodes))
        self._state = SimState(1)
        self._world = np.zeros(1, dtype=np.int64)  # the one row of _state next_block advances
        self._started = False
        self._ahead: FirstBlocks | None = None
        self._first: int | None = None  # reset: the episode's entry in _ahead, until next_block
        self._handed: tuple | None = None  # (block, row, batch) of the last block out of _ahead

    def _processes(self) -> Processes:
        names = [w.name for w in self.workloads]
        s, d = self.static, self.dynamic
        sig = s if self.setting == "static" else d
        remote = [not t.is_local for t in self.targets]
        sigma = [sig.server_latency_sigma if r else sig.local_latency_sigma for r in remote]
        ranges = np.array([d.rssi_wifi_range_dbm[:2], d.rssi_p2p_range_dbm[:2]], dtype=float)
        sigmas = [float(x) for x in sigma + [sig.goodput_sigma] * 2]
        distinct = sorted(set(sigmas))

        def floats(values):
            return tuple(float(v) for v in values)

        def array(values, dtype=np.float64):
            a = np.array(values, dtype=dtype)
            a.flags.writeable = False
            return a

        return Processes(
            static=self.setting == "static",
            networks=array([names.index(n) for n in self.scenario.networks], np.int64),
            static_cpu=array([self.apps[a].cpu_pct for a in s.apps]),
            static_mem=array([self.apps[a].mem_pct for a in s.apps]),
            static_wifi_dbm=array(s.rssi_wifi_dbm), static_p2p_dbm=array(s.rssi_p2p_dbm),
            app_cpu=array([self.apps[a].cpu_pct for a in d.apps]),
            app_mem=array([self.apps[a].mem_pct for a in d.apps]),
            app_switch_p=1.0 / d.app_mean_requests, cpu_jitter_pct=float(d.app_cpu_jitter_pct),
            mem_jitter_pct=float(d.app_mem_jitter_pct), rssi_low=floats(ranges[:, 0]),
            rssi_span=floats(ranges[:, 1] - ranges[:, 0]),
            segment_switch_p=1.0 / d.rssi_segment_mean_requests,
            fading_sigma_db=float(d.rssi_fading_sigma_db), drop_p=float(d.rssi_drop_probability),
            drop_stay_p=1.0 - 1.0 / d.rssi_drop_mean_requests,
            drop_depth_db=float(d.rssi_drop_depth_db),
            noise_sigma=array(sigmas),
            noise_table=np.stack([lognormal_table(x) for x in distinct]),
            noise_class=array([distinct.index(x) for x in sigmas], np.int64))

    # ---------------------------------------------------------------------------------------
    # Backend protocol

    def reset(self, rng: np.random.Generator) -> None:
        """Start an episode: draw its key from ``rng`` (module docstring). Its first block may
        come from a batch of episodes computed together (:class:`FirstBlocks`)."""
        q = self._ahead
        follows = q is not None and q.follows(rng.bit_generator.state)
        if not follows or q.next >= q.size:
            size = min(2 * q.size, self.prefetch_episodes) if follows else 1
            q = self._ahead = FirstBlocks(rng, size, self.block_size)
        self.reset_worlds([rng], self._state, self._world)
        self._first = q.next
        q.next += 1
        q.expected = rng.bit_generator.state
        self._started = True

    def next_block(self) -> RequestBlock:
        """Generate the next ``block_size`` requests with every target's outcome."""
        if not self._started:
            raise RuntimeError("SimBackend.next_block() called before reset()")
        if self._first is not None:  # the episode's first block: from the batch
            j, self._first = self._first, None
            q = self._ahead
            if q.batch is None:
                q.compute(self)
            if q.n == self.block_size and q.state.keys[j] == self._state.keys[0]:
                for mine, theirs in zip(self._state.arrays(), q.state.arrays()):
                    mine[0] = theirs[j]
                r = q.batch
                block = RequestBlock(
                    network=r.network[j], co_cpu_pct=r.co_cpu_pct[j], co_mem_pct=r.co_mem_pct[j],
                    rssi_wifi_dbm=r.rssi_wifi_dbm[j], rssi_p2p_dbm=r.rssi_p2p_dbm[j],
                    latency_ms=r.latency_ms[j], energy_mj=r.energy_mj[j],
                    accuracy=r.accuracy[j], energy_source=self.energy_source)
                self._handed = (block, j, r)
                return block
        b = self.generate(self._state, self._world)
        network = b.network[0]
        return RequestBlock(
            network=network, co_cpu_pct=b.co_cpu_pct[0], co_mem_pct=b.co_mem_pct[0],
            rssi_wifi_dbm=b.rssi_wifi_dbm[0], rssi_p2p_dbm=b.rssi_p2p_dbm[0],
            latency_ms=b.latency_ms[0], energy_mj=b.energy_mj[0],
            accuracy=self.accuracy_table[network], energy_source=self.energy_source)

    def block_batch(self, block: RequestBlock) -> tuple[RequestBlock, int] | None:
        """Optional backend hook (:class:`~autoscale_env.world.types.Backend`): when ``block``
        is the last first block :meth:`next_block` handed out of a batch (:class:`FirstBlocks`),
        ``(batch, j)``: the batch's blocks as one :class:`RequestBlock` of ``(E, n)`` arrays, of
        which ``block`` is row ``j``; else None. The env scores and encodes a batch once."""
        if self._handed is None or block is not self._handed[0]:
            return None
        return self._handed[2], self._handed[1]

    def provenance(self) -> dict[str, str]:
        """Which model produced the numbers (written into trace headers)."""
        return {"model": "autoscale_env.world.rules.request_outcomes",
                "streams": "counter-based: splitmix64(episode key, request, draw)"}

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
                            rssi_wifi_dbm=ctx[2], rssi_p2p_dbm=ctx[3], latency_ms=latency,
                            energy_mj=energy, accuracy=self.accuracy_table[net],
                            energy_source=self.energy_source)

    def execute(self, block: RequestBlock, index: int, action: int):
        """Never needed: sim blocks carry every target's outcome."""
        raise NotImplementedError("sim blocks carry outcomes; the env reads them directly")

    def close(self) -> None:
        """Nothing to release."""

    # ---------------------------------------------------------------------------------------
    # Batched interface (next_block with one episode; the native vector env, the fleet and the
    # harness with many)

    def reset_worlds(self, rngs, state: SimState, worlds: np.ndarray) -> None:
        """Start a new episode in each row ``worlds`` of ``state``, keyed from the generator
        in ``rngs`` at its position (one word each, as :meth:`reset`)."""
        for rng, world in zip(rngs, np.asarray(worlds).tolist()):
            state.keys[world] = np.uint64(int(rng.bit_generator.random_raw()))
        state.position[worlds] = 0
        state.drop_left[worlds] = 0

    def generate(self, state: SimState, worlds: np.ndarray, n: int | None = None,
                 out: Requests | None = None, threads: int | None = None,
                 rows: np.ndarray | None = None) -> Requests:
        """The next ``n`` (default ``block_size``) requests of the episodes in rows ``worlds``
        of ``state`` (advancing them), as :class:`Requests` of ``E = len(worlds)`` rows, or
        written into row ``rows[k]`` (default ``worlds[k]``) of ``out`` (arrays with ``n``
        columns; any strides, e.g. transposed views of a caller's request-major arrays).
        ``threads`` (default :func:`default_threads`): see :func:`_generate`; the results do not
        depend on it."""
        worlds = np.ascontiguousarray(worlds, dtype=np.int64)
        n = self.block_size if n is None else int(n)
        if out is None:
            E, T = len(worlds), len(self.targets)
            out = Requests(np.empty((E, n), dtype=np.int64), *(np.empty((E, n)) for _ in range(4)),
                           np.empty((E, n, T)), np.empty((E, n, T)))
            rows = np.arange(E, dtype=np.int64)
        elif rows is None:
            rows = worlds
        else:
            rows = np.ascontiguousarray(rows, dtype=np.int64)
        _generate(self.processes, self.model.tables, state.arrays(), worlds, rows, tuple(out),
                  out.network.shape[1], default_threads() if threads is None else max(1, int(threads)))
        return out

