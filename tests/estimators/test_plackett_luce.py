"""The Plackett-Luce distribution: exact probabilities, sampling, shapes, input checks."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from scipy import stats

from estimators import PlackettLuce, UserError, draw
from estimators.plackett_luce import permutation_matrix_of
from tests.statistical import ALPHA


def brute_force_log_prob(scores: torch.Tensor, order: tuple[int, ...]) -> float:
    """log Π_i exp(s_{σ_i}) / Σ_{j ≥ i} exp(s_{σ_j}), term by term in float64."""
    s = scores.double().tolist()
    total = 0.0
    for i in range(len(order)):
        total += s[order[i]] - math.log(sum(math.exp(s[j]) for j in order[i:]))
    return total


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_log_prob_matches_the_product_formula(n):
    scores = torch.randn(n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    dist = PlackettLuce(scores)
    for order in itertools.permutations(range(n)):
        matrix = permutation_matrix_of(torch.tensor(order), scores)
        assert float(dist.log_prob(matrix)) == pytest.approx(brute_force_log_prob(scores, order), rel=1e-12, abs=1e-12)
        assert float(dist.log_prob_ranking(torch.tensor(order))) == pytest.approx(float(dist.log_prob(matrix)), abs=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n, scale", [(4, 1.0), (6, 3.0), (5, 100.0), (5, 1000.0)])
def test_probabilities_sum_to_one_and_stay_finite(n, scale, dtype):
    scores = torch.randn(2, n, generator=torch.Generator().manual_seed(0), dtype=dtype) * scale
    dist = PlackettLuce(scores)
    support = dist.enumerate_support()
    assert support.shape == (math.factorial(n), 2, n, n)
    log_p = dist.log_prob(support)
    assert torch.isfinite(log_p).all() and (log_p <= 0).all()
    torch.testing.assert_close(log_p.exp().sum(0), torch.ones(2, dtype=dtype), rtol=0,
                               atol=100 * torch.finfo(dtype).eps)


@pytest.mark.statistical
def test_sample_frequencies_match_exp_log_prob():
    """Pearson χ² over the 24 rankings of 4 items; false-alarm rate α."""
    scores = torch.tensor([0.5, -0.3, 1.2, 0.0], dtype=torch.float64)
    dist = PlackettLuce(scores)
    samples = draw(dist, 40000, torch.Generator().manual_seed(5))  # [S, 4, 4]
    orders = samples.argmax(-1)  # [S, 4]
    codes = (orders * torch.tensor([64, 16, 4, 1])).sum(-1)
    support_orders = torch.tensor(list(itertools.permutations(range(4))))
    support_codes = (support_orders * torch.tensor([64, 16, 4, 1])).sum(-1)
    observed = (codes[:, None] == support_codes[None]).sum(0).double()
    assert observed.sum() == len(samples)
    expected = dist.log_prob_ranking(support_orders).exp() * len(samples)
    assert stats.chisquare(observed.numpy(), expected.numpy()).pvalue > ALPHA


def test_samples_are_permutation_matrices_with_torch_shapes():
    dist = PlackettLuce(torch.zeros(3, 6))
    assert dist.batch_shape == (3,) and dist.event_shape == (6, 6)
    sample = dist.sample((4,))
    assert sample.shape == (4, 3, 6, 6)
    assert (sample.sum(-1) == 1).all() and (sample.sum(-2) == 1).all()
    assert dist.log_prob(sample).shape == (4, 3)
    assert dist.expand((2, 3)).batch_shape == (2, 3)
    assert dist.enumerate_support(expand=False).shape == (720, 1, 6, 6)


def test_log_prob_gradient_is_finite_and_shift_invariant():
    scores = (torch.randn(5, dtype=torch.float64) * 100).requires_grad_(True)
    dist = PlackettLuce(scores)
    (grad,) = torch.autograd.grad(dist.log_prob(dist.sample()), scores)
    assert torch.isfinite(grad).all()
    assert float(grad.sum()) == pytest.approx(0.0, abs=1e-9)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="scores"):
        PlackettLuce(torch.tensor([0.0, float("nan")]))
    with pytest.raises(UserError, match="scores of shape"):
        PlackettLuce(torch.tensor(1.0))
    with pytest.raises(ValueError):
        PlackettLuce(torch.zeros(3)).log_prob(torch.ones(3, 3))
    with pytest.raises(UserError, match="n <= 8"):
        PlackettLuce(torch.zeros(9)).enumerate_support()
