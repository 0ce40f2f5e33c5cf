"""The simulator's counter-based random numbers, function by function, against the contract in
``autoscale_env/backends/sim.py``'s docstring.

Expected values are computed here from the documented formulas with Python integers and the
standard library (``statistics.NormalDist`` for the normal quantile), not with the module's code:

* draw ``d`` of request ``i`` is SplitMix64 at counter ``i * 64 + d`` of the stream keyed ``key``;
* a uniform is ``(w >> 11) * 2**-53``; the open uniform behind normals and noise is
  ``((w >> 11) + 0.5) * 2**-53``;
* a choice among ``m`` is ``min(floor(u * m), m - 1)``;
* a normal is Acklam's inverse normal CDF (relative error below 1.2e-9) of the open uniform;
* a lognormal noise factor reads a table of ``exp(sigma * z(m / 4096))``, ``m = 0 .. 4096``,
  linearly interpolated for ``0.01 <= p <= 0.99``, and is ``exp(sigma * z(p))`` outside.
"""

from __future__ import annotations

import math
from unittest import mock
from fractions import Fraction
from statistics import NormalDist

import numpy as np
import pytest

from autoscale_env.backends import sim

MASK = (1 << 64) - 1
#: The documented counter stride and increment (module docstring), as literals.
STRIDE, GOLDEN = 64, 0x9E3779B97F4A7C15
KEYS = (0, 1, 1234567, 0xDEADBEEFCAFEF00D, MASK)
COUNTERS = ((0, 0), (0, 1), (0, 63), (1, 0), (7, 16), (1000, 40), (2**20, 5))


def splitmix64(key: int, counter: int) -> int:
    """SplitMix64 (Steele, Lea and Flood 2014) at ``counter`` of the stream seeded ``key``."""
    z = (key + (counter + 1) * GOLDEN) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def test_the_reference_is_splitmix64():
    """The reference implementation's first outputs for seed 1234567 (Vigna's splitmix64.c)."""
    assert [splitmix64(1234567, c) for c in range(2)] == [6457827717110365317,
                                                          3203168211198807973]


@pytest.mark.parametrize("key", KEYS)
def test_word_is_splitmix64_at_counter_request_times_64_plus_draw(key):
    assert sim.DRAWS_PER_REQUEST == STRIDE and int(sim.GOLDEN) == GOLDEN
    for request, draw in COUNTERS:
        want = splitmix64(key, request * STRIDE + draw)
        assert int(sim.random_word(np.uint64(key), request, draw)) == want, (request, draw)


@pytest.mark.parametrize("key", KEYS)
def test_uniforms_are_the_top_53_bits(key):
    """Exact: both uniforms are a 53-bit integer times 2**-53, which a float holds exactly."""
    for request, draw in COUNTERS:
        top = splitmix64(key, request * STRIDE + draw) >> 11
        assert sim.uniform(np.uint64(key), request, draw) == top / 2**53
        assert sim._open_uniform(np.uint64(key), request, draw) == (top + 0.5) / 2**53


@pytest.mark.parametrize("m", [1, 2, 3, 7, 10, 16])
def test_choice_is_floor_of_u_times_m_capped_at_the_last_item(m):
    for u in (0.0, 0.1, 0.25, 1 / 3, 0.5, 0.6, 2 / 3, 0.75, 0.9, 0.999, np.nextafter(1.0, 0.0)):
        assert sim.choice(u, m) == min(math.floor(u * m), m - 1)
    for k in range(m):
        assert sim.choice(k / m, m) == k                          # an item's lower edge is its own
    assert sim.choice(np.nextafter(1.0, 0.0), m) == m - 1
    assert sim.choice(1.0, m) == m - 1                            # capped (never drawn, but safe)
    if m in (2, 16):  # k/m exact: just below an edge is still the item below
        for k in range(1, m):
            assert sim.choice(np.nextafter(k / m, 0.0), m) == k - 1


# Acklam's approximation has relative error below 1.15e-9 (his published bound); the standard
# library's quantile is exact to a few ulps. 1.2e-9 is the bound the module documents.
ACKLAM = 1.2e-9
PROBABILITIES = (1e-300, 1e-12, 1e-6, 0.001, 0.01, 0.02, 0.02425, 0.03, 0.1, 0.25, 0.4, 0.5 - 1e-9,
                 0.5, 0.5 + 1e-9, 0.6, 0.75, 0.9, 0.97, 0.97575, 0.98, 0.99, 0.999, 1 - 1e-6,
                 1 - 1e-12)


@pytest.mark.parametrize("p", PROBABILITIES)
def test_inverse_normal_cdf_is_the_normal_quantile_within_acklams_bound(p):
    exact = NormalDist().inv_cdf(p)
    assert sim.inverse_normal_cdf(p) == pytest.approx(exact, rel=ACKLAM, abs=1e-15)


def test_inverse_normal_cdf_is_odd():
    """z(1 - p) = -z(p): both tails and the centre are symmetric (each p is chosen so that 1 - p
    is exact)."""
    for p in (2.0**-40, 2.0**-10, 0.015625, 0.0625, 0.25, 0.375):
        assert sim.inverse_normal_cdf(1.0 - p) == pytest.approx(-sim.inverse_normal_cdf(p),
                                                                rel=1e-12)


def test_normals_are_the_quantile_of_the_open_uniform():
    for key in KEYS:
        for request, draw in COUNTERS:
            p = ((splitmix64(key, request * STRIDE + draw) >> 11) + 0.5) / 2**53
            assert sim.normal(np.uint64(key), request, draw) == sim.inverse_normal_cdf(p)


def test_no_draw_lands_on_a_boundary_between_formulas():
    """Every probability a draw can give is ``(k + 0.5) * 2**-53``, an odd multiple of 2**-54
    (but for the largest k, which rounds to 1.0), and every table node a multiple of 2**-12. The boundaries of Acklam's regions (0.02425,
    0.97575) and of the exact tails (0.01, 0.99) are neither, so on which side of a boundary the
    boundary itself falls cannot change any draw: the mutants ``<=`` -> ``<`` there are
    equivalent (see scripts/mutants.py)."""
    for edge in (0.02425, 1.0 - 0.02425, sim.NOISE_EXACT_TAIL, 1.0 - sim.NOISE_EXACT_TAIL):
        grid = Fraction(edge) * 2**54
        assert grid.denominator != 1 or grid.numerator % 2 == 0, edge
        assert (Fraction(edge) * sim.NOISE_QUANTILES).denominator != 1, edge


SIGMA = 0.15


def test_lognormal_table_holds_the_quantiles_at_m_over_4096():
    assert sim.NOISE_QUANTILES == 4096 and sim.NOISE_EXACT_TAIL == 0.01
    table = sim.lognormal_table(SIGMA)
    assert table.shape == (4097,)
    for m in (1, 2, 100, 2048, 4000, 4094, 4095):
        assert table[m] == math.exp(SIGMA * sim.inverse_normal_cdf(m / 4096))
    # the end points (p = 0 and 1 have no quantile) hold their neighbours' values
    assert table[0] == table[1] and table[4096] == table[4095]
    assert table[2048] == 1.0  # the median


def lognormal_by_hand(key: int, request: int, draw: int, table) -> float:
    p = ((splitmix64(key, request * STRIDE + draw) >> 11) + 0.5) / 2**53
    if 0.01 <= p <= 0.99:
        x = p * 4096
        m = math.floor(x)
        return table[m] + (x - m) * (table[m + 1] - table[m])
    return math.exp(SIGMA * sim.inverse_normal_cdf(p))


def test_lognormal_interpolates_the_table_inside_and_is_exact_in_the_tails():
    table = sim.lognormal_table(SIGMA)
    inside = tails = 0
    for request in range(400):
        p = ((splitmix64(99, request * STRIDE + 20) >> 11) + 0.5) / 2**53
        got = sim.lognormal(np.uint64(99), request, 20, SIGMA, table[None, :], 0)
        assert got == lognormal_by_hand(99, request, 20, table), request
        if 0.01 <= p <= 0.99:
            inside += 1
            # interpolation error of a 4096-node table is far below 1e-5 (module docstring)
            assert got == pytest.approx(math.exp(SIGMA * NormalDist().inv_cdf(p)), rel=1e-5)
        else:
            tails += 1
    assert inside > 350 and tails > 0  # both branches were exercised



def test_the_largest_word_stays_below_one():
    """``((2**53 - 1) + 0.5) * 2**-53`` rounds to 1.0, where the normal quantile is infinite (NaN
    compiled): the open uniform keeps it at the largest double below 1."""
    top = (float((2**64 - 1) >> 11) + 0.5) * 2.0 ** -53
    assert top == 1.0  # the rounding this guards against
    p = sim._open_uniform.py_func if hasattr(sim._open_uniform, "py_func") else sim._open_uniform
    with mock.patch.object(sim, "random_word", lambda *a: np.uint64(2**64 - 1)):
        value = p(np.uint64(0), 0, 0)
    assert value == 1.0 - 2.0 ** -53 and math.isfinite(sim.inverse_normal_cdf(value))


def test_noise_tables_are_shared_read_only():
    """The cached quantile table is shared by every env of a process: writing to it must fail."""
    table = sim.lognormal_table(SIGMA)
    assert sim.lognormal_table(SIGMA) is table
    with pytest.raises(ValueError, match="read-only"):
        table[1] = 0.0
