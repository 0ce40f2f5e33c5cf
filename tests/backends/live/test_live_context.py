"""The live backend's context monitor: co-running CPU share over the time it counts.

The CPU readings are scripted (``_read``: total CPU seconds, busy CPU seconds, our processes' CPU
seconds), so each expected share is computed by hand.
"""

from __future__ import annotations

import pytest

from autoscale_env.backends.live.context import SystemMonitor


def scripted(monkeypatch, *readings):
    """A monitor whose ``_read`` returns ``readings`` in turn (the first at construction)."""
    it = iter(readings)
    monkeypatch.setattr(SystemMonitor, "_read", lambda self: next(it))
    return SystemMonitor()


def test_a_sample_covers_the_time_since_the_last_one(monkeypatch):
    monitor = scripted(monkeypatch, (0.0, 0.0, 0.0), (30.0, 20.0, 2.0), (40.0, 21.0, 2.0))
    assert monitor.sample()[0] == pytest.approx(100 * (20 - 2) / 30)
    assert monitor.sample()[0] == pytest.approx(100 * (1 - 0) / 10)


def test_time_between_suspend_and_resume_is_not_counted(monkeypatch):
    # counted: 0 -> 10 s (5 busy, 1 ours), then 20 -> 30 s (5 busy, 1 ours); the suspended
    # window 10 -> 20 s had 10 busy seconds (the paused load generators' place taken by
    # something else) that the sample must leave out
    monitor = scripted(monkeypatch, (0.0, 0.0, 0.0), (10.0, 5.0, 1.0), (20.0, 15.0, 1.0),
                       (30.0, 20.0, 2.0))
    monitor.suspend()
    monitor.resume()
    assert monitor.sample()[0] == pytest.approx(100 * (10 - 2) / 20)


def test_suspend_and_resume_twice_count_once(monkeypatch):
    monitor = scripted(monkeypatch, (0.0, 0.0, 0.0), (10.0, 5.0, 1.0), (20.0, 15.0, 1.0),
                       (30.0, 20.0, 2.0))
    monitor.suspend()
    monitor.suspend()  # no reading: already suspended
    monitor.resume()
    monitor.resume()  # no reading: already counting
    assert monitor.sample()[0] == pytest.approx(100 * (10 - 2) / 20)


def test_a_sample_while_suspended_covers_the_counted_time_and_stays_suspended(monkeypatch):
    monitor = scripted(monkeypatch, (0.0, 0.0, 0.0), (10.0, 5.0, 1.0), (20.0, 15.0, 1.0),
                       (25.0, 18.0, 1.0), (35.0, 19.0, 1.0))
    monitor.suspend()
    assert monitor.sample()[0] == pytest.approx(100 * (5 - 1) / 10)  # 0 -> 10 s only
    monitor.resume()  # at 25 s
    assert monitor.sample()[0] == pytest.approx(100 * (1 - 0) / 10)  # 25 -> 35 s
