"""The reward (``data/rewards.toml``, :func:`autoscale_env.world.reward.request_reward`), one term
at a time, at the edges of its conditions.

    met (latency <= QoS and accuracy >= target - slack):  -min(E / E_ref, C)
    missed:  -(C + E / E_ref + w_lat * max(0, L / QoS - 1) + w_acc * 100 * max(0, target - acc))

The presets' weights are read from the TOML file itself. The ``soft`` preset (C = 1, w_lat = 1,
w_acc = 0.5) has weights that differ from each other, so a term paid with the wrong weight shows.
Every case uses E_ref = 100 mJ and QoS = 50 ms.
"""

from __future__ import annotations

import math
import tomllib

import numpy as np
import pytest

from autoscale_env.world.config import DATA_DIR, get_reward_preset
from autoscale_env.world.reward import ACCURACY_SLACK, request_reward, reward, weights

with open(DATA_DIR / "rewards.toml", "rb") as _f:
    RAW = tomllib.load(_f)["presets"]

REF, QOS, TARGET = 100.0, 50.0, 0.70


def by_hand(preset: str, latency: float, energy: float, accuracy: float) -> float:
    """The formula above, written out with the TOML's numbers."""
    c, w_lat, w_acc = (RAW[preset][k] for k in
                       ("violation_penalty", "latency_weight", "accuracy_weight"))
    if latency <= QOS and accuracy >= TARGET - 1e-12:
        return -min(energy / REF, c)
    late = max(0.0, latency / QOS - 1.0)
    short = max(0.0, TARGET - accuracy) * 100.0
    return -(c + energy / REF + w_lat * late + w_acc * short)


def score(preset: str, latency: float, energy: float, accuracy: float):
    return request_reward(latency, energy, accuracy, REF, TARGET, QOS,
                          *weights(get_reward_preset(preset)))


# Every result below is a handful of float operations on short decimals; 1e-12 relative is far
# below any change of a term and far above their rounding.
REL = 1e-12


def test_weights_come_from_the_toml_in_order():
    for name, raw in RAW.items():
        assert weights(get_reward_preset(name)) == (
            raw["violation_penalty"], raw["latency_weight"], raw["accuracy_weight"])
    assert weights(get_reward_preset("soft")) == (1.0, 1.0, 0.5)  # distinct weights, used below


@pytest.mark.parametrize("preset", ["energy", "soft"])
@pytest.mark.parametrize("latency, energy, accuracy, terms", [
    # met: minus the energy ratio alone (30 / 100)
    (40.0, 30.0, 0.75, "met"),
    # met at exactly the latency target
    (50.0, 30.0, 0.75, "met"),
    # met but costly: the energy ratio (3.0, 20.0) capped at C (1 for soft, 10 for energy)
    (40.0, 300.0, 0.75, "met, capped for soft"),
    (40.0, 2000.0, 0.75, "met, capped"),
    # late by 10 %, accurate: C + 0.3 + w_lat x 0.1 (no accuracy term: 0.75 is above the target)
    (55.0, 30.0, 0.75, "late"),
    # on time (latency 80 % of the target), 2 points short: C + 0.3 + w_acc x 2 (no latency term)
    (40.0, 30.0, 0.68, "short"),
    # late by 40 % and 5 points short
    (70.0, 30.0, 0.65, "both"),
    # late, with a large energy ratio: a missed request's energy is not capped
    (60.0, 3000.0, 0.75, "late, energy not capped"),
])
def test_each_term_as_written_in_rewards_toml(preset, latency, energy, accuracy, terms):
    r, qos_met, accuracy_met = score(preset, latency, energy, accuracy)
    assert r == pytest.approx(by_hand(preset, latency, energy, accuracy), rel=REL), terms
    assert qos_met == (latency <= QOS) and accuracy_met == (accuracy >= TARGET)


def test_terms_one_by_one_with_literal_numbers():
    """The soft preset (C = 1, w_lat = 1, w_acc = 0.5), each term alone, as literals."""
    assert score("soft", 40.0, 30.0, 0.75)[0] == pytest.approx(-0.3, rel=REL)
    assert score("soft", 40.0, 300.0, 0.75)[0] == -1.0                               # cap C
    assert score("soft", 55.0, 30.0, 0.75)[0] == pytest.approx(-(1 + 0.3 + 0.1), rel=REL)
    assert score("soft", 40.0, 30.0, 0.68)[0] == pytest.approx(-(1 + 0.3 + 0.5 * 2), rel=REL)
    assert score("soft", 100.0, 30.0, 0.75)[0] == pytest.approx(-(1 + 0.3 + 1.0), rel=REL)
    assert score("soft", 40.0, 0.0, 0.60)[0] == pytest.approx(-(1 + 0.5 * 10), rel=REL)


def test_accuracy_within_the_slack_is_met_and_one_step_below_is_not():
    """Accuracies are fractions read from decimal text: a shortfall up to ``ACCURACY_SLACK``
    (1e-12) is rounding, not a miss."""
    assert ACCURACY_SLACK == 1e-12
    edge = TARGET - ACCURACY_SLACK
    assert score("energy", 40.0, 30.0, TARGET) == (-0.3, True, True)
    assert score("energy", 40.0, 30.0, edge)[2] is True
    r, qos, acc = score("energy", 40.0, 30.0, np.nextafter(edge, 0.0))
    assert (qos, acc) == (True, False)
    # the shortfall is real but tiny: C + ratio + w_acc x 100 x ~1e-12
    assert r == pytest.approx(-(10.0 + 0.3), rel=1e-9)


def test_latency_one_step_over_the_target_misses_it():
    r, qos, acc = score("energy", np.nextafter(QOS, math.inf), 30.0, 0.75)
    assert (qos, acc) == (False, True) and r == pytest.approx(-(10.0 + 0.3), rel=1e-12)


@pytest.mark.parametrize("latency, energy", [(math.nan, 30.0), (40.0, math.nan),
                                             (math.nan, math.nan)])
def test_an_unknown_latency_or_energy_scores_nan_and_misses_qos(latency, energy):
    """Either outcome unknown: the reward is unknown, and the request is not counted as meeting
    its latency target (even at a low latency); its accuracy flag still stands."""
    for accuracy in (0.75, 0.60):
        r, qos, acc = score("energy", latency, energy, accuracy)
        assert math.isnan(r) and qos is False and acc == (accuracy >= TARGET)


def test_arrays_broadcast_and_keep_their_shape():
    """:func:`reward` applies the same formula to every element of broadcast arrays."""
    latency = np.array([[40.0], [55.0], [40.0]])             # (3, 1)
    energy = np.array([30.0, 300.0])                         # (2,)
    accuracy = np.array([[0.75], [0.75], [0.68]])            # (3, 1)
    r, qos, acc = reward(get_reward_preset("soft"), latency_ms=latency, energy_mj=energy,
                         accuracy=accuracy, reference_energy_mj=REF, qos_ms=QOS,
                         accuracy_target=TARGET)
    assert r.shape == qos.shape == acc.shape == (3, 2)
    want = [[by_hand("soft", latency[i, 0], energy[j], accuracy[i, 0]) for j in range(2)]
            for i in range(3)]
    np.testing.assert_allclose(r, want, rtol=REL)
    assert qos.tolist() == [[True, True], [False, False], [True, True]]
    assert acc.tolist() == [[True, True], [True, True], [False, False]]


def test_the_outcomes_are_keyword_arguments_only():
    """``reward(preset, *, latency_ms=..., ...)``: six arrays of the same kind are never passed
    by position, where two could be swapped unnoticed."""
    preset = get_reward_preset("energy")
    with pytest.raises(TypeError):
        reward(preset, 40.0, 30.0, 0.75, REF, QOS, TARGET)
    assert reward(preset=preset, latency_ms=40.0, energy_mj=30.0, accuracy=0.75,
                  reference_energy_mj=REF, qos_ms=QOS, accuracy_target=TARGET)[0] == -0.3
