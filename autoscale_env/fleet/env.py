"""The fleet as a PettingZoo ``ParallelEnv`` (needs the ``[fleet]`` extra: pettingzoo)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from pettingzoo import ParallelEnv

from autoscale_env.world.types import MAX_EPISODE_STEPS
from autoscale_env.world.actions import check_action, check_open, check_reset_options
from autoscale_env.world.errors import InvalidActionError, UnknownNameError
from autoscale_env.fleet.core import FleetCore
from autoscale_env.fleet.env_args import make_core

_INFO_KEYS = ("latency_ms", "energy_mj", "accuracy", "qos_met", "accuracy_met", "co_cpu_pct",
              "co_mem_pct", "rssi_wifi_dbm", "rssi_p2p_dbm", "upload_extra_ms", "edge_wait_ms",
              "oracle_action")
_LINKS = {-1: "none", 0: "access_point", 1: "wifi_direct"}


class FleetParallelEnv(ParallelEnv):
    """Many phones, one edge device and one Wi-Fi access point: AutoScale with contention.

    ## Description

    N phones (agents ``phone_0`` ... ``phone_{N-1}``), each with its own device profile, scenario,
    setting and random world exactly as in AutoScale-v0, decide at the same moment where their next
    DNN inference runs. What they share (rules and sources: ``autoscale_env/data/fleet.toml``):

    * the Wi-Fi access point: the phones that upload to the cloud in the same round share its
      airtime (802.11 equal throughput, Heusse et al. 2003, with Bianchi's collision overhead);
    * the edge device: phones that offload to it share its Wi-Fi Direct channel the same way, then
      queue at the processor they asked for (FIFO by default, or processor sharing), with the edge
      profile's service times;
    * the cloud only through the access point.

    One step is one round: each phone's request, run where it chose, with the extra upload time
    and edge wait the others cause added to its own latency (and the extra radio and waiting time
    to its energy). A phone alone sees exactly AutoScale-v0 (``num_phones=1`` equals
    ``gym.make("AutoScale-v0")`` step for step on the same seed).

    ## Action Space

    Per agent ``Discrete(n_targets)`` of its device, in the profile's order, as AutoScale-v0.

    ## Observation Space

    Per agent the paper's ``MultiDiscrete`` state of its own pending request (AutoScale-v0's
    table). With ``load_signal=True`` two more entries: how many phones used the edge device and the
    access point in the previous round, binned by ``fleet.toml`` ``[load_signal] edges`` (default
    0 / 1-3 / 4-15 / 16+).

    ## Rewards

    AutoScale-v0's reward of each phone's own request, on its contended latency and energy.

    ## Episode End

    Never terminates; every agent is truncated after ``max_episode_steps`` rounds (100).

    ## Information

    Per agent, for the request just executed: AutoScale-v0's keys (``latency_ms``, ``energy_mj``,
    ``accuracy``, ``qos_met``, ``accuracy_met``, ``target``, ``network``, context, ``energy_source``,
    ``error``, ``oracle_action``: the best target for the *next* request if it ran alone), plus
    ``upload_extra_ms`` (upload time the others added), ``edge_wait_ms`` (queueing at the edge) and
    ``shared_link`` (``none``, ``access_point``, ``wifi_direct``).

    ## Arguments

    See :func:`autoscale_env.fleet.parallel_env`.
    """

    metadata = {"render_modes": [], "name": "autoscale_fleet_v0", "is_parallelizable": True}

    def __init__(self, core: FleetCore, max_episode_steps: int | None = MAX_EPISODE_STEPS,
                 render_mode: str | None = None):
        if render_mode is not None:
            raise UnknownNameError("render_mode", render_mode, ["None (no rendering)"])
        self.render_mode = None
        self.core = core
        self.max_episode_steps = max_episode_steps
        self.possible_agents = [f"phone_{k}" for k in range(core.n_phones)]
        self.agents: list[str] = []
        self._index = {a: k for k, a in enumerate(self.possible_agents)}
        self._obs_spaces = {a: gym.spaces.MultiDiscrete(core.nvec) for a in self.possible_agents}
        self._act_spaces = {a: gym.spaces.Discrete(int(n))
                            for a, n in zip(self.possible_agents, core.n_targets)}
        self._names = [[str(t) for t in ts] for ts in core.targets]
        self._networks = [w.name for w in core.workloads]
        self._n_targets = [int(n) for n in core.n_targets]
        self._t = 0
        self._closed = False

    def observation_space(self, agent: str) -> gym.spaces.MultiDiscrete:
        """The agent's observation space (see the class doc)."""
        return self._obs_spaces[agent]

    def action_space(self, agent: str) -> gym.spaces.Discrete:
        """The agent's action space: one action per target of its device."""
        return self._act_spaces[agent]

    #: Keys ``reset(options=...)`` understands (none, as AutoScale-v0); any other key is refused.
    RESET_OPTIONS: tuple[str, ...] = ()

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start every phone's episode; ``seed`` fixes the whole run.

        Refuses unknown ``options`` keys and a closed env exactly as AutoScale-v0 does.
        """
        check_reset_options(options, self.RESET_OPTIONS)
        check_open(self._closed, "reset()", "fleet env")
        obs, ctx = self.core.reset(seed)
        self.agents = list(self.possible_agents)
        self._t = 0
        nets = self._networks
        infos = {a: {"network": nets[int(ctx["network"][k])],
                     **{key: ctx[key][k].item() for key in ("co_cpu_pct", "co_mem_pct",
                                                            "rssi_wifi_dbm", "rssi_p2p_dbm",
                                                            "oracle_action")}}
                 for k, a in enumerate(self.agents)}
        return {a: obs[k] for k, a in enumerate(self.agents)}, infos

    def step(self, actions: dict[str, int]):
        """One round: every live agent's action is required, each checked as AutoScale-v0 checks
        its action (:func:`~autoscale_env.world.actions.check_action`)."""
        check_open(self._closed, "step()", "fleet env")
        if not self.agents:
            raise RuntimeError("every agent is done; call reset()")
        if not isinstance(actions, dict):
            raise InvalidActionError(f"actions must be a dict agent -> action, got "
                                     f"{type(actions).__name__}")
        missing = [a for a in self.agents if a not in actions]
        unknown = [a for a in actions if a not in self._index]
        if missing or unknown:
            raise InvalidActionError(f"step() needs one action per live agent; missing {missing[:5]}"
                                     f"{' ...' if len(missing) > 5 else ''}, unknown {unknown[:5]}")
        a = np.array([check_action(actions[x], n, names, f"phone {k}: ") for k, (x, n, names)
                      in enumerate(zip(self.possible_agents, self._n_targets, self._names))],
                     dtype=np.int64)
        obs, rewards, info = self.core.step(a)
        self._t += 1
        truncated = self.max_episode_steps is not None and self._t >= self.max_episode_steps
        agents = self.agents
        cols = {key: info[key].tolist() for key in _INFO_KEYS}
        nets, sources = self._networks, self.core.energy_sources
        infos = {}
        for k, x in enumerate(agents):
            d = {key: cols[key][k] for key in _INFO_KEYS}
            d["target"] = self._names[k][int(a[k])]
            d["network"] = nets[int(info["network"][k])]
            d["energy_source"] = sources[k]
            d["error"] = ""
            d["shared_link"] = _LINKS[int(info["link"][k])]
            infos[x] = d
        r = rewards.tolist()
        out = ({x: obs[k] for k, x in enumerate(agents)}, {x: r[k] for k, x in enumerate(agents)},
               {x: False for x in agents}, {x: truncated for x in agents}, infos)
        if truncated:
            self.agents = []
        return out

    def render(self) -> None:
        """Nothing to render."""
        return None

    def close(self) -> None:
        """Close the phones' backends; a later ``reset`` or ``step`` is refused."""
        if not self._closed:
            self.core.close()
        self._closed = True


def parallel_env(num_phones: int = 1, device: str | Sequence[str] | None = None,
                 scenario: str | Sequence[str] | None = None,
                 setting: str | Sequence[str] | None = None, *, mix: str | None = None,
                 reward: str = "energy", features: str | None = None, load_signal: bool = False,
                 fleet_config: str | None = None, sharing: str | None = None,
                 discipline: str | None = None, p2p_shares_ap_channel: bool | None = None,
                 max_episode_steps: int | None = MAX_EPISODE_STEPS, backend: str = "sim",
                 backend_options: dict[str, Any] | None = None,
                 render_mode: str | None = None) -> FleetParallelEnv:
    """Make the fleet environment (a PettingZoo ``ParallelEnv``).

    | argument        | default           | description |
    |-----------------|-------------------|-------------|
    | `num_phones`    | 1                 | N, the number of phones (agents) |
    | `device`        | `"mi8pro"`        | one name for all phones, or one per phone |
    | `scenario`      | `"non_streaming"` | one name, or one per phone |
    | `setting`       | `"dynamic"`       | one name, or one per phone |
    | `mix`           | None              | a `[mixes.<name>]` of `fleet.toml` instead of the three above |
    | `reward`        | `"energy"`        | reward preset, as AutoScale-v0 |
    | `features`      | None              | state bins, as AutoScale-v0 |
    | `load_signal`   | False             | append the binned edge and access-point load of the previous round |
    | `fleet_config`  | None              | path of another `fleet.toml` |
    | `sharing`, `discipline`, `p2p_shares_ap_channel` | file | override those rules of `fleet.toml` |
    | `max_episode_steps` | 100           | rounds until every agent is truncated (None: never) |
    | `backend`, `backend_options` | `"sim"` | each phone's world, as AutoScale-v0 |
    """
    core = make_core(num_phones, device, scenario, setting, mix=mix, reward=reward,
                     features=features, load_signal=load_signal, fleet_config=fleet_config,
                     sharing=sharing, discipline=discipline,
                     p2p_shares_ap_channel=p2p_shares_ap_channel, backend=backend,
                     backend_options=backend_options)
    return FleetParallelEnv(core, max_episode_steps=max_episode_steps, render_mode=render_mode)
