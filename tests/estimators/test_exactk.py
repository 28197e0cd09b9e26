"""The exact-k family against enumeration, and SIMPLE and I-MLE against their definitions."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from scipy import stats

from estimators import ESTIMATORS, ExactK, draw
from tests.statistical import ALPHA, z_threshold


def brute(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(every k-hot vector [N, n], its probability [N]) by direct sums of exp(θ·z)."""
    n = logits.shape[-1]
    sets = torch.tensor([[1.0 if i in c else 0.0 for i in range(n)]
                         for c in itertools.combinations(range(n), k)], dtype=torch.float64)
    weights = torch.exp(sets @ logits.double())
    return sets, weights / weights.sum()


@pytest.mark.parametrize("n, k", [(6, 2), (10, 4), (7, 7), (5, 1)])
def test_log_prob_and_marginals_against_brute_force(n, k):
    logits = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(n + k))
    dist = ExactK(logits, k)
    sets, probs = brute(logits, k)
    torch.testing.assert_close(dist.log_prob(sets).exp(), probs, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(dist.log_prob(dist.enumerate_support()).exp().sum(),
                               torch.tensor(1.0, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(dist.marginals(), probs @ sets, rtol=1e-12, atol=1e-14)


@pytest.mark.statistical
def test_sampler_chi_square_against_enumeration():
    logits = torch.tensor([0.3, -1.2, 0.8, 0.0, 1.5, -0.4], dtype=torch.float64)
    dist = ExactK(logits, 2)
    sets, probs = brute(logits, 2)
    z = draw(dist, 30_000, torch.Generator().manual_seed(1))
    assert (z.sum(-1) == 2).all()
    index = {tuple(row.tolist()): i for i, row in enumerate(sets)}
    counts = torch.zeros(len(sets))
    for row in z:
        counts[index[tuple(row.tolist())]] += 1
    statistic = float(((counts - 30_000 * probs) ** 2 / (30_000 * probs)).sum())
    assert stats.chi2.sf(statistic, len(sets) - 1) > ALPHA


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_stable_at_logits_of_magnitude_50(dtype):
    """Logits 50·N(0, 1) (up to about 150) in float32 and float64: the recursion's values reach
    k·max|θ| in magnitude, so each is rounded by up to ε·k·max|θ|, which enters every exp as a
    relative error; the marginals' sum (k) and log p (≤ 0) are held to 4·k·ε·k·max|θ| (the
    forward and backward passes, two roundings each)."""
    generator = torch.Generator().manual_seed(5)
    logits = (50 * torch.randn(3, 40, generator=generator)).to(dtype)
    k = 7
    dist = ExactK(logits, k)
    bound = 4 * k * torch.finfo(dtype).eps * k * float(logits.abs().max())
    marginals = dist.marginals()
    assert torch.isfinite(marginals).all() and (marginals >= 0).all()
    assert float(marginals.max()) <= 1 + bound
    assert float((marginals.double().sum(-1) - k).abs().max()) <= bound
    z = draw(dist, 100, generator)
    log_p = dist.log_prob(z)
    assert (z.sum(-1) == k).all() and torch.isfinite(log_p).all()
    assert float(log_p.max()) <= bound


def test_simple_one_sample_gradient_is_the_marginals_jacobian_times_the_slope():
    """SIMPLE's gradient for a sample z: J_μ(θ)ᵀ ∇f(z), with the Jacobian of the marginals
    from the brute-force sum (independent of the recursion)."""
    logits = torch.tensor([0.3, -1.2, 0.8, 0.0, 1.5], dtype=torch.float64, requires_grad=True)
    w = torch.tensor([1.0, -0.5, 2.0, 0.3, -1.0], dtype=torch.float64)
    seen = []

    def f(z):
        seen.append(z.detach())
        return (z @ w) ** 2

    loss = ESTIMATORS.make("simple").surrogate(ExactK(logits, 2), f, num_samples=1,
                                               generator=torch.Generator().manual_seed(2))
    (grad,) = torch.autograd.grad(loss, logits)
    z = seen[0][0]
    jacobian = torch.autograd.functional.jacobian(
        lambda t: brute(t, 2)[1] @ brute(t, 2)[0], logits.detach())  # [n, n]: ∂μ_i/∂θ_j
    expected = jacobian.T @ (2 * (z @ w) * w)
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-12)


@pytest.mark.statistical
def test_imle_noise_has_the_sum_of_gamma_mean():
    """E ε = (Σ_{i=1}^{s} E Gamma(1/k, rate i/k) − log s)/k = (H_s − log s)/k."""
    estimator = ESTIMATORS.make("imle:noise_samples=5")
    dist = ExactK(torch.zeros(4, dtype=torch.float64), 3)
    eps = estimator.noise(dist, 50_000, torch.Generator().manual_seed(3)).reshape(-1)
    expected = (sum(1 / i for i in range(1, 6)) - math.log(5)) / 3
    stderr = float(eps.std()) / math.sqrt(len(eps))
    assert abs(float(eps.mean()) - expected) < z_threshold() * stderr


def test_imle_one_sample_gradient_by_hand(monkeypatch):
    """With the noise fixed, ĝ = (topk(θ + ε) − topk(θ − λ ∇f + ε)) / λ."""
    estimator = ESTIMATORS.make("imle:lambda=2.0")
    eps = torch.tensor([[0.1, -0.3, 0.2, 0.0, 0.4]], dtype=torch.float64)
    monkeypatch.setattr(type(estimator), "noise", lambda self, dist, s, g: eps)
    logits = torch.tensor([0.3, -1.2, 0.8, 0.0, 1.5], dtype=torch.float64, requires_grad=True)
    w = torch.tensor([1.0, -0.5, 2.0, 0.3, -1.0], dtype=torch.float64)
    loss = estimator.surrogate(ExactK(logits, 2), lambda z: z @ w, num_samples=1,
                               generator=torch.Generator())
    (grad,) = torch.autograd.grad(loss, logits)
    perturbed = logits.detach() + eps[0]  # [1.7, 0.4, ...]: the top two are items 4 and 2
    z = torch.zeros(5, dtype=torch.float64).index_fill_(0, perturbed.topk(2).indices, 1.0)
    target = perturbed - 2.0 * w
    z_target = torch.zeros(5, dtype=torch.float64).index_fill_(0, target.topk(2).indices, 1.0)
    torch.testing.assert_close(grad, (z - z_target) / 2.0, rtol=0, atol=0)
