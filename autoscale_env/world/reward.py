"""The reward formula [reconstructed] (SPEC section 5), computed from measurements on the frontend so
that changing it never touches a backend. See ``data/rewards.toml`` for the formula and presets.

:func:`request_reward` is the formula for one request (compiled); :func:`reward` applies it to
arrays. The envs use it through :class:`autoscale_env.world.rules.Scorer`, which binds it to a
scenario, a catalog and ``E_ref``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from autoscale_env.world.compiled import batch_loop
from autoscale_env.world.config import RewardPreset

#: Slack of the accuracy comparison (accuracies are fractions read from decimal text).
ACCURACY_SLACK = 1e-12


@njit(cache=True, inline="always")
def request_reward(latency_ms: float, energy_mj: float, accuracy: float,
                   reference_energy_mj: float, accuracy_target: float, qos_ms: float,
                   violation_penalty: float, latency_weight: float,
                   accuracy_weight: float) -> tuple[float, bool, bool]:
    """``(reward, qos_met, accuracy_met)`` of one request's outcome.

    Energy first, with the constraints dominating: ``-min(E/E_ref, C)`` when the request meets
    its latency target and its accuracy target, else ``-(C + E/E_ref + latency and accuracy
    shortfalls)``. A request that meets both always scores above one that misses either, because
    a met request's penalty is capped at ``C`` (``violation_penalty``) and a missed one starts
    there. An unknown outcome (NaN latency or energy) scores NaN with ``qos_met`` False.
    """
    accuracy_met = accuracy >= accuracy_target - ACCURACY_SLACK
    if latency_ms != latency_ms or energy_mj != energy_mj:
        return np.nan, False, accuracy_met
    ratio = energy_mj / reference_energy_mj
    qos_met = latency_ms <= qos_ms
    if qos_met and accuracy_met:
        return -min(ratio, violation_penalty), qos_met, accuracy_met
    late = max(0.0, latency_ms / qos_ms - 1.0)
    short = max(0.0, accuracy_target - accuracy) * 100.0
    missed = violation_penalty + ratio + latency_weight * late + accuracy_weight * short
    return -missed, qos_met, accuracy_met


@batch_loop()
def reward_loop(latency_ms, energy_mj, accuracy, reference_energy_mj, accuracy_target, qos_ms,
                weights, reward, qos_met, accuracy_met):
    """:func:`request_reward` of every request: 1-D inputs and outputs of one length, ``weights``
    as :func:`weights` gives them (:func:`reward` is the broadcasting form)."""
    c, w_lat, w_acc = weights
    for k in range(len(reward)):
        reward[k], qos_met[k], accuracy_met[k] = request_reward(
            latency_ms[k], energy_mj[k], accuracy[k], reference_energy_mj[k], accuracy_target[k],
            qos_ms[k], c, w_lat, w_acc)


def weights(preset: RewardPreset) -> tuple[float, float, float]:
    """``(violation_penalty, latency_weight, accuracy_weight)`` of a preset, for the kernels."""
    return (float(preset.violation_penalty), float(preset.latency_weight),
            float(preset.accuracy_weight))


def reward(preset: RewardPreset, *, latency_ms, energy_mj, accuracy, reference_energy_mj,
           qos_ms, accuracy_target) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`request_reward` of every request: ``(reward, qos_met, accuracy_met)``; all
    arguments broadcast together."""
    args = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (
        latency_ms, energy_mj, accuracy, reference_energy_mj, accuracy_target, qos_ms)))
    shape = args[0].shape
    flat = [np.ascontiguousarray(a).reshape(-1) for a in args]
    r = np.empty(flat[0].size)
    qos, acc = np.empty(r.size, dtype=np.bool_), np.empty(r.size, dtype=np.bool_)
    reward_loop(*flat, weights(preset), r, qos, acc)
    return r.reshape(shape), qos.reshape(shape), acc.reshape(shape)
