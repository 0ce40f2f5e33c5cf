"""The observation: the paper's state features, binned as ``features.toml`` says.

:func:`encode_request` bins one request (compiled); :class:`StateEncoder` holds the tables and
encodes arrays of requests with the loop :func:`encode_loop`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from numba import njit

from autoscale_env.world.compiled import batch_loop
from autoscale_env.world.config import WORKLOAD_FIELDS, FeatureSpec
from autoscale_env.world.errors import ConfigError
from autoscale_env.world.types import CONTEXT_FIELDS, RequestBlock, Workload


def bin_values(spec: FeatureSpec, values) -> np.ndarray:
    """Bin raw ``values`` of one feature (see ``features.toml`` for the edge semantics)."""
    values = np.asarray(values, dtype=np.float64)
    edges = np.asarray(spec.edges, dtype=np.float64)
    flat = np.ascontiguousarray(values).reshape(-1)
    out = np.empty(flat.size, dtype=np.int64)
    _bin_loop(edges.reshape(1, -1), bool(spec.descending), flat, out)
    return out.reshape(values.shape)


@njit(cache=True, inline="always")
def bin_index(edges: np.ndarray, row: int, n_edges: int, x: float, descending: bool) -> int:
    """Bin of value ``x`` given the first ``n_edges`` sorted edges of row ``row`` of ``edges``
    (2-D: a row view would cost a reference count per call): the count of edges at or
    below ``x`` (a value on an edge belongs to the bin above it), or, for a ``descending``
    feature (bin 0 = the highest values, e.g. a strong signal), ``n_edges`` minus the count of
    edges strictly below ``x``. NaN counts as above every edge."""
    if x != x:
        return 0 if descending else n_edges
    count = 0
    for k in range(n_edges):
        if edges[row, k] < x or (not descending and edges[row, k] == x):
            count += 1
    return n_edges - count if descending else count


@batch_loop()
def _bin_loop(edges, descending, values, out):
    for k in range(len(values)):
        out[k] = bin_index(edges, 0, edges.shape[1], values[k], descending)


class Encoding(NamedTuple):
    """A :class:`StateEncoder`'s tables, as the compiled loops take them."""

    workload_bins: np.ndarray    # (W, F) bins of the workload features, per network
    context_column: np.ndarray   # (K,) observation column of each context feature
    context_field: np.ndarray    # (K,) which context value it bins (CONTEXT_FIELDS order)
    edges: np.ndarray            # (K, most edges) edges, padded with +inf
    n_edges: np.ndarray          # (K,) edges of each
    descending: np.ndarray       # (K,) bool


@njit(cache=True, inline="always")
def encode_request(enc: Encoding, network: int, co_cpu_pct: float, co_mem_pct: float,
                   rssi_wifi_dbm: float, rssi_p2p_dbm: float, out: np.ndarray) -> None:
    """Observation of one request into ``out`` (n_features,)."""
    # each table read once (a record's array costs a reference count per read)
    workload_bins, column, field, edges, n_edges, descending = (
        enc.workload_bins, enc.context_column, enc.context_field, enc.edges, enc.n_edges,
        enc.descending)
    for f in range(len(out)):  # element by element: a slice assignment allocates a copy
        out[f] = workload_bins[network, f]
    context = (co_cpu_pct, co_mem_pct, rssi_wifi_dbm, rssi_p2p_dbm)
    for k in range(len(column)):
        out[column[k]] = bin_index(edges, k, n_edges[k], context[field[k]], descending[k])


@batch_loop()
def encode_loop(enc: Encoding, network, co_cpu_pct, co_mem_pct, rssi_wifi_dbm, rssi_p2p_dbm,
                out) -> None:
    """:func:`encode_request` of every request: 1-D inputs (n,), ``out`` (n, n_features)."""
    for k in range(len(network)):
        encode_request(enc, network[k], co_cpu_pct[k], co_mem_pct[k], rssi_wifi_dbm[k],
                       rssi_p2p_dbm[k], out[k])


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
        most = max([len(f.edges) for _, f in self._context_features], default=0)
        edges = np.full((len(self._context_features), most), np.inf)
        for i, (_, f) in enumerate(self._context_features):
            edges[i, :len(f.edges)] = f.edges
        #: the tables as the compiled loops take them
        self.tables = Encoding(
            workload_bins=self._workload_bins,
            context_column=np.array([k for k, _ in self._context_features], dtype=np.int64),
            context_field=np.array([CONTEXT_FIELDS.index(f.field)
                                    for _, f in self._context_features], dtype=np.int64),
            edges=edges,
            n_edges=np.array([len(f.edges) for _, f in self._context_features], dtype=np.int64),
            descending=np.array([f.descending for _, f in self._context_features], dtype=np.bool_))
        self._strides = np.array(
            [int(np.prod(self.nvec[k + 1:])) for k in range(len(self.nvec))], dtype=np.int64)

    def encode_block(self, block: RequestBlock) -> np.ndarray:
        """Observations of every request in ``block``, shape (n, n_features), int64."""
        return self.encode(block.network, co_cpu_pct=block.co_cpu_pct,
                           co_mem_pct=block.co_mem_pct, rssi_wifi_dbm=block.rssi_wifi_dbm,
                           rssi_p2p_dbm=block.rssi_p2p_dbm)

    def encode(self, network: np.ndarray, out: np.ndarray | None = None,
               **context: np.ndarray) -> np.ndarray:
        """Observations of requests given as arrays of any (common) shape ``s``.

        Args:
            network: workload indices, shape ``s``.
            out: optional int64 array of shape ``s + (n_features,)`` to fill.
            **context: the raw context columns (``co_cpu_pct``, ``co_mem_pct``,
                ``rssi_wifi_dbm``, ``rssi_p2p_dbm``), shape ``s``; columns no feature bins may be
                left out.

        Returns:
            int64 array of shape ``s + (n_features,)`` (``out`` when given).
        """
        network = np.asarray(network, dtype=np.int64)
        shape = network.shape
        W = len(self._workload_bins)
        if network.size and (network.min() < 0 or network.max() >= W):
            raise IndexError(f"network index outside the catalog's 0..{W - 1}")
        columns = []
        for name in CONTEXT_FIELDS:
            if name in context:
                x = np.asarray(context[name], dtype=np.float64)
                if x.shape != shape:
                    x = np.broadcast_to(x, shape)
                columns.append(np.ascontiguousarray(x).reshape(-1))
            elif any(f.field == name for _, f in self._context_features):
                raise TypeError(f"encode() needs {name}= (a feature bins it)")
            else:
                columns.append(np.zeros(network.size))
        if out is None:
            out = np.empty(shape + (len(self.nvec),), dtype=np.int64)
        flat_out = out.reshape(-1, len(self.nvec))
        encode_loop(self.tables, np.ascontiguousarray(network).reshape(-1), *columns, flat_out)
        if not np.shares_memory(flat_out, out):
            out[...] = flat_out.reshape(out.shape)
        return out

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
