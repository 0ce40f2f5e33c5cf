"""``backend="live"``: every action really runs the inference, here or on a loopback server.

This host plays the phone (``device="host"``). Its targets:

==================  ==================================================================
``local/cpu/fp32``  PyTorch on this process's CPU threads
``local/cpu/int8``  the same network after PyTorch's post-training INT8 quantization
``local/gpu/*``     CUDA FP32 and FP16, only when CUDA is available
``edge/cpu/fp32``   the ``edge`` server (stands in for the Galaxy Tab S6 over Wi-Fi Direct)
``cloud/cpu/fp32``  the ``cloud`` server (over Wi-Fi); ``cloud/gpu/*`` when it has CUDA
==================  ==================================================================

Servers are ``autoscale serve`` processes. By default the backend starts both on 127.0.0.1 as
children (``server_pids``), or it connects to ``servers={"cloud": "host:port", ...}``.

**Per request** (``next_block`` returns one request, so the context is read right before the
decision): the network is drawn from the scenario's mix with the episode's generator; co-running
CPU and memory use are *measured* (:class:`~.context.SystemMonitor`, our own processes excluded);
RSSI comes from ``/proc/net/wireless`` when the host has Wi-Fi, otherwise from the scenario's
RSSI schedule (the simulator's static or dynamic process, drawn from the same generator). In the
dynamic setting background load generators (:mod:`.load`) follow the simulator's co-running-app
schedule, so the measured load really changes; they are always stopped by :meth:`close`.

**Latency** is the wall time of the request: the forward pass for local targets; for remote ones
the real round trip over a real socket with the real input tensor, stretched in the client to the
goodput and RTT that the link model (:mod:`autoscale_env.world.radio`) gives at the current
RSSI. A link below its disconnection RSSI is not tried: the request fails after the link's
timeout, as in the simulator.

**Energy** (``info["energy_source"]``): ``rapl`` or ``nvml`` when a counter is readable (local
targets only; a remote request's phone energy is radio and base power, which no host counter
measures); otherwise ``model``: the utilisation-based power model of the ``power_profile`` phone
(default ``mi8pro``) fed with the *measured* busy time (process CPU time per thread) and wall
time, and the radio model for transfers. The host's own watts are not a phone's; the model says
what the phone would spend on the host's measured timings.

**Accuracy** is the catalog's published figure for the network at the precision that ran (the
models' weights are seeded, not trained). A failed request has ``error`` set and the energy of
the attempt: a link below its disconnection RSSI gives the simulator's timeout outcome; a server
that is dead, slow or refusing gives accuracy NaN (no answer; a recording skips such requests).

``reference_energy_mj`` (``E_ref`` of the reward) is measured at start-up: the median modelled or
metered energy of ``local/cpu/fp32`` over ``calibration_runs`` runs per network in the mix, before
any load generator starts. Networks outside the mix get NaN (no request names them).
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import sys
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from autoscale_env import version

from autoscale_env.world import config
from autoscale_env.world import radio
from autoscale_env.backends.live import models
from autoscale_env.backends.live.client import RemoteClient, RemoteError
from autoscale_env.backends.live.context import SystemMonitor, wireless_rssi_dbm
from autoscale_env.backends.live.energy import available_meter
from autoscale_env.backends.live.executor import InferenceEngine, cuda_available
from autoscale_env.backends.live.load import CpuLoad, MemoryLoad
from autoscale_env.backends.live.server import ROLES, ServerProcess
from autoscale_env.world.types import Outcome, RequestBlock, Target, Workload
from autoscale_env.world.errors import BackendUnavailable, UnknownNameError

__all__ = ["HOST_DEVICE", "LiveBackend"]

log = logging.getLogger(__name__)

#: The one device the live backend drives: this host.
HOST_DEVICE = "host"
METERS = ("auto", "model", "rapl", "nvml")
RSSI_SOURCES = ("auto", "schedule")
#: Which link each remote location uses (names in ``links.toml``).
LINK_OF = {"edge": "p2p", "cloud": "wifi"}


class LiveBackend:
    """Real inference on this host and on edge/cloud inference servers (see module docstring).

    Args:
        device: must be ``"host"``.
        scenario: ``non_streaming``, ``streaming`` or ``translation`` (QoS, accuracy tolerance,
            request gap, network mix).
        setting: ``static`` or ``dynamic`` (dynamic starts the background load generators).
        networks: restrict the request mix to these catalog networks (default: the scenario's).
        servers: ``{"edge": "host:port", "cloud": "host:port"}`` of servers started elsewhere;
            roles left out are started here as children on 127.0.0.1.
        remote_gpu: whether the cloud offers ``gpu`` units (default: for a server started here,
            whether CUDA is available; for a given address, False).
        power_profile: phone profile whose power model turns measured times into energy.
        meter: ``auto`` (RAPL/NVML when readable, else the model), ``model``, ``rapl``, ``nvml``.
        rssi: ``auto`` (``/proc/net/wireless`` for Wi-Fi when present, else the schedule),
            ``schedule``, or ``(wifi_dbm, p2p_dbm)`` held fixed (controlled experiments).
        timeout_s: the most one remote request may take before it fails.
        load: start the load generators in the dynamic setting.
        max_memory_load_mb: cap of the memory load generator (the schedule's percentages of this
            host's memory are scaled down to it).
        calibration_runs: runs per network for ``reference_energy_mj``.
        weight_seed: seed of every model's weights (here and on started servers).
        server_threads: torch threads of started servers (0: torch's default).
        start_timeout_s: how long started servers may take to load their models.
        warmup: build and run every local model of the mix once at start-up, so no measured
            request (nor its wall time) pays for building or INT8-quantizing a model; a model
            first built during a request (``warmup=False``) logs that it was a cold start.
        verbose: report start-up on stderr: each server as it starts and is ready (the servers
            report each model they load), each local model as it is built and warmed.
    """

    deterministic = False

    def __init__(self, device: str = HOST_DEVICE, scenario: str = "non_streaming",
                 setting: str = "dynamic", *, networks: Sequence[str] | None = None,
                 servers: Mapping[str, str] | None = None, remote_gpu: bool | None = None,
                 power_profile: str = "mi8pro", meter: str = "auto",
                 rssi: str | tuple[float, float] = "auto",
                 timeout_s: float = 10.0, load: bool = True, max_memory_load_mb: int = 256,
                 calibration_runs: int = 3, weight_seed: int = 0, server_threads: int = 0,
                 start_timeout_s: float = 180.0, warmup: bool = True, verbose: bool = True):
        if device != HOST_DEVICE:
            raise UnknownNameError("device for backend='live'", device, [HOST_DEVICE])
        if meter not in METERS:
            raise UnknownNameError("meter", meter, METERS)
        if isinstance(rssi, str):
            if rssi not in RSSI_SOURCES:
                raise UnknownNameError("rssi", rssi, [*RSSI_SOURCES, "(wifi_dbm, p2p_dbm)"])
        elif len(rssi) != 2 or not all(-120.0 <= float(v) <= 0.0 for v in rssi):
            raise ValueError(f"rssi={rssi!r}: a fixed RSSI is (wifi_dbm, p2p_dbm), each in "
                             f"[-120, 0] dBm")
        servers = dict(servers or {})
        for role in servers:
            if role not in ROLES:
                raise UnknownNameError("server role", role, ROLES)
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.device_name = HOST_DEVICE
        self.scenario = config.get_scenario(scenario)
        self.setting = config.check_setting(setting)
        catalog = config.load_workloads()
        self.workloads: tuple[Workload, ...] = tuple(catalog.values())
        names = [w.name for w in self.workloads]
        mix = tuple(networks) if networks is not None else self.scenario.networks
        for name in mix:
            if name not in names:
                raise UnknownNameError("network", name, names)
        if not mix:
            raise ValueError("networks must name at least one network")
        self.networks = mix
        self._mix = np.array([names.index(n) for n in mix], dtype=np.int64)
        self.power = config.load_device(power_profile)
        if self.power.kind != "phone":  # its processor and radio power model the phone's energy
            raise config.ConfigError(f"{self.power.path}: power_profile must be a phone profile, "
                                     f"got kind {self.power.kind!r}; valid: "
                                     f"{', '.join(config.device_names())}")
        self.links = config.load_links()
        self.timeout_s = float(timeout_s)
        self.max_memory_load_mb = int(max_memory_load_mb)
        self._host_memory_mb = (os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) >> 20
        self.rssi_source = rssi
        self.weight_seed = weight_seed
        self.has_cuda = cuda_available()
        self.verbose = verbose
        t_start = time.perf_counter()

        # Everything that holds a process or socket goes into these lists, which the finalizer
        # (run by close(), garbage collection or interpreter exit) empties.
        self._servers: dict[str, ServerProcess] = {}
        self._loads: list[CpuLoad | MemoryLoad] = []
        self._clients: dict[str, RemoteClient] = {}
        self._finalizer = weakref.finalize(self, _shutdown, self._servers, self._loads,
                                           self._clients)
        try:
            # Servers load their models in their own processes while this one builds its own.
            started = self._start_servers(servers, server_threads, start_timeout_s)
            if remote_gpu is None:
                remote_gpu = self.has_cuda and "cloud" not in servers
            self.targets: tuple[Target, ...] = self._make_targets(remote_gpu)
            self.engine = InferenceEngine(seed=weight_seed)
            self._inputs = {n: models.request_input(n) for n in mix}
            self._warm = warmup
            if warmup:
                self._warm_local_models()
            for server in started:
                server.wait_ready()
                self._say(f"{server.role} server ready on {server.host}:{server.port} "
                          f"(pid {server.pid}, {time.perf_counter() - t_start:.1f} s since start)")
            self.server_addresses = {role: servers.get(role) or "%s:%d" % self._servers[role].address
                                     for role in ROLES}
            for role, address in self.server_addresses.items():
                self._clients[role] = RemoteClient(address, timeout_s=self.timeout_s)
            self._meter = None if meter == "model" else available_meter(
                ("rapl", "nvml") if meter == "auto" else (meter,))
            if meter in ("rapl", "nvml") and self._meter is None:
                raise BackendUnavailable(f"meter={meter!r}: no readable {meter} counter on "
                                         f"this host; use meter='auto' or 'model'")
            self._say(f"calibrating E_ref: local/cpu/fp32 x {max(1, calibration_runs)} runs "
                      f"per network")
            self.reference_energy_mj = self._calibrate(calibration_runs)
            self._monitor = SystemMonitor(own_pids=lambda: self.server_pids.values())
            # The schedule of RSSI and co-running-app levels: the simulator's processes.
            from autoscale_env.backends.sim import SimBackend

            self._schedule = SimBackend(power_profile, scenario, setting)
            if self.setting == "dynamic" and load:
                self._loads += [CpuLoad(0.0, n_procs=os.cpu_count() or 1).start(),
                                MemoryLoad(0).start()]
                self._say("started the CPU and memory load generators (dynamic setting)")
            self._say(f"ready in {time.perf_counter() - t_start:.1f} s: "
                      f"{', '.join(str(t) for t in self.targets)}")
        except BaseException:
            self.close()
            raise
        self._rng: np.random.Generator | None = None
        self._pending: RequestBlock | None = None
        self._pos = 0

    # -- construction ------------------------------------------------------------------------

    def _say(self, message: str) -> None:
        """A start-up report line on stderr (``verbose``), and in the log."""
        log.info("%s", message)
        if self.verbose:
            print(f"autoscale live: {message}", file=sys.stderr, flush=True)

    def _local_units(self) -> list[str]:
        return [f"{t.unit}" for t in self.targets if t.is_local]

    def _warm_local_models(self) -> None:
        """Build and run once every local model of the mix (INT8 quantization takes seconds)."""
        units = self._local_units()
        self._say(f"building {len(self.networks)} network(s) x {len(units)} local unit(s) "
                  f"({', '.join(units)})")
        for name in self.networks:
            for unit in units:
                t0 = time.perf_counter()
                self.engine.load(name, unit)  # built and warmed with one inference
                self.engine.run(name, unit, self._inputs[name])  # the request's own input
                self._say(f"local {name} {unit} built and warmed "
                          f"({time.perf_counter() - t0:.1f} s)")

    def _start_servers(self, given: Mapping[str, str], threads: int,
                       timeout_s: float) -> list[ServerProcess]:
        """Start the servers not ``given``; returns them (call ``wait_ready`` on each)."""
        preload = ",".join(f"{n}@cpu/fp32" for n in self.networks)
        started = []
        for role in ROLES:
            if role in given:
                continue
            extra = ["--seed", str(self.weight_seed), "--preload", preload]
            if threads:
                extra += ["--threads", str(threads)]
            if role == "cloud" and self.has_cuda:
                extra[-1] += "," + ",".join(f"{n}@gpu/fp32,{n}@gpu/fp16" for n in self.networks)
            # Start both, then wait: they load their models in parallel.
            self._say(f"starting the {role} server (loading {extra[extra.index('--preload') + 1]})")
            self._servers[role] = ServerProcess(role, extra_args=extra, wait=False,
                                                start_timeout_s=timeout_s)
            started.append(self._servers[role])
        return started

    def _make_targets(self, remote_gpu: bool) -> tuple[Target, ...]:
        names = ["local/cpu/fp32", "local/cpu/int8"]
        if self.has_cuda:
            names += ["local/gpu/fp32", "local/gpu/fp16"]
        names += ["edge/cpu/fp32", "cloud/cpu/fp32"]
        if remote_gpu:
            names += ["cloud/gpu/fp32", "cloud/gpu/fp16"]
        return tuple(Target.parse(n) for n in names)

    def _calibrate(self, runs: int) -> np.ndarray:
        reference = np.full(len(self.workloads), np.nan)
        cpu = Target.parse("local/cpu/fp32")
        for k in self._mix.tolist():
            energies = [self._run_local(self.workloads[k], cpu).energy_mj
                        for _ in range(max(1, runs))]
            reference[k] = float(np.median(energies))
        return reference

    # -- Backend protocol --------------------------------------------------------------------

    @property
    def server_pids(self) -> dict[str, int]:
        """``{role: pid}`` of the servers this backend started (not of given addresses)."""
        return {role: s.pid for role, s in self._servers.items()}

    @property
    def servers(self) -> dict[str, ServerProcess]:
        """The servers this backend started, by role (for fault tests: ``.kill()``)."""
        return dict(self._servers)

    def reset(self, rng: np.random.Generator) -> None:
        """Start an episode: the schedule restarts from a generator derived from ``rng``."""
        self._rng = rng
        self._schedule.reset(np.random.default_rng(rng.integers(2**63)))
        self._pending, self._pos = None, 0

    def next_block(self) -> RequestBlock:
        """One request, its context read from the system now."""
        if self._rng is None:
            raise RuntimeError("LiveBackend.next_block() called before reset()")
        if self._pending is None or self._pos == len(self._pending):
            self._pending, self._pos = self._schedule.next_block(), 0
        s, i = self._pending, self._pos
        self._pos += 1
        self._follow_schedule(float(s.co_cpu_pct[i]), float(s.co_mem_pct[i]))
        co_cpu, co_mem = self._monitor.sample()
        wifi, p2p = float(s.rssi_wifi_dbm[i]), float(s.rssi_p2p_dbm[i])
        if self.rssi_source == "auto":
            measured = wireless_rssi_dbm()
            wifi = wifi if measured is None else measured
        elif not isinstance(self.rssi_source, str):
            wifi, p2p = (float(v) for v in self.rssi_source)
        network = self._mix[self._rng.integers(len(self._mix))]
        return RequestBlock(network=np.array([network]), co_cpu_pct=np.array([co_cpu]),
                            co_mem_pct=np.array([co_mem]), rssi_wifi_dbm=np.array([wifi]),
                            rssi_p2p_dbm=np.array([p2p]))

    def execute(self, block: RequestBlock, index: int, action: int) -> Outcome:
        """Run request ``index`` of ``block`` on ``targets[action]``; failures become outcomes."""
        if not 0 <= action < len(self.targets):
            raise ValueError(f"action {action} is outside [0, {len(self.targets)})")
        workload = self.workloads[int(block.network[index])]
        target = self.targets[action]
        if target.is_local:
            return self._run_local(workload, target)
        rssi = float(block.rssi_p2p_dbm[index] if target.location == "edge"
                     else block.rssi_wifi_dbm[index])
        return self._run_remote(workload, target, rssi)

    def close(self) -> None:
        """Stop the load generators and the servers started here; close sockets. Idempotent."""
        self._finalizer()

    def provenance(self) -> dict[str, Any]:
        """Where the numbers come from (goes into a recorded trace's header)."""
        return {
            "tools": f"autoscale_env {version.__version__} live backend, torch {torch.__version__}",
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "cuda": self.has_cuda,
            "energy": self._meter.name if self._meter else
            f"model: {self.power.name} power profile on measured times",
            "rssi": self.rssi_source if isinstance(self.rssi_source, str)
            else f"fixed {list(self.rssi_source)} dBm", "networks": list(self.networks),
            "servers": self.server_addresses, "weight_seed": self.weight_seed,
        }

    # -- running requests --------------------------------------------------------------------

    def _run_local(self, workload: Workload, target: Target) -> Outcome:
        name = workload.name
        accuracy = _accuracy(workload, target.precision)
        t0 = time.perf_counter()
        try:
            planned = self.engine.placement(target.unit)
            if (name, planned.device, planned.precision) not in self.engine.loaded():
                # a cold start (warmup=False): its build is excluded from the latency, not from
                # the step's wall time
                self._say(f"cold start: building {name} {target.unit} during this request")
            _, placement = self.engine.load(name, target.unit)  # build time is not request time
            e0 = self._meter.energy_mj() if self._meter else 0.0
            t0 = time.perf_counter()
            result = self.engine.run(name, target.unit, self._inputs[name])
            latency_ms = (time.perf_counter() - t0) * 1e3
            e1 = self._meter.energy_mj() if self._meter else 0.0
        except Exception as e:  # an inference that fails is a failed request, not a crash
            log.warning("%s on %s failed: %s", name, target, e)
            elapsed_ms = (time.perf_counter() - t0) * 1e3
            return Outcome(elapsed_ms, self.power.base_power_w * elapsed_ms, float("nan"), "model",
                           f"{target}: {type(e).__name__}: {e}")
        if self._meter is not None:
            return Outcome(latency_ms, e1 - e0, accuracy, self._meter.name)
        if placement.device == "cuda":
            busy_ms, processor = result.compute_ms, "gpu"
        else:
            busy_ms, processor = result.cpu_ms / max(1, torch.get_num_threads()), "cpu"
        busy_ms = min(latency_ms, busy_ms)
        p = self.power.processors.get(processor) or self.power.processors["cpu"]
        energy = (p.busy_power_w * busy_ms + p.idle_power_w * (latency_ms - busy_ms)
                  + self.power.base_power_w * latency_ms)
        return Outcome(latency_ms, energy, accuracy, "model")

    def _run_remote(self, workload: Workload, target: Target, rssi_dbm: float) -> Outcome:
        """One remote request, its link the link model's own functions (:mod:`.radio`).

        The link's state at ``rssi_dbm`` (:func:`radio.link_state`, goodput noise 1) and
        :func:`radio.offload` with no server time give the time the link adds: the catalog's
        input and output bytes at the goodput, plus the RTT. The client adds exactly that to
        the loopback exchange, so the measured latency is ``link + exchange`` as the
        simulator's is ``link + server``, and ``autoscale calibrate`` reads the server's time
        back as ``latency - link`` with the same functions. The energy is
        :func:`radio.offload`'s for the measured exchange as the server time. A disconnected
        link is :func:`radio.offload`'s timeout outcome, number for number. The phone's
        co-running load (the dynamic setting's generators) is held off while the stand-in
        server computes (:meth:`_remote_quiet`)."""
        name = workload.name
        link = self.links[LINK_OF[target.location]]
        params = radio.link_params(link)
        wifi_w, base_w = float(self.power.wifi_active_w), float(self.power.base_power_w)
        goodput, rtt, tx_w, rx_w = radio.link_state(params, wifi_w, float(rssi_dbm), 1.0)
        up_kbit, down_kbit = workload.input_bytes * 8e-3, workload.output_bytes * 8e-3
        tail_mj = float(radio.tail_energy_mj(params, wifi_w, float(self.scenario.request_gap_ms)))

        def offload(server_ms: float) -> tuple[float, float]:
            return radio.offload(goodput, rtt, tx_w, rx_w, link.timeout_ms, up_kbit, down_kbit,
                                 server_ms, base_w, tail_mj)

        if goodput <= 0.0:
            # The simulator's disconnected link, number for number (a recorded trace keeps the
            # row): the phone transmits until the timeout and gives up.
            latency, energy = offload(0.0)
            return Outcome(latency, energy, _accuracy(workload, target.precision), "model",
                           f"{target}: {link.name} link down at {rssi_dbm:.0f} dBm")
        link_ms = offload(0.0)[0]  # transfer up and down at the goodput, plus the RTT
        t0 = time.perf_counter()
        try:
            with self._remote_quiet():
                result = self._clients[target.location].infer(
                    name, self._inputs[name], target.unit, link_ms=link_ms)
        except RemoteError as e:
            elapsed_ms = (time.perf_counter() - t0) * 1e3
            return Outcome(elapsed_ms, (tx_w + base_w) * elapsed_ms, float("nan"), "model",
                           f"{target}: {e}")
        latency, energy = offload(max(0.0, result.wall_ms - link_ms))
        return Outcome(latency, energy,
                       _accuracy(workload, result.precision or target.precision), "model")

    @contextlib.contextmanager
    def _remote_quiet(self):
        """Hold the CPU load generators off while a stand-in server computes.

        The loopback servers stand in for the tablet and the cloud, other machines that the
        phone's co-running apps do not slow down (the simulator's server time does not depend
        on them). On this host they share the cores with the generators, so the generators
        pause (duty 0, in effect within one period) for the remote request and resume after it;
        the context monitor does not count the paused time, so a request's co-running CPU is
        the load its local inferences ran under. Without generators (static setting, or
        ``load=False``) this does nothing.
        """
        loads = [x for x in self._loads if isinstance(x, CpuLoad) and x.running]
        if not loads:
            yield
            return
        self._monitor.suspend()
        duty = [x.duty_cycle for x in loads]
        try:
            for x in loads:
                x.set_duty_cycle(0.0)
            time.sleep(max(x.period_ms for x in loads) / 1e3)  # a busy phase ends within one
            yield
        finally:
            for x, d in zip(loads, duty):
                x.set_duty_cycle(d)
            self._monitor.resume()

    def _follow_schedule(self, cpu_pct: float, mem_pct: float) -> None:
        """Drive the load generators to the schedule's co-running levels (dynamic setting)."""
        for load in self._loads:
            if isinstance(load, CpuLoad):
                load.set_duty_cycle(min(1.0, cpu_pct / 100.0 * (os.cpu_count() or 1)
                                        / max(1, load.n_procs)))
            else:
                mb = int(min(self.max_memory_load_mb, mem_pct / 100.0 * self._host_memory_mb))
                if abs(mb - load.mb) >= 16:  # resizing touches every page: only real changes
                    load.set_mb(mb)


def _accuracy(workload: Workload, precision: str) -> float:
    """The catalog's accuracy of ``workload`` at the precision that really ran."""
    return float(workload.accuracy.get(precision, workload.accuracy["fp32"]))


def _shutdown(servers: dict[str, ServerProcess], loads: list, clients: dict) -> None:
    """Release everything (the finalizer: close(), garbage collection or interpreter exit)."""
    for client in clients.values():
        client.close()
    clients.clear()
    for load in loads:
        load.stop()
    loads.clear()
    for server in servers.values():
        server.stop()
    servers.clear()
