"""The reward [reconstructed] (SPEC section 5), computed from measurements on the frontend so that
changing it never touches a backend. See ``data/rewards.toml`` for the formula and presets."""

from __future__ import annotations

import numpy as np

from autoscale_env.config import RewardPreset


def reward(preset: RewardPreset, *, latency_ms: np.ndarray, energy_mj: np.ndarray,
           accuracy: np.ndarray, reference_energy_mj: np.ndarray, qos_ms: float,
           accuracy_target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(reward, qos_met, accuracy_met) for outcomes; all arrays broadcast together.

    A request that meets both targets always scores above one that misses either, because a
    met request's penalty is capped at ``violation_penalty`` and a missed one starts there.
    Unknown outcomes (NaN) give NaN rewards and ``False`` flags.
    """
    qos_met = latency_ms <= qos_ms
    accuracy_met = accuracy >= accuracy_target - 1e-12
    ratio = energy_mj / reference_energy_mj
    c = preset.violation_penalty
    missed = (c + ratio
              + preset.latency_weight * np.maximum(0.0, latency_ms / qos_ms - 1.0)
              + preset.accuracy_weight * np.maximum(0.0, accuracy_target - accuracy) * 100.0)
    value = np.where(qos_met & accuracy_met, -np.minimum(ratio, c), -missed)
    return value, qos_met, accuracy_met


def oracle_actions(rewards: np.ndarray) -> np.ndarray:
    """Best action per row of an (n, n_targets) reward matrix; ties go to the lowest index.

    Rows with no known outcome (all NaN) get -1.
    """
    filled = np.where(np.isnan(rewards), -np.inf, rewards)
    best = filled.argmax(axis=1)
    return np.where(np.isneginf(filled.max(axis=1)), -1, best)
