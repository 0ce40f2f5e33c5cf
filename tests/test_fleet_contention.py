"""The contention model: shared uploads, Bianchi's overhead, the edge queues, fleet.toml checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from autoscale_env.world.errors import ConfigError
from autoscale_env.fleet.config import FLEET_FILE, load_fleet_config
from autoscale_env.fleet.contention import (bianchi_saturation_throughput, collision_slowdown,
                                            fifo_wait_ms, ps_wait_ms, shared_transfer_ms)

DCF = load_fleet_config().dcf
NO_COLLISIONS = np.ones(64)


def test_a_station_alone_takes_size_times_weight_exactly():
    size, weight = np.array([1204.224]), np.array([1 / 156.0])
    finish = shared_transfer_ms(size, weight, np.array([True]), collision_slowdown(1, DCF))
    assert finish[0] == size[0] * weight[0]


def test_equal_throughput_is_the_performance_anomaly():
    """Heusse et al.: a fast and a slow station get the same throughput 1 / (1/R_f + 1/R_s)."""
    fast, slow = 100.0, 1.0  # kbit/ms
    size = np.array([1000.0, 1000.0])
    finish = shared_transfer_ms(size, 1 / np.array([fast, slow]), np.array([True, True]),
                                NO_COLLISIONS)
    common = 1 / (1 / fast + 1 / slow)
    assert finish == pytest.approx([1000 / common, 1000 / common])
    # the fast station waits ~ as long as the slow one alone would take: pulled to the slowest
    assert finish[0] > 0.99 * 1000 / slow


def test_equal_airtime_isolates_the_fast_station():
    alone = np.array([10.0, 1000.0])  # ms each would take alone
    finish = shared_transfer_ms(alone, 1.0, np.array([True, True]), NO_COLLISIONS)
    assert finish == pytest.approx([20.0, 1010.0])  # half the air until the fast one is done


def test_stations_leave_as_they_finish():
    size = np.array([1.0, 2.0, 3.0])
    finish = shared_transfer_ms(size, np.ones(3), np.ones(3, bool), NO_COLLISIONS)
    assert finish == pytest.approx([3.0, 5.0, 6.0])  # 3 share, then 2, then 1
    inactive = shared_transfer_ms(size, np.ones(3), np.array([True, False, True]), NO_COLLISIONS)
    assert inactive == pytest.approx([2.0, 0.0, 4.0])


def test_batch_axes_evaluate_rows_independently():
    size = np.array([[1.0, 2.0], [1.0, 2.0]])
    active = np.array([[True, True], [False, True]])
    finish = shared_transfer_ms(size, np.ones(2), active, NO_COLLISIONS)
    assert finish == pytest.approx(np.array([[2.0, 3.0], [0.0, 2.0]]))


def test_bianchi_collision_overhead_grows_with_stations():
    s = [bianchi_saturation_throughput(n, DCF) for n in (1, 2, 5, 10, 20, 50)]
    assert all(0 < x < 1 for x in s)
    # a few stations use the air better than one (less idle backoff, Bianchi's Fig. 6 shape),
    # then collisions eat the throughput
    assert s[1] > s[0] and s[-1] < s[3] < s[2]
    c = collision_slowdown(100, DCF)
    assert c[0] == c[1] == 1.0 and c[2] < 1.0 and c[100] > c[50] > c[20] > 1.0


def test_fifo_serves_in_arrival_order():
    arrival = np.array([5.0, 0.0, 1.0, 30.0])
    service = np.array([10.0, 10.0, 10.0, 1.0])
    wait = fifo_wait_ms(arrival, service, np.ones(4, bool))
    # order 0 (t=0..10), 1 (arr 1: 10..20), 5 (20..30), 30 (30..31)
    assert wait == pytest.approx([15.0, 0.0, 9.0, 0.0])
    assert fifo_wait_ms(arrival[:1], service[:1], np.array([True]))[0] == 0.0
    ties = fifo_wait_ms(np.zeros(3), np.ones(3), np.ones(3, bool))
    assert ties.tolist() == [0.0, 1.0, 2.0]  # lower index first


def test_processor_sharing_delays():
    # two jobs at 0 of 1 and 2 ms: both at half speed until 2, then the long one alone until 3
    delay = ps_wait_ms(np.zeros(2), np.array([1.0, 2.0]), np.ones(2, bool))
    assert delay == pytest.approx([1.0, 1.0])
    # staggered: job B arrives when A is half done
    delay = ps_wait_ms(np.array([0.0, 1.0]), np.array([2.0, 2.0]), np.ones(2, bool))
    assert delay == pytest.approx([1.0, 1.0])
    alone = ps_wait_ms(np.array([3.0]), np.array([7.0]), np.array([True]))
    assert alone[0] == 0.0
    batch = ps_wait_ms(np.zeros((2, 2)), np.array([[1.0, 2.0], [1.0, 2.0]]),
                       np.array([[True, True], [True, False]]))
    assert batch == pytest.approx(np.array([[1.0, 1.0], [0.0, 0.0]]))


def test_fleet_toml_is_checked(tmp_path: Path):
    text = FLEET_FILE.read_text()
    bad = tmp_path / "fleet.toml"
    bad.write_text(text.replace('sharing = "equal_throughput"', 'sharing = "token_ring"'))
    with pytest.raises(ConfigError, match=r"fleet.toml: field 'channel.sharing' must be one of"):
        load_fleet_config(str(bad))
    bad.write_text(text.replace("cw_min = 15", "cw_min = 15\ncw_mni = 3"))
    with pytest.raises(ConfigError, match="cw_mni"):
        load_fleet_config(str(bad))
    bad.write_text(text.replace("edges = [1, 4, 16]", "edges = [4, 1]"))
    with pytest.raises(ConfigError, match="load_signal.edges"):
        load_fleet_config(str(bad))
    bad.write_text(text.replace('discipline = "fifo"\nsource', 'discipline = "fifo"\nsourc'))
    with pytest.raises(ConfigError, match="source"):
        load_fleet_config(str(bad))


@pytest.mark.parametrize("device", ["mi8pro", "galaxy_s10e", "moto_x_force"])
def test_phone_tables_decompose_the_rules_outcomes(device):
    """The decomposition contention adds to (edge service time, upload at the link's goodput, which
    link a target crosses) is the one :func:`autoscale_env.world.rules.outcomes` computes: doubling the
    server noise adds exactly the service time, halving the goodput adds the transfer time."""
    from autoscale_env.world import rules
    from autoscale_env.fleet.contention import LOCAL, P2P, WIFI, PhoneTables

    model = rules.OutcomeModel(device)
    tables = PhoneTables.build([device], model.workloads)
    T = len(model.targets)
    W = len(model.workloads)
    net = np.repeat(np.arange(W), 3)
    zeros = np.zeros(net.shape)
    wifi = np.tile([-50.0, -65.0, -75.0], W)
    p2p = np.tile([-45.0, -60.0, -70.0], W)
    ones = np.ones(net.shape + (model.n_noise,))
    base, _ = rules.outcomes(model.phone, net, zeros, zeros, wifi, p2p, ones)
    slow_server = ones.copy()
    remote = [j for j, t in enumerate(model.targets) if not t.is_local]
    slow_server[:, remote] = 2.0  # the servers' runtime noise
    server, _ = rules.outcomes(model.phone, net, zeros, zeros, wifi, p2p, slow_server)
    slow_link = ones.copy()
    slow_link[:, T:] = 0.5  # both links' goodput noise
    link, _ = rules.outcomes(model.phone, net, zeros, zeros, wifi, p2p, slow_link)
    ms_per_kbit, _, connected = tables.link_state(wifi[:, None], p2p[:, None])
    assert connected.all()
    down_kbit = np.array([w.output_bytes * 8e-3 for w in model.workloads])[net]
    for j, t in enumerate(model.targets):
        kind = {"local": LOCAL, "cloud": WIFI, "edge": P2P}[t.location]
        assert tables.link[0, j] == kind, t
        if t.is_local:
            continue
        if t.location == "edge":
            np.testing.assert_allclose(server[:, j] - base[:, j], tables.service_ms[0, net, j],
                                       rtol=1e-12)
        transfer_ms = (tables.up_kbit[net] + down_kbit) * ms_per_kbit[:, 0, kind]
        np.testing.assert_allclose(link[:, j] - base[:, j], transfer_ms, rtol=1e-9)
    assert tables.base_w[0] == model.phone.base_power_w


@pytest.mark.parametrize("rule", ["equal_throughput", "equal_airtime", "fifo", "ps"])
def test_an_inactive_entry_changes_nobody_else(rule):
    """Inactive entries (phones that stay local, or use the other channel or processor) give 0
    and leave the active ones' results exactly as if they were not there at all."""
    rng = np.random.default_rng(7)
    for _ in range(50):
        n = int(rng.integers(1, 12))
        x, y = rng.random(n) * 100, rng.random(n) * 10
        x[rng.random(n) < 0.3] = x[0]  # ties
        active = rng.random(n) < 0.6
        active[rng.integers(n)] = True
        slowdown = collision_slowdown(n, DCF)
        run = {"equal_throughput": lambda x, y, a: shared_transfer_ms(x, y, a, slowdown),
               "equal_airtime": lambda x, y, a: shared_transfer_ms(x, 1.0, a, slowdown),
               "fifo": fifo_wait_ms, "ps": ps_wait_ms}[rule]
        every = run(x, y, active)
        only = run(x[active], y[active], np.ones(active.sum(), bool))
        assert np.array_equal(every[active], only)
        assert (every[~active] == 0.0).all()
