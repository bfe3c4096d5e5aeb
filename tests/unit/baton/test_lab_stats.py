"""Tests for the lab's paired tests, against reference values (scipy 1.x, computed once)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim.lab.stats import betainc, paired_t_test, t_two_sided_p, wilcoxon_signed_rank

A = [0.91, 0.88, 0.95, 0.90, 0.86, 0.93]
B = [0.85, 0.87, 0.90, 0.91, 0.80, 0.88]


def test_incomplete_beta_known_values() -> None:
    assert betainc(1.0, 1.0, 0.3) == pytest.approx(0.3)
    assert betainc(2.5, 2.5, 0.5) == pytest.approx(0.5)
    assert betainc(2.0, 1.0, 0.6) == pytest.approx(0.36)  # I_x(a, 1) = x**a
    assert betainc(3.0, 4.0, 0.0) == 0.0
    assert betainc(3.0, 4.0, 1.0) == 1.0
    with pytest.raises(ValueError, match="x must be in"):
        betainc(1.0, 1.0, 1.5)


@pytest.mark.parametrize(
    ("t", "dof", "expected"),
    [
        (2.0, 3, 0.13932596855884305),
        (0.5, 30, 0.6207230048851272),
        (5.0, 1, 0.1256659163780024),
        (-2.0, 3, 0.13932596855884305),
        (0.0, 4, 1.0),
    ],
)
def test_t_p_values_match_the_reference(t: float, dof: int, expected: float) -> None:
    assert t_two_sided_p(t, dof) == pytest.approx(expected, rel=1e-9)


def test_paired_t_matches_the_reference() -> None:
    result = paired_t_test(A, B)
    assert result.n == 6
    assert result.statistic == pytest.approx(3.0508510792387598, rel=1e-9)
    assert result.p_value == pytest.approx(0.028396725127640438, rel=1e-9)
    assert result.mean_diff == pytest.approx(0.0366666666, rel=1e-6)
    assert paired_t_test(B, A).statistic == pytest.approx(-result.statistic)


def test_paired_t_edge_cases() -> None:
    assert paired_t_test([0.5, 0.6], [0.5, 0.6]).p_value == 1.0
    shifted = paired_t_test([0.6, 0.7, 0.8], [0.5, 0.6, 0.7])
    assert shifted.p_value == 0.0
    assert shifted.statistic == math.inf
    assert math.isnan(paired_t_test([0.5], [0.4]).p_value)
    with pytest.raises(ValueError, match="differ in length"):
        paired_t_test([0.5, 0.6], [0.4])


def test_wilcoxon_exact_matches_the_reference() -> None:
    result = wilcoxon_signed_rank(A, B)
    assert result.p_value == pytest.approx(0.09375)
    assert result.statistic == 19.5  # W+ = 21 - W- (W- = 1.5: the one negative pair)
    assert wilcoxon_signed_rank(list(range(1, 9)), [0] * 8).p_value == pytest.approx(1 / 128)
    # Three pairs cannot go below 2 / 2**3.
    assert wilcoxon_signed_rank([1.0, 2.0, 3.0], [0.0, 0.0, 0.0]).p_value == pytest.approx(0.25)


def test_wilcoxon_ties_and_zeros() -> None:
    # |d| = 2 four times (average rank 3.5) and 1 once (rank 1): W+ = 14 of 15, centre 7.5.
    # Sign assignments as far from the centre: W+ in {0, 1, 14, 15}, 4 of 32.
    result = wilcoxon_signed_rank([2, 2, 2, 2, -1, 0], [0, 0, 0, 0, 0, 0])
    assert result.n == 5  # the zero difference is dropped
    assert result.statistic == 14.0
    assert result.p_value == pytest.approx(4 / 32)
    assert wilcoxon_signed_rank([0.3, 0.4], [0.3, 0.4]).p_value == 1.0


def test_wilcoxon_normal_approximation_beyond_twenty_pairs() -> None:
    x = np.random.default_rng(0).normal(0.2, 1.0, 30)
    result = wilcoxon_signed_rank(x.tolist(), [0.0] * 30)
    assert result.p_value == pytest.approx(0.5716457836721114, rel=1e-9)
