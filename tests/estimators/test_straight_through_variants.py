"""Gumbel-Rao, ReinMax and GST against independent computations.

- Gumbel-Rao: K = 1 is st-gumbel-softmax draw for draw; the conditional samplers match
  rejection sampling; its mean equals st-gumbel-softmax's (two-sample test); its variance on one
  Bernoulli is Var_b m(b) + E_b v(b)/K with m, v the conditional mean and variance of the
  ST-GS gradient, by quadrature over the uniform noise.
- ReinMax and GST: the one-sample gradient for every outcome D against the papers' formulas,
  written out here in NumPy.

Statistical tests state their false-alarm rate (ALPHA, tests/statistical.py; Bonferroni over
coordinates). Exact comparisons are float64 with a tolerance of 1e-12, above the round-off of
these O(1) expressions (tens of operations at ε = 2.2e-16).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate
from torch.distributions import Bernoulli, Independent, OneHotCategorical

from estimators import ESTIMATORS, noise
from estimators.straight_through import conditional_gumbel, conditional_logistic
from harness.measure import batched_estimates
from problems import PROBLEMS
from tests.statistical import ALPHA, z_threshold

PROBLEMS_BOTH = ["bernoulli-toy:dim=3,target=0.499,logit=0.5", "categorical-linear:k=5"]


@pytest.mark.parametrize("problem_spec", PROBLEMS_BOTH)
def test_one_draw_is_st_gumbel_softmax(problem_spec):
    problem = PROBLEMS.make(problem_spec).to("cpu", torch.float64)
    estimates = [batched_estimates(problem, ESTIMATORS.make(spec), num_samples=3, replicates=50,
                                   generator=torch.Generator().manual_seed(4))
                 for spec in ("gumbel-rao:mc_samples=1,temperature=0.7",
                              "st-gumbel-softmax:temperature=0.7")]
    torch.testing.assert_close(estimates[0], estimates[1], rtol=0, atol=0)


def two_sample_z(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-coordinate z statistics of the difference of the means of ``a`` and ``b`` [N, D]."""
    return (a.mean(0) - b.mean(0)) / (a.var(0) / len(a) + b.var(0) / len(b)).sqrt()


@pytest.mark.statistical
@pytest.mark.parametrize("winner", [0, 2])
def test_conditional_gumbel_matches_rejection_sampling(winner):
    """Keys drawn given argmax = D against unconditional keys that happen to have argmax D:
    means and second moments per class, Bonferroni over 2C statistics."""
    log_probs = torch.log_softmax(torch.tensor([0.4, -1.0, 1.1, 0.0], dtype=torch.float64), -1)
    generator = torch.Generator().manual_seed(8)
    keys = log_probs + noise.gumbel((400_000, 4), generator, like=log_probs)
    accepted = keys[keys.argmax(-1) == winner]
    one_hot = torch.zeros(4, dtype=torch.float64)
    one_hot[winner] = 1
    log_e = -noise.gumbel((len(accepted), 4), generator, like=log_probs)  # log Exp(1)
    conditional = conditional_gumbel(log_probs, one_hot, log_e)
    assert (conditional.argmax(-1) == winner).all()
    z = torch.cat([two_sample_z(conditional, accepted), two_sample_z(conditional**2, accepted**2)])
    assert z.abs().max() < z_threshold(ALPHA / len(z))


@pytest.mark.statistical
@pytest.mark.parametrize("b", [0.0, 1.0])
def test_conditional_logistic_matches_rejection_sampling(b):
    theta = torch.tensor(0.8, dtype=torch.float64)
    generator = torch.Generator().manual_seed(9)
    ell = noise.logistic((400_000,), generator, like=theta)
    accepted = ell[(theta + ell > 0) == bool(b)]
    conditional = conditional_logistic(theta, torch.tensor(b, dtype=torch.float64),
                                       noise.logistic((len(accepted),), generator, like=theta))
    assert ((theta + conditional > 0) == bool(b)).all()
    z = torch.stack([two_sample_z(conditional[:, None], accepted[:, None])[0],
                     two_sample_z(conditional[:, None] ** 2, accepted[:, None] ** 2)[0]])
    assert z.abs().max() < z_threshold(ALPHA / 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_conditional_logistic_is_finite_and_consistent_at_extreme_logits(dtype):
    """σ(±60) rounds to 1 and 0: the noise given the improbable outcome is still finite and
    on the right side of −θ."""
    theta = torch.tensor([60.0, -60.0, 60.0, -60.0], dtype=dtype)
    b = torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=dtype)
    ell = conditional_logistic(theta, b, noise.logistic((1000, 4), torch.Generator().manual_seed(1),
                                                        like=theta))
    assert torch.isfinite(ell).all()
    assert ((theta + ell > 0) == (b > 0)).all()


@pytest.mark.statistical
@pytest.mark.parametrize("problem_spec", PROBLEMS_BOTH)
def test_same_mean_as_st_gumbel_softmax(problem_spec):
    problem = PROBLEMS.make(problem_spec).to("cpu", torch.float64)
    rao, st = (batched_estimates(problem, ESTIMATORS.make(spec), num_samples=1,
                                 replicates=40_000, generator=torch.Generator().manual_seed(seed))
               for spec, seed in (("gumbel-rao:mc_samples=10", 1), ("st-gumbel-softmax", 2)))
    z = two_sample_z(rao, st)
    varying = (rao.var(0) > 0) | (st.var(0) > 0)
    assert z[varying].abs().max() < z_threshold(ALPHA / int(varying.sum()))


def st_gumbel_conditional_moments(theta: float, target: float, tau: float, b: int):
    """P(b), and the conditional mean and variance of the ST-GS gradient given b, on
    bernoulli-toy:dim=1, by quadrature over u (ℓ = logit u, b = 1[θ + ℓ > 0])."""
    def gradient(u):
        x = (theta + math.log(u) - math.log1p(-u)) / tau
        s = 1 / (1 + math.exp(-x))
        return 2 * (b - target) * s * (1 - s) / tau

    cut = 1 / (1 + math.exp(theta))  # σ(−θ): b = 1 iff u > cut
    lo, hi = (cut, 1.0) if b else (0.0, cut)
    mass = hi - lo

    def expect(h):
        return integrate.quad(lambda u: h(gradient(u)), lo, hi, epsabs=1e-14, epsrel=1e-12,
                              limit=200)[0] / mass

    mean = expect(lambda g: g)
    return mass, mean, expect(lambda g: (g - mean) ** 2)


@pytest.mark.statistical
@pytest.mark.parametrize("k", [3, 10])
def test_variance_on_one_bernoulli_is_the_law_of_total_variance(k):
    theta, target, tau = 0.3, 0.45, 0.5
    parts = [st_gumbel_conditional_moments(theta, target, tau, b) for b in (0, 1)]
    overall = sum(p * m for p, m, _ in parts)
    exact = sum(p * (m - overall) ** 2 for p, m, _ in parts) + sum(p * v for p, _, v in parts) / k
    problem = PROBLEMS.make(f"bernoulli-toy:dim=1,target={target},logit={theta}")
    estimates = batched_estimates(problem.to("cpu", torch.float64),
                                  ESTIMATORS.make(f"gumbel-rao:mc_samples={k},temperature={tau}"),
                                  num_samples=1, replicates=200_000,
                                  generator=torch.Generator().manual_seed(12))[:, 0]
    centred = estimates - estimates.mean()
    variance = float(centred.pow(2).mean())
    stderr = math.sqrt((float(centred.pow(4).mean()) - variance**2) / len(estimates))
    assert abs(variance - exact) < z_threshold() * stderr, (variance, exact)


# -- ReinMax and GST: one sample, every outcome ------------------------------------------------

THETA = np.array([0.5, -0.3, 1.2])
W, C = np.array([1.0, -2.0, 0.5]), np.array([0.3, 0.1, -0.7])


def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def jacobian(p):
    return np.diag(p) - np.outer(p, p)


def grad_f(d):  # f(z) = (z·w)² + z·c
    return 2 * (d @ W) * W + C


def reinmax_formula(d, tau):
    pi0, pi1 = softmax(THETA), (d + softmax(THETA / tau)) / 2
    return 2 * jacobian(pi1) @ grad_f(d) - 0.5 * jacobian(pi0) @ grad_f(d)


def gst_formula(d, tau, gap):
    top = THETA.max()
    moved = np.where(d > 0, top, np.minimum(THETA, top - gap))
    return jacobian(softmax(moved / tau)) @ grad_f(d) / tau


def one_sample_gradients(spec):
    """{outcome D: the one-sample gradient}, over seeds until every outcome has appeared."""
    theta = torch.tensor(THETA, requires_grad=True)
    found = {}
    for seed in range(200):
        seen = []

        def f(z):
            seen.append(z.detach())
            return (z @ torch.tensor(W)) ** 2 + z @ torch.tensor(C)

        loss = ESTIMATORS.make(spec).surrogate(OneHotCategorical(logits=theta), f, num_samples=1,
                                               generator=torch.Generator().manual_seed(seed))
        found.setdefault(int(seen[0][0].argmax()), torch.autograd.grad(loss, theta)[0].numpy())
        if len(found) == 3:
            return found
    raise AssertionError(f"not every outcome appeared: {sorted(found)}")


@pytest.mark.parametrize("tau", [1.0, 0.3])
def test_reinmax_gradient_for_every_outcome(tau):
    for outcome, gradient in one_sample_gradients(f"reinmax:temperature={tau}").items():
        np.testing.assert_allclose(gradient, reinmax_formula(np.eye(3)[outcome], tau),
                                   rtol=0, atol=1e-12)


@pytest.mark.parametrize("gap, tau", [(1.0, 1.0), (0.5, 0.4)])
def test_gst_gradient_for_every_outcome(gap, tau):
    for outcome, gradient in one_sample_gradients(f"gst:gap={gap},temperature={tau}").items():
        np.testing.assert_allclose(gradient, gst_formula(np.eye(3)[outcome], tau, gap),
                                   rtol=0, atol=1e-12)


@pytest.mark.parametrize("spec", ["reinmax:temperature=0.5", "gst:gap=1.0,temperature=0.7"])
def test_bernoulli_is_the_two_class_case(spec):
    """For one Bernoulli, the formulas with logits [0, θ] and f'(b) on class 1 (the class-0
    entry of ∇f is 0): ReinMax 2π₁(1 − π₁) f' − ½σ(θ)(1 − σ(θ)) f', π₁ = (b + σ(θ/τ))/2;
    GST σ'(m/τ)/τ f' with m the gapped logit difference."""
    estimator = ESTIMATORS.make(spec)
    t, theta_value = 0.3, 0.8
    found = {}
    for seed in range(50):
        theta = torch.tensor([theta_value], dtype=torch.float64, requires_grad=True)
        seen = []

        def f(z):
            seen.append(z.detach())
            return ((z - t) ** 2).sum(-1)

        loss = estimator.surrogate(Independent(Bernoulli(logits=theta), 1), f, num_samples=1,
                                   generator=torch.Generator().manual_seed(seed))
        found.setdefault(int(seen[0][0, 0]), float(torch.autograd.grad(loss, theta)[0][0]))
    assert set(found) == {0, 1}
    sig = 1 / (1 + math.exp(-theta_value))
    for b, gradient in found.items():
        slope = 2 * (b - t)
        if spec.startswith("reinmax"):
            tau = estimator.temperature
            pi1 = (b + 1 / (1 + math.exp(-theta_value / tau))) / 2
            expected = 2 * pi1 * (1 - pi1) * slope - 0.5 * sig * (1 - sig) * slope
        else:
            two = np.array([0.0, theta_value])
            top = two.max()
            moved = np.where(np.array([1 - b, b]) > 0, top, np.minimum(two, top - estimator.gap))
            q = 1 / (1 + math.exp(-(moved[1] - moved[0]) / estimator.temperature))
            expected = q * (1 - q) / estimator.temperature * slope
        assert gradient == pytest.approx(expected, abs=1e-12)
