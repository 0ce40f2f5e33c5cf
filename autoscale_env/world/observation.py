"""The observation: the paper's state features, binned as ``features.toml`` says."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from autoscale_env.world.config import WORKLOAD_FIELDS, FeatureSpec
from autoscale_env.world.errors import ConfigError
from autoscale_env.world.types import RequestBlock, Workload


def bin_values(spec: FeatureSpec, values: np.ndarray) -> np.ndarray:
    """Bin raw ``values`` of one feature (see ``features.toml`` for the edge semantics)."""
    edges = np.asarray(spec.edges)
    if spec.descending:
        return len(edges) - np.searchsorted(edges, values, side="left")
    return np.searchsorted(edges, values, side="right")


class Binner:
    """``table[np.searchsorted(edges, x, side)]`` for fixed sorted ``edges``, fast on big arrays.

    ``np.searchsorted`` costs about 10-16 ns per element. When every edge is a multiple of a
    power of two ``q`` (whole dBm, half percent, ...), the count of edges below ``x`` depends only
    on ``floor(x / q)`` (``ceil`` for ``side="left"``), so big arrays take a scaled floor, a clip
    and one table look-up instead. Both ways give the same integers for every float64 input
    (NaN and +-inf included), so which one runs never changes a result.

    Args:
        edges: sorted bin edges.
        side: as for ``np.searchsorted``.
        table: value per count (``len(edges) + 1`` entries); default the count itself.
    """

    #: Arrays at least this big take the look-up path (below it numpy's per-call cost wins).
    MIN_SIZE = 1024

    def __init__(self, edges, side: str = "right", table=None):
        self.edges = np.asarray(edges, dtype=float)
        self.side = side
        n = len(self.edges)
        self.table = np.arange(n + 1) if table is None else np.asarray(table)
        self._grid = None
        for k in range(9):
            q = 2.0 ** -k
            g = self.edges / q  # exact: q is a power of two
            if n and np.all(g == np.floor(g)) and g[-1] - g[0] <= 1 << 16:
                first = g[0] - 1.0  # grid point j = first + i holds count(edges <= j * q)
                grid = (first + np.arange(int(g[-1] - first) + 1)) * q
                counts = np.searchsorted(self.edges, grid, side="right")
                self._grid = (1.0 / q, first, self.table[counts], float(len(grid) - 1))
                break

    def __call__(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        if self._grid is None or x.size < self.MIN_SIZE:
            return self.table.take(np.searchsorted(self.edges, x, side=self.side), out=out,
                                   mode="clip" if out is not None else "raise")
        inv_q, first, table, last = self._grid
        t = np.multiply(x, inv_q)
        if self.side == "right":
            np.floor(t, out=t)
        else:  # count(e < x) = count(e <= (ceil(x / q) - 1) * q)
            np.ceil(t, out=t)
            t -= 1.0
        t -= first
        np.fmin(t, last, out=t)  # NaN and +inf -> last, as searchsorted puts them
        np.fmax(t, 0.0, out=t)
        return table.take(t.astype(np.intp), out=out, mode="clip")


#: Most states a feature set may define. Tabular agents keep a row and an index entry per state
#: (a few hundred bytes each, with the default 9 targets), so 2**20 states cost ~300 MB; and
#: ``flat_index`` (int64) could not overflow below 2**63 anyway. The paper's bins give 1024.
MAX_STATES = 2**20


def check_state_space(bins: Sequence[int], what: str = "the features") -> int:
    """The number of states (product of ``bins``, exact), or :class:`ConfigError` above
    :data:`MAX_STATES`, before anything the size of the state space is allocated."""
    import math

    n = math.prod(int(b) for b in bins)
    if n > MAX_STATES:
        raise ConfigError(
            f"{what} define {n:.3g} states ({' x '.join(str(int(b)) for b in bins)} bins), over "
            f"the limit of {MAX_STATES} (2**20): a tabular agent's table and index would need "
            f"~{n * 300 / 2**30:.3g} GiB, and past 2**63 a state's index overflows; use fewer "
            f"edges")
    return n


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
        check_state_space([f.n_bins for f in self.features])
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
        # (column, field, binner) of the context features: bin_values' rule as one look-up
        self._context_bins = []
        for k, f in self._context_features:
            n = len(f.edges)
            self._context_bins.append((k, f.field, Binner(
                f.edges, side="left" if f.descending else "right",
                table=n - np.arange(n + 1) if f.descending else None)))
        self._strides = np.array(
            [int(np.prod(self.nvec[k + 1:])) for k in range(len(self.nvec))], dtype=np.int64)

    def encode_block(self, block: RequestBlock) -> np.ndarray:
        """Observations of every request in ``block``, shape (n, n_features), int64."""
        return self.encode(block.network, **{f.field: getattr(block, f.field)
                                             for _, f in self._context_features})

    def encode(self, network: np.ndarray, out: np.ndarray | None = None,
               **context: np.ndarray) -> np.ndarray:
        """Observations of requests given as arrays of any (common) shape ``s``.

        Args:
            network: workload indices, shape ``s``.
            out: optional int64 array of shape ``s + (n_features,)`` to fill.
            **context: the raw context columns the features bin (``co_cpu_pct``, ...), shape ``s``.

        Returns:
            int64 array of shape ``s + (n_features,)`` (``out`` when given).
        """
        obs = self._workload_bins.take(network, axis=0, out=out, mode="clip" if out is not None
                                       else "raise")
        for k, field, binner in self._context_bins:
            obs[..., k] = binner(context[field])
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
