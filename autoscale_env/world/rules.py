"""The world's rules, written once: outcome model, reference energy, reward, oracle.

Everything here is a vectorised numpy function over arrays of **any batch shape** ``S`` (one
request ``()``, a block ``(n,)``, or sub-envs x requests ``(E, n)``); per-target results are
**target-major**, ``(n_targets,) + S``, so every operation runs over long contiguous rows. The
single env (:mod:`autoscale_env.env`), the native vector env (:mod:`autoscale_env.vector`), the sim
backend (:mod:`autoscale_env.backends.sim`, and through it the recorder) and the oracle all call
these functions; none of them re-implements a rule. The observation is binned by
:class:`autoscale_env.world.observation.StateEncoder`, the other shared rule.

* :func:`reference_energy_mj`: ``E_ref`` of the reward, a pure function of a phone profile.
* :func:`outcomes` / :class:`OutcomeModel`: every target's latency and phone energy for requests
  given their network, co-running load, both links' RSSI and multiplicative noise
  (:meth:`OutcomeModel.outcomes`). The readable references it must agree with are :func:`autoscale_env.world.power.local_run` and
  :func:`autoscale_env.world.radio.offload` (tests compare them).
* :class:`Scorer`: reward, ``qos_met``, ``accuracy_met`` of outcomes (the formula of
  :mod:`autoscale_env.world.reward`), and :func:`oracle_actions`, the best target per request.

Nothing here draws random numbers: noise is an input, so the same arrays give the same results
bit for bit whatever their batch shape (elementwise numpy results do not depend on the shape).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from autoscale_env.world import config
from autoscale_env.world import power, radio
from autoscale_env.world.types import Target, Workload
from autoscale_env.world.reward import accuracy_terms, reward_from_terms
from autoscale_env.world.observation import Binner

#: The target whose interference-free energy is ``E_ref``.
REFERENCE_TARGET = Target("local", "cpu", "fp32")


def _profile(device: str | config.DeviceProfile) -> config.DeviceProfile:
    return device if isinstance(device, config.DeviceProfile) else config.load_device(device)


def reference_energy_mj(phone: str | config.DeviceProfile,
                        workloads: Sequence[Workload] | None = None) -> np.ndarray:
    """``E_ref`` per workload (mJ): the energy of ``local/cpu/fp32`` with no interference.

    A pure function of the phone profile (latency table, CPU busy power, base power); ``workloads``
    defaults to the bundled catalog, in its order.
    """
    phone = _profile(phone)
    if workloads is None:
        workloads = tuple(config.load_workloads().values())
    unit = REFERENCE_TARGET.unit
    runs_on = [phone.unit_latency_ms(w.name, unit) for w in workloads]
    busy_w = np.array([phone.processors[u.split("/")[0]].busy_power_w for u, _ in runs_on])
    base_ms = np.array([ms for _, ms in runs_on], dtype=float)
    return base_ms * (busy_w + phone.base_power_w)


class Scratch:
    """Reusable work arrays, one per (name, shape, dtype).

    Computing many requests at once needs temporaries of a few hundred kB each; freshly
    allocated, malloc maps and unmaps them on every pass and the page faults cost more than the
    arithmetic. Arrays returned to callers are scratch arrays only where a docstring says so.
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


def _fresh(name: str, shape: tuple[int, ...], dtype=float) -> np.ndarray:
    return np.empty(shape, dtype)


class OutcomeModel:
    """Latency and phone energy of every target of one phone, for requests in arrays.

    Args:
        phone: a phone profile (name, path or an already loaded :class:`config.DeviceProfile`,
            e.g. one with a perturbed number for a sensitivity analysis).
        scenario: the scenario (its request gap sets the radio tail energy).
        edge, cloud: the remote hosts' profiles (default: those the phone names).
        links: the link models (default: ``data/links.toml``).
        workloads: the catalog (default: the bundled one); ``network`` arrays index it.

    Attributes:
        targets: the phone's targets (the order of the outcome rows).
        workloads: the catalog.
        accuracy: (n_workloads, n_targets) accuracy fraction of each network on each target
            (a fallback runs at its fallback unit's precision).
        n_local, n_remote: targets on the phone / remote (the noise rows, see :meth:`outcomes`).
    """

    def __init__(self, phone: str | config.DeviceProfile,
                 scenario: str | config.Scenario = "non_streaming", *,
                 edge: str | config.DeviceProfile | None = None,
                 cloud: str | config.DeviceProfile | None = None,
                 links: dict[str, config.LinkModel] | None = None,
                 workloads: Sequence[Workload] | None = None):
        self.phone = _profile(phone)
        if self.phone.kind != "phone":
            raise config.ConfigError(
                f"{self.phone.path}: device must be a phone profile, got kind {self.phone.kind!r}")
        self.scenario = scenario if isinstance(scenario, config.Scenario) else \
            config.get_scenario(scenario)
        self.edge = _profile(edge if edge is not None else self.phone.edge)
        self.cloud = _profile(cloud if cloud is not None else self.phone.cloud)
        self.links = links if links is not None else config.load_links()
        self.workloads: tuple[Workload, ...] = tuple(
            workloads if workloads is not None else config.load_workloads().values())
        self.targets: tuple[Target, ...] = tuple(self.phone.targets)
        self._tabulate()

    # Per (workload, target) constants, computed once
    def _tabulate(self) -> None:
        phone = self.phone
        W, T = len(self.workloads), len(self.targets)
        local = np.array([t.is_local for t in self.targets])
        base_ms, server_ms, self.accuracy = np.zeros((W, T)), np.zeros((W, T)), np.zeros((W, T))
        busy, idle, kc, km = (np.zeros((W, T)) for _ in range(4))
        link_of = np.array([1 if t.location == "edge" else 0 for t in self.targets])
        # Targets that end up on the same physical unit (a fallback) share its noise row.
        noise_col = np.zeros((W, T), dtype=np.int64)
        for j, t in enumerate(self.targets):
            for i, w in enumerate(self.workloads):
                if t.is_local:
                    unit, ms = phone.unit_latency_ms(w.name, t.unit)
                    proc = phone.processors[unit.split("/")[0]]
                    base_ms[i, j] = ms
                    busy[i, j], idle[i, j] = proc.busy_power_w, proc.idle_power_w
                    kc[i, j], km[i, j] = proc.cpu_interference, proc.mem_interference
                else:
                    host = self.edge if t.location == "edge" else self.cloud
                    unit, ms = host.unit_latency_ms(w.name, t.unit)
                    server_ms[i, j] = ms + host.overhead_ms
                runs_on = Target(t.location, *unit.split("/"))
                noise_col[i, j] = self.targets.index(runs_on) if runs_on in self.targets else j
                self.accuracy[i, j] = w.accuracy[unit.split("/")[1]]
        self.accuracy.flags.writeable = False

        # Local targets and remote targets are computed as two groups of rows.
        local_idx, remote_idx = np.flatnonzero(local), np.flatnonzero(~local)
        self.n_local, self.n_remote = L, R = len(local_idx), len(remote_idx)
        order = np.concatenate([local_idx, remote_idx])
        self._column_order = None if np.array_equal(order, np.arange(T)) else np.argsort(order)
        group_pos = np.empty(T, dtype=np.int64)
        group_pos[local_idx] = np.arange(L)
        group_pos[remote_idx] = np.arange(R)
        # Target-major tables (rows: targets of a group, columns: workloads), looked up with
        # table.take(network, axis=-1) -> (targets,) + S.
        self._local_noise_row = np.ascontiguousarray(group_pos[noise_col[:, local_idx]].T)
        self._remote_noise_row = np.ascontiguousarray(group_pos[noise_col[:, remote_idx]].T)
        a, b = power.energy_coefficients(busy_power_w=busy, idle_power_w=idle,
                                         cpu_interference=kc, base_power_w=phone.base_power_w)
        # (5, L, W): base latency, memory interference, CPU interference, energy a, energy b
        self._local_coef = np.ascontiguousarray(
            np.stack([base_ms, km, kc, a, b])[:, :, local_idx].transpose(0, 2, 1))
        self._remote_server_ms = np.ascontiguousarray(server_ms[:, remote_idx].T)
        self._remote_link = link_of[remote_idx]
        self._up_kbit = np.array([w.input_bytes for w in self.workloads], dtype=float) * 8e-3
        self._down_kbit = np.array([w.output_bytes for w in self.workloads], dtype=float) * 8e-3
        link_models = (self.links["wifi"], self.links["p2p"])
        tables = [radio.link_table(link, phone.wifi_active_w) for link in link_models]
        offsets = np.cumsum([0] + [len(t) for _, t in tables[:-1]])
        # per link: RSSI -> row of the stacked link tables (interval index + the link's offset)
        self._link_rows = [Binner(edges, side="right", table=np.arange(len(t)) + offset)
                           for (edges, t), offset in zip(tables, offsets)]
        # (4, intervals of both links): goodput, rtt, tx power, rx power
        self._link_table = np.ascontiguousarray(np.concatenate([t for _, t in tables]).T)
        timeout = np.array([link.timeout_ms for link in link_models])
        gap = self.scenario.request_gap_ms
        tail = np.array([radio.tail_energy_mj(link, phone.wifi_active_w, gap)
                         for link in link_models])
        self._remote_timeout_ms = timeout[self._remote_link]
        self._remote_tail_mj = tail[self._remote_link]
        self._timeout_ms = timeout

    @property
    def n_noise(self) -> int:
        """Rows of the ``noise`` argument of :meth:`outcomes`."""
        return self.n_local + self.n_remote + 2

    def outcomes(self, network: np.ndarray, co_cpu_pct: np.ndarray, co_mem_pct: np.ndarray,
                 rssi_wifi_dbm: np.ndarray, rssi_p2p_dbm: np.ndarray,
                 noise: np.ndarray | None = None, *,
                 out: tuple[np.ndarray, np.ndarray] | None = None,
                 scratch: Scratch | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(latency_ms, energy_mj)`` of every target, each target-major ``(n_targets,) + S``.

        Args:
            network: int workload indices, shape ``S`` (any shape).
            co_cpu_pct, co_mem_pct: co-running apps' CPU and memory use (%), shape ``S``.
            rssi_wifi_dbm, rssi_p2p_dbm: signal of the cloud link and the edge link (dBm), ``S``.
            noise: ``(n_noise,) + S`` multiplicative noise (median 1): rows ``0 .. n_local-1``
                the runtime of each local target (target order), next ``n_remote`` rows the
                server runtime of each remote target, last two rows the goodput of Wi-Fi and
                Wi-Fi Direct. A target that falls back to another unit uses that unit's target's
                row, so a fallback is reliably a little worse than asking for the unit directly.
                ``None``: noise-free (all ones).
            out: optional float64 ``(latency, energy)`` arrays of shape ``(n_targets,) + S``.
            scratch: work arrays (one :class:`Scratch` per thread); default fresh arrays.
        """
        ws = _fresh if scratch is None else scratch
        network = np.asarray(network)
        S = network.shape
        L, R = self.n_local, self.n_remote
        if noise is None:
            noise = np.ones((self.n_noise,) + S)
        if out is None or self._column_order is not None:
            latency = np.empty((L + R,) + S)
            energy = np.empty_like(latency)
        else:
            latency, energy = out

        # Local targets: power.local_run in the factored form of power.py
        cpu_frac = np.divide(co_cpu_pct, 100.0, out=ws("cpu_frac", S))
        mem_frac = np.divide(co_mem_pct, 100.0, out=ws("mem_frac", S))
        c = self._local_coef.take(network, axis=-1, out=ws("local_coef", (5, L) + S), mode="clip")
        busy = np.multiply(c[1], mem_frac, out=ws("busy", (L,) + S))
        busy += 1.0
        busy *= c[0]
        busy *= _pick(noise, 0, self._local_noise_row, network, ws, "local")
        f = np.multiply(c[2], cpu_frac, out=ws("f", (L,) + S))
        f += 1.0
        np.multiply(busy, f, out=latency[:L])
        np.multiply(c[4], cpu_frac, out=f)
        f += c[3]
        np.multiply(busy, f, out=energy[:L])

        # Links: radio.offload from the link tables, per link (2,) + S ...
        k = ws("interval", (2,) + S, np.int64)
        for link, rssi in enumerate((rssi_wifi_dbm, rssi_p2p_dbm)):
            self._link_rows[link](rssi, out=k[link, ...])  # a view even for shape ()
        tab = self._link_table.take(k, axis=-1, out=ws("link_table", (4, 2) + S), mode="clip")
        rate = np.multiply(tab[0], noise[L + R:], out=ws("rate", (2,) + S))
        disconnected = np.less_equal(rate, 0.0, out=ws("disconnected", (2,) + S, bool))
        rate += disconnected  # 0 -> 1 kbit/ms where disconnected (results unused there)
        up_ms = np.divide(self._up_kbit.take(network), rate, out=ws("up_ms", (2,) + S))
        down_ms = np.divide(self._down_kbit.take(network), rate, out=ws("down_ms", (2,) + S))
        before_server = np.add(up_ms, tab[1], out=ws("before_server", (2,) + S))
        radio_mj = np.multiply(tab[2], up_ms, out=ws("radio_mj", (2,) + S))
        radio_mj += np.multiply(tab[3], down_ms, out=up_ms)
        timeout_mj = np.add(tab[2], self.phone.base_power_w, out=ws("timeout_mj", (2,) + S))
        timeout_mj *= self._timeout_ms.reshape((2,) + (1,) * len(S))

        # ... then the remote targets (n_remote,) + S
        link = self._remote_link
        per_remote = ws("per_remote", (R,) + S)
        lat = latency[L:]
        np.multiply(self._remote_server_ms.take(network, axis=-1, out=per_remote, mode="clip"),
                    _pick(noise, L, self._remote_noise_row, network, ws, "remote"), out=lat)
        lat += before_server.take(link, axis=0, out=per_remote, mode="clip")
        lat += down_ms.take(link, axis=0, out=per_remote, mode="clip")
        e = energy[L:]
        np.multiply(lat, self.phone.base_power_w, out=e)
        e += radio_mj.take(link, axis=0, out=per_remote, mode="clip")
        e += self._remote_tail_mj.reshape((R,) + (1,) * len(S))
        if disconnected.any():  # rare: a link below its disconnection threshold
            down = disconnected.take(link, axis=0, out=ws("down", (R,) + S, bool), mode="clip")
            np.copyto(lat, self._remote_timeout_ms.reshape((R,) + (1,) * len(S)), where=down)
            np.copyto(e, timeout_mj.take(link, axis=0, out=per_remote, mode="clip"), where=down)

        if self._column_order is not None:
            latency, energy = latency[self._column_order], energy[self._column_order]
            if out is not None:
                out[0][...], out[1][...] = latency, energy
                latency, energy = out
        return latency, energy


def outcomes(device: str | config.DeviceProfile, network: np.ndarray, co_cpu_pct: np.ndarray,
             co_mem_pct: np.ndarray, rssi_wifi_dbm: np.ndarray, rssi_p2p_dbm: np.ndarray,
             noise: np.ndarray | None = None, *,
             scenario: str | config.Scenario = "non_streaming") -> tuple[np.ndarray, np.ndarray]:
    """Every target's ``(latency_ms, energy_mj)`` for requests given as arrays of any shape ``S``.

    A one-call form of :meth:`OutcomeModel.outcomes` (see it for the arguments and the noise
    rows) for a phone name, path or loaded profile; results are target-major
    ``(n_targets,) + S`` in ``OutcomeModel(device).targets`` order. For repeated calls build the
    :class:`OutcomeModel` once (it tabulates the profile).

    Example: ``rules.outcomes("mi8pro", [0, 3], [0.0, 50.0], [0.0, 30.0], [-55.0, -85.0],
    [-50.0, -50.0])`` gives two (9, 2) arrays, noise-free.
    """
    return OutcomeModel(device, scenario).outcomes(
        np.asarray(network), np.asarray(co_cpu_pct, dtype=float),
        np.asarray(co_mem_pct, dtype=float), np.asarray(rssi_wifi_dbm, dtype=float),
        np.asarray(rssi_p2p_dbm, dtype=float), noise)


def _pick(noise: np.ndarray, first_row: int, rows: np.ndarray, network: np.ndarray,
          scratch, group: str) -> np.ndarray:
    """Per target and request, the noise row its unit uses:
    ``out[j, s] = noise[first_row + rows[j, network[s]], s]``, as one flat take."""
    size = network.size
    index = rows.take(network, axis=-1, mode="clip",
                      out=scratch(group + ".row", rows.shape[:1] + network.shape, np.int64))
    index += first_row
    index *= size
    index += _cells(size).reshape(network.shape)
    return noise.reshape(-1).take(index, out=scratch(group + ".noise", index.shape), mode="clip")


_CELLS: dict[int, np.ndarray] = {}


def _cells(size: int) -> np.ndarray:
    """``np.arange(size)``, cached read-only (blocks come in few sizes)."""
    a = _CELLS.get(size)
    if a is None:
        a = np.arange(size)
        a.flags.writeable = False
        if len(_CELLS) < 64:
            _CELLS[size] = a
    return a


class Scorer:
    """Reward, constraint flags and oracle of outcomes: the reward of :mod:`autoscale_env.world.reward`
    for one scenario, phone and reward preset.

    Args:
        preset: the reward preset.
        scenario: its ``qos_ms`` and ``accuracy_tolerance``.
        workloads: the catalog (``network`` arrays index it).
        reference_energy_mj: ``E_ref`` per workload (:func:`reference_energy_mj` for a profile).
        accuracy: optional (n_workloads, n_targets) accuracy table of a world whose accuracy
            depends only on (network, target) (the sim): :meth:`score` then looks the accuracy
            terms up instead of computing them (bit-identical: the same elementwise arithmetic).
    """

    def __init__(self, preset: config.RewardPreset, scenario: config.Scenario,
                 workloads: Sequence[Workload], reference_energy_mj: np.ndarray,
                 accuracy: np.ndarray | None = None):
        self.preset = preset
        self.qos_ms = float(scenario.qos_ms)
        self.reference_energy_mj = np.asarray(reference_energy_mj, dtype=float)
        #: per workload: fp32 accuracy minus the scenario's tolerance
        self.accuracy_target = np.array(
            [w.accuracy["fp32"] - scenario.accuracy_tolerance for w in workloads])
        self.accuracy = None if accuracy is None else np.asarray(accuracy, dtype=float)
        #: (n_workloads, n_targets) ``accuracy_met`` of the accuracy table (None without one)
        self.accuracy_met = None
        self._tables = None
        if accuracy is not None:
            met, penalty = accuracy_terms(preset, accuracy=self.accuracy,
                                          accuracy_target=self.accuracy_target[:, None])
            self.accuracy_met = met
            # target-major (n_targets, W), looked up with .take(network, axis=-1)
            self._tables = (np.ascontiguousarray(met.T), np.ascontiguousarray(penalty.T))

    def score(self, network: np.ndarray, latency_ms: np.ndarray, energy_mj: np.ndarray,
              accuracy: np.ndarray | None = None, *,
              scratch: Scratch | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(reward, qos_met, accuracy_met)`` of target-major outcomes.

        Args:
            network: workload indices, shape ``S``.
            latency_ms, energy_mj: ``(k,) + S`` (``k`` targets; NaN = unknown outcome, which
                scores NaN with ``False`` flags).
            accuracy: ``(k,) + S``; default the table given at construction (all targets).
            scratch: reusable work arrays; the results are then scratch arrays too.
        """
        network = np.asarray(network)
        shape = np.shape(latency_ms)
        ws = _fresh if scratch is None else scratch
        if accuracy is None:
            if self._tables is None:
                raise ValueError("Scorer.score needs accuracy= (this scorer was built without an "
                                 "accuracy table)")
            met_table, penalty_table = self._tables
            acc_met = met_table.take(network, axis=-1, mode="clip",
                                     out=ws("score.acc_met", shape, bool))
            acc_penalty = penalty_table.take(network, axis=-1, mode="clip",
                                             out=ws("score.acc_penalty", shape))
        else:
            acc_met, acc_penalty = accuracy_terms(
                self.preset, accuracy=accuracy, accuracy_target=self.accuracy_target.take(network))
        reward, qos_met = reward_from_terms(
            self.preset, latency_ms=latency_ms, energy_mj=energy_mj,
            reference_energy_mj=self.reference_energy_mj.take(network), qos_ms=self.qos_ms,
            accuracy_met=acc_met, accuracy_penalty=acc_penalty, scratch=scratch)
        return reward, qos_met, acc_met


#: Requests from which :func:`oracle_actions` compares whole rows instead of calling ``argmax``.
_ROW_LOOP_MIN_SIZE = 2048


def oracle_actions(rewards: np.ndarray, scratch: Scratch | None = None) -> np.ndarray:
    """Best target per request of a target-major ``(n_targets,) + S`` reward array: shape ``S``,
    ties to the lowest index; -1 where any target's reward is unknown (NaN): the best action
    cannot be known without every target's outcome (a partial trace).

    Computed with whole-row comparisons (faster than ``argmax`` along a leading axis): the last
    target at which a row strictly improves on the best so far is the first index of the maximum.
    """
    shape = rewards.shape[1:]
    if rewards[0].size < _ROW_LOOP_MIN_SIZE:  # small (one env's block): one call is cheaper
        index = rewards.argmax(axis=0)  # the same first maximum for finite rewards
        if np.isnan(rewards).any():
            index[np.isnan(rewards).any(axis=0)] = -1
        return index
    ws = _fresh if scratch is None else scratch
    best = ws("oracle.best", shape)
    best[...] = rewards[0]
    index = np.zeros(shape, dtype=np.int64)
    better = ws("oracle.better", shape, bool)
    at = ws("oracle.at", shape, np.int64)
    for j in range(1, len(rewards)):
        np.greater(rewards[j], best, out=better)
        np.multiply(better, j, out=at)
        np.maximum(index, at, out=index)
        np.maximum(best, rewards[j], out=best)  # NaN propagates: caught below
    if np.isnan(best).any():
        index[np.isnan(rewards).any(axis=0)] = -1
    return index
