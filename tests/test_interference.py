"""Processor sharing describes slowdown under co-running load where the linear model cannot:
on a saturated machine (the host's live traces) and at a knee (spare cores)."""

from __future__ import annotations

import numpy as np
import pytest

from autoscale_env.tools import interference as ps


def saturated_machine(n: int = 600, seed: int = 0):
    """A 2-core host running 1 inference thread (a = m / n = 0.5) beside other users' jobs: the
    co-runners' measured share is mostly 85-98 %, as in the bundled live traces."""
    rng = np.random.default_rng(seed)
    u = np.where(rng.random(n) < 0.8, rng.uniform(0.85, 0.98, n), rng.uniform(0.2, 0.85, n))
    group = rng.integers(0, 3, n)  # three (network, unit) groups
    base = np.array([40.0, 10.0, 150.0])
    latency = base[group] * np.maximum(1.0, 0.5 / (1.0 - u)) * rng.lognormal(0.0, 0.05, n)
    return latency, u, group, base


def test_on_a_saturated_machine_the_linear_model_fails_and_processor_sharing_fits():
    latency, u, group, base = saturated_machine()
    linear = ps.fit(latency, u, group, "linear")
    sharing = ps.fit(latency, u, group, "share")
    # the stretch runs from 1 to 25 across u = 0.5..0.98: no line 1 + k u follows it
    assert linear.median_abs_log_error > 0.3
    # processor sharing is left with the noise alone (sigma 0.05: median |error| 0.034)
    assert sharing.median_abs_log_error < 0.05
    assert sharing.params["a"] == pytest.approx(0.5, abs=0.03)
    assert sharing.base_ms == pytest.approx(base, rel=0.05)
    lo, hi = ps.bootstrap(latency, u, group, "share", replicates=20)["a"]
    assert lo <= 0.5 <= hi and hi - lo < 0.1


def test_demand_form_has_the_knee_of_spare_cores():
    # 1 inference thread on 4 cores (a = 0.25) beside up to 8 co-running threads (b = 2): no
    # slowdown until the co-runners take the 3 free cores (u = 0.375), then 1 per 0.5 of u
    rng = np.random.default_rng(1)
    u = rng.uniform(0.0, 1.0, 800)
    latency = 20.0 * ps.stretch(u, "demand", (0.25, 2.0)) * rng.lognormal(0.0, 0.03, 800)
    linear = ps.fit(latency, u, form="linear")
    demand = ps.fit(latency, u, form="demand")
    assert demand.params["a"] == pytest.approx(0.25, abs=0.05)
    assert demand.params["b"] == pytest.approx(2.0, abs=0.1)
    assert demand.median_abs_log_error < 0.03 < 2 * demand.median_abs_log_error < \
        linear.median_abs_log_error  # the line overshoots below the knee, undershoots above


def test_with_one_thread_per_core_processor_sharing_is_the_linear_rule():
    # the phones' factors carry over: mi8pro's cpu_interference 1.5 is a = 1, b = 1.5
    u = np.linspace(0.0, 1.0, 101)
    assert np.array_equal(ps.stretch(u, "demand", (1.0, 1.5)), ps.stretch(u, "linear", (1.5,)))
    with pytest.raises(ValueError, match="valid: linear, demand, share"):
        ps.stretch(u, "quadratic", (1.0,))
