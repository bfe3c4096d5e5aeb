"""Input normalization imputes missing values with the mean the first site fitted."""

from __future__ import annotations

import math

import torch

from baton.ml.norm import InputNorm, fit_input_norm, input_statistics


def test_moments_leave_missing_values_out() -> None:
    x = torch.tensor([[1.0, math.nan], [3.0, 4.0], [math.nan, 8.0], [5.0, math.nan]])
    mean, std = input_statistics(x)
    assert torch.allclose(mean, torch.tensor([3.0, 6.0]))
    # population deviations of [1, 3, 5] and [4, 8]
    assert torch.allclose(std, torch.tensor([math.sqrt(8 / 3), 2.0]))


def test_a_feature_with_no_value_gets_the_identity() -> None:
    x = torch.tensor([[1.0, math.nan], [2.0, math.nan]])
    mean, std = input_statistics(x)
    assert mean.tolist() == [1.5, 0.0]
    assert std.tolist() == [0.5, 1.0]


def test_complete_inputs_take_the_exact_same_moments_as_before() -> None:
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    mean, std = input_statistics(x)
    assert torch.equal(mean, x.mean(dim=0))
    assert torch.equal(std, x.std(dim=0, correction=0))


def test_missing_inputs_standardize_to_the_fitted_mean() -> None:
    norm = torch.nn.Sequential(InputNorm(2))
    train = torch.tensor([[0.0, 10.0], [2.0, math.nan], [4.0, 30.0]])
    assert fit_input_norm(norm, train)
    out = norm(torch.tensor([[math.nan, 20.0], [2.0, math.nan], [4.0, 30.0]]))
    assert not torch.isnan(out).any()
    assert out[0, 0] == 0.0  # imputed: the mean, standardized
    assert out[1, 1] == 0.0
    assert torch.allclose(out[2], torch.tensor([math.sqrt(1.5), 1.0]))
