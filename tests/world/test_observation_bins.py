"""The observation encoder (:mod:`autoscale_env.world.observation`) as ``features.toml`` specifies
it, at the exact edges of every feature, and the encoder's bookkeeping around the bins.

The binning rule (``features.toml``): ascending edges put a value on an edge into the bin above it
(bin ``i`` holds ``edges[i-1] <= x < edges[i]``); descending edges (signal strength: bin 0 is the
strongest) put a value on an edge into the weaker bin (bin 0 holds ``x > edges[-1]``, the last bin
``x <= edges[0]``); NaN counts as above every edge. ``tests/test_observation_edges.py`` walks every
bundled edge from the TOML; this file pins the rule itself on small hand-made feature sets.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from autoscale_env.world import config
from autoscale_env.world.config import FeatureSpec
from autoscale_env.world.errors import ConfigError
from autoscale_env.world.observation import (MAX_STATES, StateEncoder, bin_index, bin_values,
                                             check_state_space)

WORKLOADS = tuple(config.load_workloads().values())
NAN = math.nan


def bin_of(edges: np.ndarray, n_edges: int, x: float, descending: bool) -> int:
    """:func:`bin_index` on one feature's edges (it takes a table's row: here the only row)."""
    return bin_index(np.atleast_2d(np.asarray(edges, dtype=np.float64)), 0, n_edges, x,
                     descending)


def up(x: float) -> float:
    return float(np.nextafter(x, math.inf))


def down(x: float) -> float:
    return float(np.nextafter(x, -math.inf))


ASCENDING = np.array([0.5, 25.0, 75.0])
DESCENDING = np.array([-82.0, -80.0, -70.0])


@pytest.mark.parametrize("x, want", [
    (-1e9, 0), (0.0, 0), (down(0.5), 0),
    (0.5, 1), (up(0.5), 1), (down(25.0), 1),
    (25.0, 2), (down(75.0), 2),
    (75.0, 3), (up(75.0), 3), (1e9, 3), (math.inf, 3),
    (NAN, 3),                                   # NaN: above every edge, the last bin
])
def test_ascending_value_on_an_edge_goes_to_the_bin_above(x, want):
    assert bin_of(ASCENDING, 3, x, False) == want


@pytest.mark.parametrize("x, want", [
    (-40.0, 0), (up(-70.0), 0), (math.inf, 0),
    (-70.0, 1), (down(-70.0), 1), (up(-80.0), 1),
    (-80.0, 2), (up(-82.0), 2),
    (-82.0, 3), (down(-82.0), 3), (-200.0, 3), (-math.inf, 3),
    (NAN, 0),                                   # NaN: above every edge, the strongest bin
])
def test_descending_value_on_an_edge_goes_to_the_weaker_bin(x, want):
    assert bin_of(DESCENDING, 3, x, True) == want


def test_only_the_first_n_edges_count():
    """The encoder pads shorter edge lists with +inf; ``n_edges`` says how many are real."""
    padded = np.array([-80.0, math.inf, math.inf])
    for x, want in ((-79.0, 0), (-80.0, 1), (-81.0, 1), (math.inf, 0)):
        assert bin_of(padded, 1, x, True) == want
    assert bin_of(np.array([10.0, 5.0]), 1, 7.0, False) == 0  # the second edge is ignored
    assert bin_of(np.array([10.0]), 0, 7.0, False) == 0      # no edges: one bin
    assert bin_of(np.array([10.0]), 0, 7.0, True) == 0


def test_bin_values_keeps_the_shape_and_reads_the_spec():
    spec = FeatureSpec("rssi", "rssi_wifi_dbm", (-80.0,), True, ("regular", "weak"))
    got = bin_values(spec, [[-79.0, -80.0], [-81.0, NAN]])
    assert got.tolist() == [[0, 1], [1, 0]] and got.dtype == np.int64
    spec = FeatureSpec("cpu", "co_cpu_pct", (0.5, 25.0), False, ("0", "low", "high"))
    assert bin_values(spec, np.array([0.0, 0.5, 24.0, 25.0])).tolist() == [0, 1, 1, 2]


def features(*specs) -> tuple[FeatureSpec, ...]:
    return tuple(specs)


CPU = FeatureSpec("co_cpu", "co_cpu_pct", (0.5, 25.0, 75.0), False, ("0%", "<25%", "<75%", ">=75%"))
MEM = FeatureSpec("co_mem", "co_mem_pct", (50.0,), False, ("low", "high"))
WIFI = FeatureSpec("rssi_wifi", "rssi_wifi_dbm", (-82.0, -80.0, -70.0), True,
                   ("strong", "regular", "weak", "very weak"))
P2P = FeatureSpec("rssi_p2p", "rssi_p2p_dbm", (-80.0,), True, ("regular", "weak"))
CONV = FeatureSpec("conv", "conv", (1.0, 30.0, 60.0), False, ("none", "1-29", "30-59", ">=60"))


def test_each_context_feature_reads_its_own_column_with_its_own_edges():
    """Features of different edge counts and directions, in an order unlike CONTEXT_FIELDS."""
    enc = StateEncoder(features(P2P, CONV, WIFI, MEM, CPU), WORKLOADS)
    names = [w.name for w in WORKLOADS]
    net = np.array([names.index("mnv1"), names.index("incv3"), names.index("mbert")])
    obs = enc.encode(net, co_cpu_pct=np.array([0.5, 75.0, 24.9]),
                     co_mem_pct=np.array([50.0, 49.9, 0.0]),
                     rssi_wifi_dbm=np.array([-70.0, -82.0, up(-70.0)]),
                     rssi_p2p_dbm=np.array([-80.0, up(-80.0), -90.0]))
    #            p2p conv wifi mem cpu
    assert obs.tolist() == [[1, 1, 1, 1, 1],
                            [0, 3, 3, 0, 3],
                            [1, 0, 0, 0, 1]]
    assert enc.nvec.tolist() == [2, 4, 4, 2, 4] and enc.n_states == 2 * 4 * 4 * 2 * 4


def test_workload_features_are_binned_per_network_once():
    enc = StateEncoder(features(CONV), WORKLOADS)
    want = [[sum(e <= w.conv for e in (1, 30, 60))] for w in WORKLOADS]
    assert enc.encode(np.arange(len(WORKLOADS))).tolist() == want


def test_an_encoder_without_context_features_needs_no_context():
    enc = StateEncoder(features(CONV), WORKLOADS)
    assert enc.encode(np.array([0, 1])).shape == (2, 1)
    assert enc.tables.edges.shape[0] == 0


def test_a_binned_column_is_required_and_an_unbinned_one_may_be_left_out():
    enc = StateEncoder(features(CPU), WORKLOADS)
    assert enc.encode(np.array([0]), co_cpu_pct=np.array([30.0])).tolist() == [[2]]
    with pytest.raises(TypeError, match="co_cpu_pct"):
        enc.encode(np.array([0]), co_mem_pct=np.array([30.0]))


def test_a_context_broadcasts_to_the_requests():
    enc = StateEncoder(features(CPU, P2P), WORKLOADS)
    obs = enc.encode(np.zeros((2, 3), dtype=np.int64), co_cpu_pct=80.0, rssi_p2p_dbm=-85.0)
    assert obs.shape == (2, 3, 2) and (obs == [3, 1]).all()
    # a row of three values for a (2, 3) batch: each column of requests gets its value
    obs = enc.encode(np.zeros((2, 3), dtype=np.int64), co_cpu_pct=np.array([0.0, 30.0, 80.0]),
                     rssi_p2p_dbm=np.array([[-85.0], [-50.0]]))
    assert obs[..., 0].tolist() == [[0, 2, 3], [0, 2, 3]]
    assert obs[..., 1].tolist() == [[1, 1, 1], [0, 0, 0]]


def test_network_indices_outside_the_catalog_are_refused():
    enc = StateEncoder(features(CONV), WORKLOADS)
    W = len(WORKLOADS)
    assert enc.encode(np.array([0, W - 1])).shape == (2, 1)
    assert enc.encode(np.array([W - 1, 2])).shape == (2, 1)  # any valid indices, not only 0
    for bad in (W, W + 5, -1):  # refused up front, naming the valid range
        with pytest.raises(IndexError, match=f"outside the catalog's 0..{W - 1}"):
            enc.encode(np.array([0, bad]))
    assert enc.encode(np.zeros(0, dtype=np.int64)).shape == (0, 1)


def test_encode_fills_a_given_out_array_even_a_strided_one():
    enc = StateEncoder(features(CPU, P2P), WORKLOADS)
    ctx = dict(co_cpu_pct=np.array([0.0, 30.0, 80.0]), rssi_p2p_dbm=np.array([-85.0, -50.0, -80.0]))
    want = [[0, 1], [2, 0], [3, 1]]
    out = np.full((3, 2), -1, dtype=np.int64)
    assert enc.encode(np.zeros(3, dtype=np.int64), out=out, **ctx) is out
    assert out.tolist() == want
    wide = np.full((3, 4), -1, dtype=np.int64)
    strided = wide[:, ::2]  # not contiguous: the encoder must copy its result back
    assert enc.encode(np.zeros(3, dtype=np.int64), out=strided, **ctx) is strided
    assert strided.tolist() == want and (wide[:, 1::2] == -1).all()
    # a (2, 3) batch into a transposed array: no flat view of it exists, so the encoder works on
    # a copy and must write its result back
    out = np.full((3, 2, 2), -1, dtype=np.int64).transpose(1, 0, 2)
    ctx2 = {k: np.stack([v, v[::-1]]) for k, v in ctx.items()}
    assert enc.encode(np.zeros((2, 3), dtype=np.int64), out=out, **ctx2) is out
    assert out.tolist() == [want, want[::-1]]


def test_state_space_of_exactly_the_limit_is_allowed_and_one_more_is_refused():
    assert MAX_STATES == 2**20
    assert check_state_space([2] * 20) == 2**20
    assert check_state_space([1024, 1024]) == MAX_STATES
    with pytest.raises(ConfigError) as err:
        check_state_space([2] * 21)
    # the message gives the count, the bins, the limit and the table size (2**21 x 300 B)
    assert "2.1e+06 states" in str(err.value) and "2 x 2" in str(err.value)
    assert "1048576" in str(err.value) and "~0.586 GiB" in str(err.value)
    with pytest.raises(ConfigError):
        check_state_space([1025, 1024])


def test_flat_index_of_one_observation_is_an_int_and_of_many_an_array():
    enc = StateEncoder(features(CPU, MEM, P2P), WORKLOADS)    # nvec (4, 2, 2): strides (4, 2, 1)
    assert enc.flat_index(np.array([3, 1, 0])) == 3 * 4 + 1 * 2 + 0
    assert type(enc.flat_index(np.array([3, 1, 0]))) is int
    many = enc.flat_index(np.array([[0, 0, 1], [1, 0, 0], [3, 1, 1]]))
    assert isinstance(many, np.ndarray) and many.tolist() == [1, 4, 15]


def test_unflatten_accepts_exactly_the_table_rows():
    enc = StateEncoder(features(CPU, MEM, P2P), WORKLOADS)
    assert enc.unflatten(0).tolist() == [0, 0, 0]
    assert enc.unflatten(15).tolist() == [3, 1, 1]
    assert enc.unflatten(6).tolist() == [1, 1, 0]
    for bad in (-1, 16, 17, 1000):  # refused by the encoder, naming the valid range
        with pytest.raises(ValueError, match=r"outside \[0, 16\)"):
            enc.unflatten(bad)


def test_describe_labels_every_feature_by_its_bin():
    enc = StateEncoder(features(CPU, WIFI), WORKLOADS)
    assert enc.describe(np.array([0, 3])) == {"co_cpu": "0%", "rssi_wifi": "very weak"}
    assert enc.describe(np.array([3, 0])) == {"co_cpu": ">=75%", "rssi_wifi": "strong"}
