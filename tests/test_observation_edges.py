"""The observation encoder bins every feature exactly as ``features.toml`` documents, at its edges.

Ascending edges: bin ``i`` holds ``edges[i-1] <= value < edges[i]``. Descending edges (signal
strength): bin 0 holds ``value > edges[-1]`` and the last bin ``value <= edges[0]``. The expected
bins here are computed from that sentence and the raw TOML, not from the package's binning code,
and every edge is checked exactly, one ulp below and one ulp above, on small batches and on
batches big enough for the encoder's look-up path.
"""

from __future__ import annotations

import dataclasses
import tomllib

import numpy as np
import pytest

from autoscale_env.world import config
from autoscale_env.world.observation import StateEncoder

FEATURE_SETS = ("paper", "per_network", "fitted")


def documented_bin(edges: list[float], descending: bool, value: float) -> int:
    """The bin the data file's comment promises, by a plain walk over the edges."""
    if descending:
        above = [e for e in edges if value > e]  # bin 0 is above the top edge
        return len(edges) - len(above)
    return sum(1 for e in edges if e <= value)


def raw_features(name: str) -> list[dict]:
    with open(config.resolve_features_path(name), "rb") as f:
        return tomllib.load(f)["feature"]


def probes(edges: list[float]) -> np.ndarray:
    values = []
    for e in edges:
        values += [np.nextafter(e, -np.inf), e, np.nextafter(e, np.inf)]
    return np.array(values + [min(edges) - 1000.0, max(edges) + 1000.0])


@pytest.mark.parametrize("feature_set", FEATURE_SETS)
@pytest.mark.parametrize("batch", [1, 4096])  # below and above the encoder's look-up threshold
def test_context_features_bin_at_every_edge_as_documented(feature_set, batch):
    workloads = tuple(config.load_workloads().values())
    features = config.load_features(feature_set)
    encoder = StateEncoder(features, workloads)
    columns = {f.field: k for k, f in enumerate(features)}
    checked = 0
    for raw in raw_features(feature_set):
        if raw["field"] in config.WORKLOAD_FIELDS:
            continue
        values = probes(raw["edges"])
        n = len(values)
        context = {f: np.full(n * batch, 50.0 if "pct" in f else -60.0) for f in
                   ("co_cpu_pct", "co_mem_pct", "rssi_wifi_dbm", "rssi_p2p_dbm")}
        context[raw["field"]] = np.tile(values, batch)
        obs = encoder.encode(np.zeros(n * batch, dtype=np.int64), **context)
        got = obs[:, columns[raw["field"]]].reshape(batch, n)
        want = [documented_bin(raw["edges"], raw.get("descending", False), v) for v in values]
        assert (got == np.array(want)).all(), (feature_set, raw["name"], values, got[0], want)
        checked += 1
    assert checked == 4  # co_cpu, co_mem, rssi_wifi, rssi_p2p


def test_an_rssi_of_exactly_the_edge_is_weak_and_one_ulp_above_is_regular():
    features = config.load_features("paper")
    encoder = StateEncoder(features, tuple(config.load_workloads().values()))
    k = [f.field for f in features].index("rssi_wifi_dbm")
    for batch in (1, 4096):
        edge = np.full(batch, -80.0)
        obs = encoder.encode(np.zeros(batch, dtype=np.int64), co_cpu_pct=edge * 0,
                             co_mem_pct=edge * 0, rssi_wifi_dbm=edge, rssi_p2p_dbm=edge + 30)
        assert features[k].labels[obs[0, k]] == "weak" and (obs[:, k] == obs[0, k]).all()
        obs = encoder.encode(np.zeros(batch, dtype=np.int64), co_cpu_pct=edge * 0,
                             co_mem_pct=edge * 0, rssi_wifi_dbm=np.nextafter(edge, 0),
                             rssi_p2p_dbm=edge + 30)
        assert features[k].labels[obs[0, k]] == "regular" and (obs[:, k] == obs[0, k]).all()


@pytest.mark.parametrize("feature_set", FEATURE_SETS)
def test_workload_features_bin_at_every_edge_as_documented(feature_set):
    base = next(iter(config.load_workloads().values()))
    features = config.load_features(feature_set)
    columns = {f.field: k for k, f in enumerate(features)}
    for raw in raw_features(feature_set):
        if raw["field"] not in config.WORKLOAD_FIELDS:
            continue
        counts = sorted({max(0, int(c)) for e in raw["edges"] for c in (e - 1, e, e + 1)})
        workloads = tuple(dataclasses.replace(base, name=f"w{c}", **{raw["field"]: c})
                          for c in counts)
        encoder = StateEncoder(features, workloads)
        context = {f: np.zeros(len(counts)) for f in ("co_cpu_pct", "co_mem_pct")}
        context.update(rssi_wifi_dbm=np.full(len(counts), -50.0),
                       rssi_p2p_dbm=np.full(len(counts), -50.0))
        obs = encoder.encode(np.arange(len(counts)), **context)
        want = [documented_bin(raw["edges"], raw.get("descending", False), c) for c in counts]
        assert obs[:, columns[raw["field"]]].tolist() == want, (feature_set, raw["name"])
