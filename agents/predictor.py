"""A prediction-based placement baseline in the style of Neurosurgeon (Kang et al., ASPLOS 2017).

Instead of learning values of actions, it learns *models of the world*: per target, regressions of
latency and energy from the raw context, then places each request on the cheapest target predicted
to meet both the latency target (QoS) and the accuracy target. It needs ``obs_mode="extended"``
(the harness makes its envs so).

Features of a request (its raw context: layer counts, co-running load, both RSSIs; MACs are not
in the observation, so they are not used):

* the network's layer-count signature ``(conv, fc, rc)`` as a one-hot over the signatures seen
  while fitting (a per-network intercept: what Neurosurgeon's per-layer-type models sum to when
  only the network is known), plus ``log1p`` of the three counts for signatures never seen;
* co-running load: ``cpu``, ``cpu^2``, ``mem``, ``mem^2`` (fractions);
* both links' RSSI through hinge functions ``max(0, t - rssi) / 10`` at ``t`` = -50 ... -90 dBm
  (goodput and retransmissions are step functions of RSSI; hinges let a linear model follow them).

Per target, log latency and log energy are fitted by ridge regression with the penalty chosen by
efficient leave-one-out cross-validation (scikit-learn's ``RidgeCV``). Log space because co-running
load scales on-device time multiplicatively and because remote latency is heavy-tailed over RSSI
(from ~10 ms to a 1 s timeout): fitted in linear space, the few slow requests dominate the squares
and the typical request is mispredicted by 100 % and more; in log space the median error is ~15 %.
The fitted coefficients are stacked into one matrix, so a decision is one matrix-vector product.

Fitting data: the first ``n_fit`` requests of :meth:`PredictorAgent.learn`, run round-robin over the
targets (each target is profiled on ``n_fit / n_targets`` requests), as a profiling phase would;
with ``fit_source="counterfactual"`` every target's outcome of each of those requests is used, as
when fitting on a recorded trace that holds every target's outcome. Accuracy is profiled, not
regressed: a target meets the accuracy target for a signature when it did in most fitting samples.
After fitting the model is frozen (Neurosurgeon profiles once): later requests only act.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from agents.bandits import BanditAgent, check_range
from autoscale_env.world.errors import DependencyMissing, ModelFileError

#: RSSI hinge points (dBm) of the link features.
HINGES_DBM = np.array([-50.0, -60.0, -65.0, -70.0, -75.0, -80.0, -85.0, -90.0])
FIT_SOURCES = ("online", "counterfactual")
#: Candidate ridge penalties for ``RidgeCV`` (its leave-one-out picks one per model).
RIDGE_ALPHAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


@dataclass(frozen=True)
class PredictorConfig:
    """Hyperparameters of ``predictor``."""

    n_fit: int = 2000
    """Requests of the profiling phase at the start of ``learn``."""
    latency_margin: float = 0.1
    """Predicted latency must be <= QoS * (1 - margin): headroom for prediction error and noise."""
    fit_source: str = "online"
    """``online`` (only the executed target's outcome) or ``counterfactual`` (every target's)."""

    def __post_init__(self) -> None:
        if isinstance(self.n_fit, bool) or not isinstance(self.n_fit, int) or self.n_fit < 1:
            raise ValueError(f"predictor hyperparameter n_fit must be an integer >= 1, got "
                             f"{self.n_fit!r}")
        check_range(self, "latency_margin", 0.0, 0.99)
        if self.fit_source not in FIT_SOURCES:
            raise ValueError(f"predictor hyperparameter fit_source must be one of "
                             f"{', '.join(FIT_SOURCES)}, got {self.fit_source!r}")


class PredictorAgent(BanditAgent):
    """Neurosurgeon-style: predict every target's latency and energy, take the cheapest feasible.

    Args:
        env: an AutoScale-v0 env with ``obs_mode="extended"``.
        seed: seeds the env's first reset (the agent itself draws nothing).
        n_fit, latency_margin, fit_source: see :class:`PredictorConfig`.
    """

    name = "predictor"
    config_class = PredictorConfig
    env_kwargs = {"obs_mode": "extended"}
    _arrays = ("signatures", "weights", "intercepts", "log_space", "accuracy_ok")

    def __init__(self, env: gym.Env, seed: int = 0, **hyperparameters: Any):
        super().__init__(env, seed, **hyperparameters)
        u = env.unwrapped
        self.qos_ms = float(u.scenario.qos_ms)
        self.is_local = np.array([t.is_local for t in u.targets])
        K = self.n_actions
        # fitted model (empty until fit): per target rows [latency, energy]
        self.signatures = np.zeros((0, 3), dtype=np.int64)
        self.weights = np.zeros((2, K, 0))
        self.intercepts = np.zeros((2, K))
        self.log_space = np.ones((2, K), dtype=bool)
        self.accuracy_ok = np.ones((0, K), dtype=bool)
        self._sig_index: dict[tuple[int, int, int], int] = {}
        self._base: dict[tuple[int, int, int], np.ndarray] = {}  # see _predict_one
        self._samples: list[tuple[np.ndarray, int, float, float, bool]] = []
        self._pending: dict[str, np.ndarray] | None = None
        # network -> accuracy target (for fit_source="counterfactual", as the env scores it)
        self._accuracy_target = {w.name: w.accuracy["fp32"] - u.scenario.accuracy_tolerance
                                 for w in u.workloads}

    def _check_observation_space(self, space: gym.Space) -> None:
        if not isinstance(space, gym.spaces.Dict):
            raise ValueError("predictor needs obs_mode='extended' (the raw context); make the env "
                             "with gym.make('AutoScale-v0', obs_mode='extended')")

    @property
    def fitted(self) -> bool:
        """True once the regressions have been fitted."""
        return self.weights.shape[-1] > 0

    # -- features -------------------------------------------------------------------------------

    def features(self, raw: np.ndarray) -> np.ndarray:
        """Regression features of raw contexts ``(n, 7)`` -> ``(n, n_features)`` (module docstring)."""
        raw = np.atleast_2d(np.asarray(raw, dtype=np.float64))
        n, S = len(raw), len(self.signatures)
        onehot = np.zeros((n, S))
        for i, sig in enumerate(map(tuple, raw[:, :3].astype(np.int64).tolist())):
            k = self._sig_index.get(sig)
            if k is not None:
                onehot[i, k] = 1.0
        cpu, mem = raw[:, 3:4] / 100.0, raw[:, 4:5] / 100.0
        hinges = np.maximum(HINGES_DBM - raw[:, 5:7, None], 0.0).reshape(n, -1) / 10.0
        return np.hstack([onehot, np.log1p(raw[:, :3]), cpu, cpu ** 2, mem, mem ** 2, hinges])

    def predict_outcomes(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predicted ``(latency_ms, energy_mj)`` of every target, each ``(n, n_targets)``."""
        if not self.fitted:
            raise RuntimeError("predictor is not fitted yet: call learn() (its first n_fit "
                               "requests profile the targets) or load() a fitted model")
        x = self.features(raw)
        y = np.einsum("qkf,nf->qnk", self.weights, x) + self.intercepts[:, None, :]
        y = np.where(self.log_space[:, None, :], np.exp(np.minimum(y, 50.0)), y)
        return y[0], y[1]

    def _predict_one(self, raw) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`predict_outcomes` of one context, fast: the per-network part of the linear
        predictor is computed once per signature, the rest is one small matrix product."""
        key = (int(raw[0]), int(raw[1]), int(raw[2]))
        base = self._base.get(key)
        if base is None:
            x = self.features(np.array([[*key, 0.0, 0.0, 0.0, 0.0]]))[0]
            S = len(self.signatures)
            head = x[:S + 3]
            base = self.weights[:, :, :S + 3] @ head + self.intercepts  # (2, K)
            self._base[key] = base
            self._rest = self.weights[:, :, S + 3:].reshape(-1, self.weights.shape[-1] - S - 3)
        c, m = float(raw[3]) / 100.0, float(raw[4]) / 100.0
        z = np.concatenate(([c, c * c, m, m * m],
                            np.maximum(HINGES_DBM - float(raw[5]), 0.0) / 10.0,
                            np.maximum(HINGES_DBM - float(raw[6]), 0.0) / 10.0))
        y = (self._rest @ z).reshape(base.shape)
        y += base
        y = np.where(self.log_space, np.exp(np.minimum(y, 50.0)), y)
        return y[0], y[1]

    # -- deciding -------------------------------------------------------------------------------

    def _key(self, obs):
        try:
            return obs["raw"]
        except (TypeError, KeyError, IndexError):
            raise ValueError(f"predictor needs an extended observation with 'raw', got {obs!r}") \
                from None

    def _act(self, raw, explore: bool) -> int:
        if not self.fitted:  # profiling phase: round-robin over the targets
            if self.config.fit_source == "counterfactual":
                # every target's outcome of the request about to run (read before it runs)
                self._pending = self.env.unwrapped.counterfactuals()
                if self._pending is None:
                    raise ValueError("fit_source='counterfactual' needs a backend that knows "
                                     "every target's outcome (sim, full traces)")
            return self.num_timesteps % self.n_actions
        latency, energy = self._predict_one(raw)
        sig = self._sig_index.get((int(raw[0]), int(raw[1]), int(raw[2])))
        acc_ok = self.accuracy_ok[sig] if sig is not None else self.accuracy_ok.mean(axis=0) >= 0.5
        feasible = acc_ok & (latency <= self.qos_ms * (1.0 - self.config.latency_margin))
        if feasible.any():
            return int(np.where(feasible, energy, np.inf).argmin())
        # nothing predicted to meet QoS: the fastest target that keeps the accuracy (if any)
        return int(np.where(acc_ok if acc_ok.any() else True, latency, np.inf).argmin())

    def _update(self, raw, a: int, reward: float, info: dict[str, Any],
                next_observation: Any = None, terminated: bool = False) -> None:
        if self.fitted:
            return
        raw = np.array(raw, dtype=np.float64)
        if self.config.fit_source == "online":
            self._samples.append((raw, a, info["latency_ms"], info["energy_mj"],
                                  bool(info["accuracy_met"])))
        else:
            cf, threshold = self._pending, self._accuracy_target[info["network"]]
            self._samples += [(raw, k, float(cf["latency_ms"][k]), float(cf["energy_mj"][k]),
                               bool(cf["accuracy"][k] >= threshold)) for k in range(self.n_actions)]
        if len(self._samples) >= self._n_wanted():
            self.fit()

    def _n_wanted(self) -> int:
        n = self.config.n_fit
        return n * self.n_actions if self.config.fit_source == "counterfactual" else n

    def _after_learn(self) -> None:
        # a learn() shorter than the profiling phase still leaves a usable model
        if not self.fitted and len({s[1] for s in self._samples}) == self.n_actions:
            self.fit()

    # -- fitting --------------------------------------------------------------------------------

    def fit(self) -> None:
        """Fit the per-target regressions on the collected samples (needs every target sampled)."""
        try:
            from sklearn.linear_model import RidgeCV
        except ImportError:
            raise DependencyMissing("scikit-learn", "baselines", "the predictor agent") from None

        if not self._samples:
            raise RuntimeError("predictor has no samples to fit")
        raw = np.stack([s[0] for s in self._samples])
        action = np.array([s[1] for s in self._samples])
        y = np.array([[s[2], s[3]] for s in self._samples])
        acc = np.array([s[4] for s in self._samples])
        missing = sorted(set(range(self.n_actions)) - set(action.tolist()))
        if missing:
            raise RuntimeError(f"predictor cannot fit: no samples of target(s) "
                               f"{[self.target_names[a] for a in missing]}")
        sigs = sorted(set(map(tuple, raw[:, :3].astype(np.int64).tolist())))
        self.signatures = np.array(sigs, dtype=np.int64).reshape(-1, 3)
        self._sig_index = {s: i for i, s in enumerate(sigs)}
        self._base = {}
        x = self.features(raw)
        K, F = self.n_actions, x.shape[1]
        self.weights = np.zeros((2, K, F))
        self.intercepts = np.zeros((2, K))
        self.accuracy_ok = np.zeros((len(sigs), K), dtype=bool)
        sig_of = np.array([self._sig_index[s] for s in map(tuple, raw[:, :3].astype(np.int64).tolist())])
        for a in range(K):
            rows = action == a
            for q in range(2):
                target = y[rows, q]
                if self.log_space[q, a]:
                    target = np.log(np.maximum(target, 1e-6))
                model = RidgeCV(alphas=RIDGE_ALPHAS).fit(x[rows], target)
                self.weights[q, a] = model.coef_
                self.intercepts[q, a] = model.intercept_
            for k in range(len(sigs)):
                here = rows & (sig_of == k)
                # an unprofiled (signature, target) pair is assumed to keep the accuracy
                self.accuracy_ok[k, a] = acc[here].mean() >= 0.5 if here.any() else True
        self._samples = []

    # -- persistence ----------------------------------------------------------------------------

    @property
    def hparams(self) -> dict[str, Any]:
        return asdict(self.config)

    def _restore_extra(self, meta: dict[str, Any], path: str) -> None:
        self._sig_index = {tuple(int(v) for v in s): i for i, s in enumerate(self.signatures)}
        self._base = {}

    def _resize_for(self, arrays: dict[str, np.ndarray], path: str) -> None:
        # a fitted model's array sizes depend on the signatures it saw: size the empty model like
        # the file so the shared loader can check and copy every array
        for name in ("signatures", "weights"):
            if name not in arrays or arrays[name].ndim != (2 if name == "signatures" else 3):
                raise ModelFileError(f"{path}: array {name!r} is missing or malformed")
        S, F = len(arrays["signatures"]), arrays["weights"].shape[-1]
        if F != 3 + 4 + 2 * len(HINGES_DBM) + S:
            raise ModelFileError(f"{path}: weights have {F} features, expected "
                                 f"{3 + 4 + 2 * len(HINGES_DBM) + S} for {S} signatures")
        self.signatures = np.zeros((S, 3), dtype=np.int64)
        self.weights = np.zeros((2, self.n_actions, F))
        self.accuracy_ok = np.ones((S, self.n_actions), dtype=bool)
