"""The observation: the paper's state features, binned as ``features.toml`` says."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from autoscale_env.config import WORKLOAD_FIELDS, FeatureSpec
from autoscale_env.core import RequestBlock, Workload


def bin_values(spec: FeatureSpec, values: np.ndarray) -> np.ndarray:
    """Bin raw ``values`` of one feature (see ``features.toml`` for the edge semantics)."""
    edges = np.asarray(spec.edges)
    if spec.descending:
        return len(edges) - np.searchsorted(edges, values, side="left")
    return np.searchsorted(edges, values, side="right")


class StateEncoder:
    """Turns requests into ``MultiDiscrete`` observations and observations into table indices.

    Args:
        features: the feature specs (order = observation order).
        workloads: the catalog the requests index into.

    Attributes:
        nvec: bins per feature, the ``MultiDiscrete`` shape.
        n_states: product of ``nvec`` (1024 with the default bins).
    """

    def __init__(self, features: Sequence[FeatureSpec], workloads: Sequence[Workload]):
        self.features = tuple(features)
        self.nvec = np.array([f.n_bins for f in self.features], dtype=np.int64)
        self.n_states = int(np.prod(self.nvec))
        self.names = tuple(f.name for f in self.features)
        # Workload features depend only on the network: bin them once, per workload.
        self._workload_bins = np.zeros((len(workloads), len(self.features)), dtype=np.int64)
        for k, f in enumerate(self.features):
            if f.field in WORKLOAD_FIELDS:
                raw = np.array([getattr(w, f.field) for w in workloads], dtype=float)
                self._workload_bins[:, k] = bin_values(f, raw)
        self._context_features = [
            (k, f) for k, f in enumerate(self.features) if f.field not in WORKLOAD_FIELDS]
        self._strides = np.array(
            [int(np.prod(self.nvec[k + 1:])) for k in range(len(self.nvec))], dtype=np.int64)

    def encode_block(self, block: RequestBlock) -> np.ndarray:
        """Observations of every request in ``block``, shape (n, n_features), int64."""
        obs = self._workload_bins[block.network]
        for k, f in self._context_features:
            obs[:, k] = bin_values(f, getattr(block, f.field))
        return obs

    def flat_index(self, obs: np.ndarray) -> np.ndarray | int:
        """Row-major index of observation(s) into a table of ``n_states`` rows."""
        obs = np.asarray(obs)
        index = obs @ self._strides
        return int(index) if obs.ndim == 1 else index

    def unflatten(self, index: int) -> np.ndarray:
        """Inverse of :meth:`flat_index`."""
        if not 0 <= index < self.n_states:
            raise ValueError(f"state index {index} outside [0, {self.n_states})")
        return np.array(np.unravel_index(index, tuple(self.nvec)), dtype=np.int64)

    def describe(self, obs: np.ndarray) -> dict[str, str]:
        """Human-readable labels of one observation, e.g. ``{"conv": "30-59", ...}``."""
        return {f.name: f.labels[int(v)] for f, v in zip(self.features, obs)}
