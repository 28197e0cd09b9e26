"""The Subset distribution: exact probabilities, sampling, shapes and input checks."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from scipy import stats

from estimators import Subset, UserError, draw
from tests.statistical import ALPHA


def brute_force_log_prob(logits: Tensor, chosen: tuple[int, ...]) -> float:
    """log Σ over the k! orders of Π_j p_{σ_j} / (1 − Σ_{i<j} p_{σ_i}), in float64."""
    p = torch.softmax(logits.double(), -1).tolist()
    total = 0.0
    for order in itertools.permutations(chosen):
        prob, used = 1.0, 0.0
        for item in order:
            prob *= p[item] / (1 - used)
            used += p[item]
        total += prob
    return math.log(total)


Tensor = torch.Tensor


@pytest.mark.parametrize("n, k", [(4, 2), (6, 3), (5, 1), (5, 5), (7, 4)])
def test_log_prob_equals_the_sum_over_orders(n, k):
    logits = torch.randn(n, generator=torch.Generator().manual_seed(n * 10 + k), dtype=torch.float64)
    dist = Subset(logits, k)
    for chosen in itertools.combinations(range(n), k):
        khot = torch.zeros(n, dtype=torch.float64)
        khot[list(chosen)] = 1
        assert float(dist.log_prob(khot)) == pytest.approx(brute_force_log_prob(logits, chosen), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n, k", [(4, 2), (8, 3), (10, 5), (6, 6)])
def test_probabilities_sum_to_one_over_the_support(n, k, dtype):
    logits = torch.randn(3, n, generator=torch.Generator().manual_seed(k), dtype=dtype) * 3
    dist = Subset(logits, k)
    support = dist.enumerate_support()
    assert support.shape == (math.comb(n, k), 3, n)
    total = dist.log_prob(support).exp().sum(0)
    torch.testing.assert_close(total, torch.ones(3, dtype=dtype), rtol=0, atol=50 * torch.finfo(dtype).eps)


@pytest.mark.parametrize("magnitude", [100.0, 1000.0])
def test_log_prob_is_stable_for_extreme_logits(magnitude):
    logits = torch.tensor([magnitude, -magnitude, 0.0, magnitude / 2, -3.0])
    dist = Subset(logits, 2)
    support = dist.enumerate_support()
    log_p = dist.log_prob(support)
    assert not torch.isnan(log_p).any() and (log_p <= 1e-6).all()
    assert float(log_p.exp().sum()) == pytest.approx(1.0, abs=1e-5)
    # The two largest items are drawn with probability ≈ 1.
    assert float(dist.log_prob(torch.tensor([1.0, 0, 0, 1, 0]))) == pytest.approx(0.0, abs=1e-5)


def test_ordered_probabilities_sum_to_the_unordered_one():
    logits = torch.randn(6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    dist = Subset(logits, 3)
    chosen = (0, 2, 5)
    orders = torch.tensor(list(itertools.permutations(chosen)))
    khot = torch.zeros(6, dtype=torch.float64)
    khot[list(chosen)] = 1
    torch.testing.assert_close(torch.logsumexp(dist.log_prob_ordered(orders), 0), dist.log_prob(khot))


@pytest.mark.statistical
@pytest.mark.parametrize("n, k", [(5, 2), (6, 3)])
def test_sample_frequencies_match_exp_log_prob(n, k):
    """Pearson χ² goodness of fit over all C(n, k) subsets; fails with probability α if correct."""
    logits = torch.randn(n, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    dist = Subset(logits, k)
    samples = draw(dist, 40000, torch.Generator().manual_seed(4))  # [S, n]
    assert ((samples == 0) | (samples == 1)).all() and (samples.sum(-1) == k).all()
    support = dist.enumerate_support()
    expected = dist.log_prob(support).exp() * len(samples)
    codes = samples @ (2.0 ** torch.arange(n, dtype=torch.float64))
    support_codes = support @ (2.0 ** torch.arange(n, dtype=torch.float64))
    observed = (codes[:, None] == support_codes[None, :]).sum(0).double()
    assert observed.sum() == len(samples)
    pvalue = stats.chisquare(observed.numpy(), expected.detach().numpy()).pvalue
    assert pvalue > ALPHA


def test_torch_style_sample_and_batch_shapes():
    dist = Subset(torch.zeros(2, 3, 7), 4)
    assert dist.batch_shape == (2, 3) and dist.event_shape == (7,)
    sample = dist.sample((5,))
    assert sample.shape == (5, 2, 3, 7) and (sample.sum(-1) == 4).all()
    assert dist.log_prob(sample).shape == (5, 2, 3)
    expanded = dist.expand((4, 2, 3))
    assert expanded.batch_shape == (4, 2, 3) and expanded.k == 4
    assert dist.enumerate_support(expand=False).shape == (35, 1, 1, 7)


def test_log_prob_is_differentiable():
    logits = torch.randn(5, dtype=torch.float64, requires_grad=True)
    dist = Subset(logits, 2)
    (grad,) = torch.autograd.grad(dist.log_prob(torch.tensor([1.0, 1, 0, 0, 0], dtype=torch.float64)), logits)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert float(grad.sum()) == pytest.approx(0.0, abs=1e-12)  # invariant to shifting the logits


@pytest.mark.parametrize("k", [0, 6, -1, 2.5, True])
def test_invalid_k_is_a_clear_error(k):
    with pytest.raises(UserError, match="1 <= k <= n = 5"):
        Subset(torch.zeros(5), k)


def test_non_finite_logits_are_rejected():
    with pytest.raises(ValueError, match="logits"):
        Subset(torch.tensor([0.0, float("nan"), 1.0]), 1)


def test_values_outside_the_support_are_rejected():
    dist = Subset(torch.zeros(4), 2)
    with pytest.raises(ValueError):
        dist.log_prob(torch.tensor([1.0, 1.0, 1.0, 0.0]))


def test_log_prob_beyond_k_16_says_so():
    dist = Subset(torch.zeros(20), 17, validate_args=False)
    with pytest.raises(UserError, match="k <= 16"):
        dist.log_prob(dist.sample())


def masked_loop_log_prob_ordered(logits: Tensor, order: Tensor) -> Tensor:
    """The definition, one draw at a time: logits_{σ_j} − logsumexp over the items left."""
    left = torch.ones_like(logits, dtype=torch.bool)
    total = torch.zeros(order.shape[:-1], dtype=logits.dtype)
    for j in range(order.shape[-1]):
        item = order[..., j : j + 1]
        total = total + logits.gather(-1, item)[..., 0] - torch.logsumexp(
            logits.masked_fill(~left, -math.inf), -1)
        left = left.scatter(-1, item, False)
    return total


@pytest.mark.parametrize("n, m", [(5, 2), (6, 6), (7, 3)])
def test_ordered_probabilities_of_every_order_sum_to_one(n, m):
    logits = torch.randn(n, generator=torch.Generator().manual_seed(n + m), dtype=torch.float64)
    orders = torch.tensor(list(itertools.permutations(range(n), m)))
    log_p = Subset(logits, m).log_prob_ordered(orders)
    # n!/(n−m)! terms of size <= 1, each with relative round-off of a few ε per draw.
    assert float(log_p.exp().sum()) == pytest.approx(1.0, abs=8 * m * torch.finfo(torch.float64).eps * len(orders))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n, k, scale", [(10, 4, 1.0), (1000, 30, 3.0), (10_000, 100, 1.0), (50, 10, 300.0)])
def test_log_prob_ordered_matches_the_draw_by_draw_definition(n, k, scale, dtype):
    """The O(n + k) form against the O(n k) definition on Gumbel-top-k orders, batched, at the
    subsets paper's sizes and at extreme logits (scale 300: probabilities down to e^-1000)."""
    generator = torch.Generator().manual_seed(n + k)
    logits = (scale * torch.randn(3, n, generator=generator, dtype=torch.float64)).to(dtype)
    dist = Subset(logits, k)
    order = dist.keys((2,), generator).topk(k, -1, sorted=True).indices  # [2, 3, k]
    got = dist.log_prob_ordered(order)
    want = masked_loop_log_prob_ordered(logits.double().expand(2, 3, n), order)
    assert got.dtype == dtype and torch.isfinite(got).all()
    # Both sum k terms, each a logsumexp over <= n items of magnitude <= L = max|logits| + log n:
    # each term is off by at most ~(log n + 4) ε L in the dtype's arithmetic.
    eps = torch.finfo(dtype).eps
    bound = k * (math.log(n) + 4) * eps * (float(logits.abs().max()) + math.log(n))
    torch.testing.assert_close(got.double(), want, rtol=0, atol=bound)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log_prob_ordered_where_the_drawn_items_hold_almost_all_the_mass(dtype):
    """Rows whose drawn items hold more than 7/8 of the mass take the exact path over the
    never-drawn items (the subtraction would cancel); values and gradients stay finite and
    equal to the definition's, also when every item is drawn."""
    logits = torch.tensor([[40.0, 38.0, 0.0, -1.0, 0.5], [0.1, 0.2, 0.3, 0.4, 0.5]],
                          dtype=dtype, requires_grad=True)
    order = torch.tensor([[[0, 1], [3, 4]], [[1, 0], [2, 0]]])  # [S=2, batch=2, m=2]
    got = Subset(logits, 2).log_prob_ordered(order)
    want = masked_loop_log_prob_ordered(logits.double().expand(2, 2, 5), order)
    eps = torch.finfo(dtype).eps
    # k = 2 terms, each a logsumexp over 5 items of magnitude <= 41: a few ε·41 apiece.
    torch.testing.assert_close(got.double(), want, rtol=0, atol=2 * 8 * eps * 41)
    (grad,) = torch.autograd.grad(got.sum(), logits)
    (want_grad,) = torch.autograd.grad(want.sum(), logits)
    assert torch.isfinite(grad).all()
    # Gradients are softmax weights (in [0, 1]) summed over 2 draws x 2 samples: 4 · 8ε.
    torch.testing.assert_close(grad.double(), want_grad.double(), rtol=0, atol=4 * 8 * eps)
    everything = torch.arange(5).expand(1, 2, 5)
    full = Subset(logits, 5).log_prob_ordered(everything)
    assert torch.isfinite(full).all()
    assert torch.isfinite(torch.autograd.grad(full.sum(), logits)[0]).all()
