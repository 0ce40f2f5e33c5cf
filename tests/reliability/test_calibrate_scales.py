"""``calibrate`` scales: past :data:`MAX_BOOTSTRAP_REQUESTS` the bootstrap resamples m of the n
requests per replicate (intervals scaled by sqrt(m/n)), so its time and memory stop growing
with the trace. Checked in proportion (a 400-request trace against a bound of 100, as an
80,000-request trace against the default 10,000 is), by counting the rows the replicates carry,
not by timing."""

from __future__ import annotations

import math

import numpy as np

import pytest

from autoscale_env.backends.sim import SimBackend
from autoscale_env.tools import calibrate as cal_mod
from autoscale_env.traces.recorder import record


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    out = tmp_path_factory.mktemp("trace") / "sim-mi8pro.csv.gz"
    record(SimBackend("mi8pro", "non_streaming", "dynamic"), 400, out, seed=0, progress=False)
    return str(out)


def spy_replicates(monkeypatch) -> list[int]:
    sizes: list[int] = []
    real = cal_mod._block_bootstrap

    def spy(*args, **kwargs):
        rows = real(*args, **kwargs)
        sizes.append(len(rows))
        return rows
    monkeypatch.setattr(cal_mod, "_block_bootstrap", spy)
    return sizes


@pytest.mark.slow
def test_a_long_trace_is_bootstrapped_m_out_of_n(trace, monkeypatch, tmp_path):
    full = cal_mod.calibrate([trace], base="moto_x_force", bootstrap=20)
    monkeypatch.setattr(cal_mod, "MAX_BOOTSTRAP_REQUESTS", 100)
    sizes = spy_replicates(monkeypatch)
    part = cal_mod.calibrate([trace], base="moto_x_force", bootstrap=20)
    assert sizes == [100] * 20  # each replicate carries m rows, not n: bounded work per replicate
    assert part.bootstrap_requests == 100 and full.bootstrap_requests == 0
    # the point estimates use every request: identical to the full bootstrap's
    widths = []
    for net, units in full.base_latency_ms.items():
        for unit, e in units.items():
            p = part.base_latency_ms[net][unit]
            assert p.value == e.value
            if math.isfinite(e.low) and e.high > e.low:
                assert p.low <= p.value <= p.high
                widths.append((p.high - p.low) / (e.high - e.low))
    # sqrt(m/n)-scaled intervals estimate the full-sample interval, not a 2x wider one
    widths.sort()
    assert widths and 0.4 < widths[len(widths) // 2] < 2.5, widths
    cal_mod.write_profile(part, tmp_path / "p.toml")
    assert "100 of the 400 requests per replicate" in (tmp_path / "p.toml").read_text()


def test_a_short_trace_keeps_the_plain_bootstrap(trace, monkeypatch):
    sizes = spy_replicates(monkeypatch)
    fitted = cal_mod.calibrate([trace], base="moto_x_force", bootstrap=2)
    assert sizes == [400] * 2 and fitted.bootstrap_requests == 0


def _local_fit(seed: int, n: int = 600) -> cal_mod._LocalFit:
    """Log latencies of two groups under known interference (kc 1.5, km 0.3) and noise."""
    rng = np.random.default_rng(seed)
    cpu, mem = rng.uniform(0, 1, n), rng.uniform(0, 1, n)
    group = rng.integers(0, 2, n)
    y = (np.log([20.0, 50.0])[group] + np.log1p(1.5 * cpu) + np.log1p(0.3 * mem)
         + rng.normal(0, 0.05, n))
    return cal_mod._LocalFit(y, cpu, mem, group, True, True, 0.0, 0.0)


@pytest.mark.parametrize("seed", range(5))
def test_a_replicates_windowed_search_equals_the_full_search(seed):
    """A bootstrap replicate searches the coarse grid only near the point fit's optimum; where
    its basin is there, the result is the full search's, to the last bit."""
    f = _local_fit(seed)
    full = f.fit()
    near = f.fit(start=(1.4, 0.35))
    assert near[:2] == full[:2] and near[2].tobytes() == full[2].tobytes()
    assert abs(full[0] - 1.5) < 0.15 and abs(full[1] - 0.3) < 0.15  # noise 0.05: well identified


def test_a_replicate_far_from_its_start_widens_to_the_whole_grid():
    """Started at the grid's far corner, the window's best cell lies on its inner edge: the
    search widens to the whole grid and still finds the full search's optimum."""
    f = _local_fit(0)
    assert f.fit(start=(10.0, 10.0))[:2] == f.fit()[:2]
