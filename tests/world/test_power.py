"""The on-device power model (:func:`autoscale_env.world.power.local_run`), term by term.

The rule (``power.py``): the processor is busy for ``base x (1 + k_mem x mem) x noise`` ms;
co-running CPU load stretches the latency to ``busy x (1 + k_cpu x cpu)``, the processor idling
for the difference; energy (mJ) = busy power x busy time + idle power x idle time + base power x
latency.

The numbers are the Mi 8 Pro's CPU (``data/devices/mi8pro.toml``: busy 3.5 W, idle 0.038 W, base
0.5 W, CPU interference 1.5, memory interference 0.30) running mnv1 (23.9 ms at cpu/fp32), worked
out by hand below. The co-running load is chosen so that the latency is more than twice the busy
time and the noise is not 1, so that every factor shows in the result.
"""

from __future__ import annotations

import pytest

from autoscale_env.world import power
from autoscale_env.world.rules import OutcomeModel

# Hand arithmetic, the mi8pro CPU running mnv1 with 100 % co-running CPU, 50 % memory, noise 1.25:
#   busy    = 23.9 x (1 + 0.30 x 0.5) x 1.25        = 34.35625 ms
#   latency = 34.35625 x (1 + 1.5 x 1.0)            = 85.890625 ms
#   energy  = 3.5 x 34.35625                        = 120.246875    (busy)
#           + 0.038 x (85.890625 - 34.35625)        =   1.95830625  (idle)
#           + 0.5 x 85.890625                       =  42.9453125   (base)
#           = 165.15049375 mJ
MI8PRO_CPU = dict(cpu_interference=1.5, mem_interference=0.30, busy_power_w=3.5,
                  idle_power_w=0.038, base_power_w=0.5)
BUSY_MS, LATENCY_MS, ENERGY_MJ = 34.35625, 85.890625, 165.15049375

# The decimal results above are exact; the float computation rounds a few times (relative error
# of a few 1e-16), so 1e-12 is far below any change a rule could make and far above rounding.
REL = 1e-12


def test_latency_and_energy_of_the_mi8pro_cpu_by_hand():
    latency, energy = power.local_run(23.9, 1.25, 1.0, 0.5, **MI8PRO_CPU)
    assert latency == pytest.approx(LATENCY_MS, rel=REL)
    assert energy == pytest.approx(ENERGY_MJ, rel=REL)


def test_each_energy_term_alone():
    """Busy, idle and base power each paid over their own time: switch the other two off."""
    args = (23.9, 1.25, 1.0, 0.5, 1.5, 0.30)
    assert power.local_run(*args, 3.5, 0.0, 0.0)[1] == pytest.approx(3.5 * BUSY_MS, rel=REL)
    assert power.local_run(*args, 0.0, 0.038, 0.0)[1] == pytest.approx(
        0.038 * (LATENCY_MS - BUSY_MS), rel=REL)
    assert power.local_run(*args, 0.0, 0.0, 0.5)[1] == pytest.approx(0.5 * LATENCY_MS, rel=REL)


def test_noise_scales_the_busy_time_and_so_the_latency():
    """Runtime noise multiplies the busy time: noise 2 doubles latency and energy."""
    one = power.local_run(23.9, 1.0, 1.0, 0.5, **MI8PRO_CPU)
    two = power.local_run(23.9, 2.0, 1.0, 0.5, **MI8PRO_CPU)
    assert two[0] == pytest.approx(2.0 * one[0], rel=REL)
    assert two[1] == pytest.approx(2.0 * one[1], rel=REL)
    assert power.local_run(23.9, 0.8, 0.0, 0.0, **MI8PRO_CPU)[0] == pytest.approx(23.9 * 0.8,
                                                                                  rel=REL)


def test_quiet_phone_runs_at_the_table_latency_and_never_idles():
    latency, energy = power.local_run(23.9, 1.0, 0.0, 0.0, **MI8PRO_CPU)
    assert latency == 23.9
    assert energy == pytest.approx((3.5 + 0.5) * 23.9, rel=REL)


def test_each_interference_stretches_its_own_time():
    """Memory load lengthens the busy time (paid at busy power); CPU load only the latency (the
    extra paid at idle power)."""
    mem_only = power.local_run(10.0, 1.0, 0.0, 0.5, 1.5, 0.30, 1.0, 0.0, 0.0)
    assert mem_only == pytest.approx((11.5, 11.5), rel=REL)   # busy = 10 x 1.15, no idle time
    cpu_only = power.local_run(10.0, 1.0, 0.5, 0.0, 1.5, 0.30, 0.0, 1.0, 0.0)
    assert cpu_only == pytest.approx((17.5, 7.5), rel=REL)    # latency 10 x 1.75, idle 7.5 ms


def test_the_outcome_model_runs_local_targets_through_it_with_the_units_noise():
    model = OutcomeModel("mi8pro")
    j = [str(t) for t in model.targets].index("local/cpu/fp32")
    net = [w.name for w in model.workloads].index("mnv1")
    noise = [[1.0] * model.n_noise]
    noise[0][j] = 1.25
    lat, en = model.outcomes([net], [100.0], [50.0], [-55.0], [-50.0], noise)
    assert lat[0, j] == pytest.approx(LATENCY_MS, rel=REL)
    assert en[0, j] == pytest.approx(ENERGY_MJ, rel=REL)
