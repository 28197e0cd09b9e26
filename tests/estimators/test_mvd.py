"""The measure-valued derivative estimator against exact sums over the pmf.

- The weak-derivative identities of the module docstring, for Binomial, NegativeBinomial and
  Geometric, against autograd of Σ_k f(k) p(k) (sums over the pmf truncated where the mass left
  is below 1e-16; float64), independent of the estimator's code.
- The estimator's variance on ``poisson-quadratic:dim=1`` and on a Binomial, each from an exact
  sum over the sample (and the coupling variable), against R estimates by a z-test on the
  sample variance that uses its fourth central moment, false-alarm rate ALPHA.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Binomial, Geometric, NegativeBinomial, Poisson

from estimators import ESTIMATORS
from harness.measure import batched_estimates
from problems import PROBLEMS
from tests.statistical import z_threshold

SUPPORT = torch.arange(0, 400, dtype=torch.float64)


def f(z):
    return (z - 2.5) ** 2 + torch.sin(z)


def expectation(dist, values=SUPPORT, g=f):
    return (dist.log_prob(values).exp() * g(values)).sum()


def test_negative_binomial_identity():
    r, logit = 2.5, torch.tensor(-0.3, dtype=torch.float64, requires_grad=True)
    p = torch.sigmoid(logit)
    (exact,) = torch.autograd.grad(expectation(NegativeBinomial(r, probs=p)), p)
    p = p.detach()
    # E f(K_{r+1} + 1) − E f(K_r), K_{r+1} = K_r + G with G ~ NB(1, p).
    plus = expectation(NegativeBinomial(r + 1, probs=p), g=lambda k: f(k + 1))
    weak = r / (1 - p) * (plus - expectation(NegativeBinomial(r, probs=p)))
    assert float(weak) == pytest.approx(float(exact), abs=1e-12)
    # NB(r) + NB(1) = NB(r + 1): the coupling draws G on its own.
    convolved = torch.zeros(80, dtype=torch.float64)
    pr, p1 = (NegativeBinomial(c, probs=p).log_prob(SUPPORT[:80]).exp() for c in (r, 1.0))
    for k in range(80):
        convolved[k] = (pr[: k + 1] * p1[: k + 1].flip(0)).sum()
    torch.testing.assert_close(convolved, NegativeBinomial(r + 1, probs=p).log_prob(
        SUPPORT[:80]).exp(), rtol=0, atol=1e-14)


def test_geometric_identity():
    logit = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    p = torch.sigmoid(logit)
    (exact,) = torch.autograd.grad(expectation(Geometric(probs=p)), p)
    p = p.detach()
    two = NegativeBinomial(2.0, probs=1 - p)  # K + G, both Geometric(p)
    weak = -(expectation(two, g=lambda k: f(k + 1)) - expectation(Geometric(probs=p))) / p
    assert float(weak) == pytest.approx(float(exact), abs=1e-12)


def test_binomial_identity_and_coupling():
    n, logit = 6, torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    p = torch.sigmoid(logit)
    values = SUPPORT[: n + 1]
    (exact,) = torch.autograd.grad(expectation(Binomial(n, probs=p), values), p)
    p = p.detach()
    # Z' ~ Bin(n − 1, p) as z − B with B | z ~ Bernoulli(z / n): the same law.
    pz = Binomial(n, probs=p).log_prob(values).exp()
    law = torch.zeros(n, dtype=torch.float64)
    for z in range(n + 1):
        if z < n:
            law[z] += pz[z] * (1 - z / n)
        if z > 0:
            law[z - 1] += pz[z] * z / n
    torch.testing.assert_close(law, Binomial(n - 1, probs=p).log_prob(values[:n]).exp(),
                               rtol=0, atol=1e-15)
    weak = n * (law * (f(values[:n] + 1) - f(values[:n]))).sum()
    assert float(weak) == pytest.approx(float(exact), abs=1e-12)


def z_statistic(estimates: torch.Tensor, mean: float, variance: float, fourth: float) -> float:
    r = len(estimates)
    stderr = math.sqrt((fourth - variance**2 * (r - 3) / (r - 1)) / r)
    return (float(estimates.var()) - variance) / stderr


@pytest.mark.statistical
def test_variance_on_one_poisson_matches_the_exact_sum():
    """ĝ_θ = λ (f(z + 1) − f(z)) = λ (2 (z − c) + 1) for z ~ Poisson(λ), θ = log λ."""
    problem = PROBLEMS.make("poisson-quadratic:dim=1").to("cpu", torch.float64)
    rate, target = math.exp(float(problem.parameters()[0].detach())), problem.config()["target"]
    pmf = Poisson(torch.tensor(rate, dtype=torch.float64)).log_prob(SUPPORT).exp()
    g = rate * (2 * (SUPPORT - target) + 1)
    mean = float((pmf * g).sum())
    variance = float((pmf * (g - mean) ** 2).sum())
    fourth = float((pmf * (g - mean) ** 4).sum())
    assert variance == pytest.approx(4 * rate**3, rel=1e-12)  # λ² Var(2z)
    estimates = batched_estimates(problem, ESTIMATORS.make("mvd"), num_samples=1,
                                  replicates=100_000, generator=torch.Generator().manual_seed(3))
    assert float(estimates.mean()) == pytest.approx(mean, abs=z_threshold() * math.sqrt(
        variance / len(estimates)))
    assert abs(z_statistic(estimates[:, 0], mean, variance, fourth)) < z_threshold()


@pytest.mark.statistical
def test_variance_on_one_binomial_matches_the_exact_sum():
    """ĝ_θ = n (1 − 2B)(f(z + 1 − 2B) − f(z)) σ'(θ), summed over z ~ Bin(n, p) and
    B | z ~ Bernoulli(z / n)."""
    problem = PROBLEMS.make("binomial-quadratic:dim=1,total_count=6,logit=0.5")
    problem = problem.to("cpu", torch.float64)
    n, theta = 6, float(problem.parameters()[0].detach())
    p = 1 / (1 + math.exp(-theta))
    objective = problem.objective
    values = SUPPORT[: n + 1]
    pz = Binomial(n, probs=torch.tensor(p, dtype=torch.float64)).log_prob(values).exp()
    outcomes, weights = [], []
    for z in range(n + 1):
        for b, pb in ((0, 1 - z / n), (1, z / n)):
            if pb == 0:
                continue
            zt = torch.tensor([[float(z)]], dtype=torch.float64)
            moved = zt + 1 - 2 * b
            diff = float(objective(moved) - objective(zt))
            outcomes.append(n * (1 - 2 * b) * diff * p * (1 - p))
            weights.append(float(pz[z]) * pb)
    g, w = torch.tensor(outcomes, dtype=torch.float64), torch.tensor(weights, dtype=torch.float64)
    mean = float((w * g).sum())
    variance, fourth = float((w * (g - mean) ** 2).sum()), float((w * (g - mean) ** 4).sum())
    exact = torch.autograd.grad(problem.expected_objective(), problem.parameters())[0]
    assert mean == pytest.approx(float(exact), abs=1e-12)
    estimates = batched_estimates(problem, ESTIMATORS.make("mvd"), num_samples=1,
                                  replicates=100_000, generator=torch.Generator().manual_seed(4))
    assert abs(z_statistic(estimates[:, 0], mean, variance, fourth)) < z_threshold()


def test_objective_evaluations_are_one_plus_the_coordinates():
    problem = PROBLEMS.make("poisson-quadratic:dim=3")
    assert ESTIMATORS.make("mvd").objective_evaluations(problem.distribution(), 4) == 16
