"""The reward formula [reconstructed] (SPEC section 5), computed from measurements on the frontend so
that changing it never touches a backend. See ``data/rewards.toml`` for the formula and presets.

Callers use it through :class:`autoscale_env.world.rules.Scorer` (and :func:`autoscale_env.world.rules.oracle_actions`
for the best target), which binds it to a scenario, a catalog and ``E_ref``."""

from __future__ import annotations

import numpy as np

from autoscale_env.world.config import RewardPreset


def reward(preset: RewardPreset, *, latency_ms: np.ndarray, energy_mj: np.ndarray,
           accuracy: np.ndarray, reference_energy_mj: np.ndarray, qos_ms: float,
           accuracy_target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(reward, qos_met, accuracy_met) for outcomes; all arrays broadcast together.

    A request that meets both targets always scores above one that misses either, because a
    met request's penalty is capped at ``violation_penalty`` and a missed one starts there.
    Unknown outcomes (NaN) give NaN rewards and ``False`` flags.
    """
    accuracy_met, accuracy_penalty = accuracy_terms(preset, accuracy=accuracy,
                                                    accuracy_target=accuracy_target)
    value, qos_met = reward_from_terms(
        preset, latency_ms=latency_ms, energy_mj=energy_mj,
        reference_energy_mj=reference_energy_mj, qos_ms=qos_ms, accuracy_met=accuracy_met,
        accuracy_penalty=accuracy_penalty)
    return value, qos_met, accuracy_met


def accuracy_terms(preset: RewardPreset, *, accuracy: np.ndarray,
                   accuracy_target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(accuracy_met, accuracy_penalty) of :func:`reward`.

    They depend only on accuracy, which the simulator fixes per (network, target), so a caller
    can tabulate them once and pass look-ups to :func:`reward_from_terms` (elementwise, so the
    result is bit-identical to :func:`reward`).
    """
    accuracy_met = accuracy >= accuracy_target - 1e-12
    penalty = preset.accuracy_weight * np.maximum(0.0, accuracy_target - accuracy) * 100.0
    return accuracy_met, penalty


def reward_from_terms(preset: RewardPreset, *, latency_ms: np.ndarray, energy_mj: np.ndarray,
                      reference_energy_mj: np.ndarray, qos_ms: float, accuracy_met: np.ndarray,
                      accuracy_penalty: np.ndarray, scratch=None) -> tuple[np.ndarray, np.ndarray]:
    """(reward, qos_met) from outcomes and the :func:`accuracy_terms`.

    Args:
        scratch: optional ``scratch(name, shape, dtype)`` returning a reusable array; the results
            are then scratch arrays too (the native vector env avoids allocating big temporaries
            this way). The arithmetic is the same either way, operation for operation.
    """
    shape = np.broadcast_shapes(np.shape(latency_ms), np.shape(energy_mj),
                                np.shape(reference_energy_mj), np.shape(accuracy_met),
                                np.shape(accuracy_penalty))
    if scratch is None:
        def scratch(name, shape, dtype=float):
            return np.empty(shape, dtype)
    c = preset.violation_penalty
    ratio = np.divide(energy_mj, reference_energy_mj, out=scratch("reward.ratio", shape, float))
    late = np.divide(latency_ms, qos_ms, out=scratch("reward.late", shape, float))
    late -= 1.0
    np.maximum(late, 0.0, out=late)
    late *= preset.latency_weight
    value = np.add(ratio, c, out=scratch("reward.value", shape, float))  # c + ratio
    value += late
    value += accuracy_penalty
    np.negative(value, out=value)  # -missed
    qos_met = np.less_equal(latency_ms, qos_ms, out=scratch("reward.qos", shape, bool))
    met = np.logical_and(qos_met, accuracy_met, out=scratch("reward.met", shape, bool))
    np.minimum(ratio, c, out=ratio)
    np.negative(ratio, out=ratio)
    select(met, ratio, value, scratch("reward.mask", shape, np.int64))  # met: -min(ratio, c)
    return value, qos_met


def select(mask: np.ndarray, a: np.ndarray, b: np.ndarray, work: np.ndarray) -> np.ndarray:
    """``b[...] = np.where(mask, a, b)`` for float64 arrays of one shape, bit for bit (NaN and
    inf included), by bitwise selection: several times faster than ``np.copyto(where=)`` or
    ``np.where`` on large arrays. ``a`` is overwritten; ``work`` is an int64 array of the shape.
    """
    np.subtract(0, mask, out=work, dtype=np.int64, casting="unsafe")  # all ones where mask
    ai, bi = a.view(np.int64), b.view(np.int64)
    np.bitwise_xor(ai, bi, out=ai)
    ai &= work
    bi ^= ai
    return b
