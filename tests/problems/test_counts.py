"""Count problems: the closed-form E f against scipy's pmf, and hand-derived gradients.

Exact tests only (no statistical thresholds). ``closed_form_gradient`` is also the reference of the REINFORCE
bias tests in tests/estimators/test_gengs.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats
from torch.distributions import NegativeBinomial

from estimators import draw, noise
from estimators.errors import SpecError
from estimators.counts import _sample_by_inversion, generic_cap, support_log_probs
from problems import PROBLEMS

SPECS = [
    "poisson-quadratic:rate=3.0",
    "poisson-quadratic:dim=2,rate=0.5,target=1.0",
    "binomial-quadratic:total_count=8,logit=-0.5",
    "negbinomial-quadratic:total_count=2.5,logit=-0.3",
    "geometric-quadratic:logit=0.4",
    "geometric-quadratic:logit=-1.0,target=0.0",
]


def closed_form_gradient(spec: str) -> list[float]:
    """d/dθ_i E (z_i − c)² by hand, E (z − c)² = Var z + (E z − c)²:

    - Poisson, λ = e^θ: λ(1 + 2(λ − c)).
    - Binomial(n, p = σ(θ)): p(1 − p) [n(1 − 2p) + 2n(np − c)].
    - NegativeBinomial(r, logits θ) (torch: mean r e^θ, variance r e^θ (1 + e^θ)):
      r e^θ (1 + 2e^θ) + 2 r e^θ (r e^θ − c).
    - Geometric(logits θ), failures (mean e^−θ, variance e^−θ (1 + e^−θ)):
      −e^−θ − 2e^−2θ − 2 e^−θ (e^−θ − c).
    """
    problem = PROBLEMS.make(spec)
    theta, c = problem.initial_theta(), problem.target
    name = problem.info.name
    if name == "poisson-quadratic":
        lam = math.exp(theta)
        value = lam * (1 + 2 * (lam - c))
    elif name == "binomial-quadratic":
        n, p = problem.total_count, 1 / (1 + math.exp(-theta))
        value = p * (1 - p) * (n * (1 - 2 * p) + 2 * n * (n * p - c))
    elif name == "negbinomial-quadratic":
        r, e = problem.total_count, math.exp(theta)
        value = r * e * (1 + 2 * e) + 2 * r * e * (r * e - c)
    else:
        e = math.exp(-theta)
        value = -e - 2 * e * e - 2 * e * (e - c)
    return [value] * problem.dim


def _scipy_distribution(problem):
    """One coordinate's distribution in scipy (torch's NegativeBinomial counts successes before
    total_count failures, its Geometric failures before the first success)."""
    theta = problem.initial_theta()
    p = 1 / (1 + math.exp(-theta))
    name = problem.info.name
    if name == "poisson-quadratic":
        return stats.poisson(math.exp(theta))
    if name == "binomial-quadratic":
        return stats.binom(problem.total_count, p)
    if name == "negbinomial-quadratic":
        return stats.nbinom(problem.total_count, 1 - p)
    return stats.geom(p, loc=-1)


@pytest.mark.parametrize("spec", SPECS)
def test_expected_objective_equals_the_sum_over_the_support(spec):
    """Σ_k pmf(k) (k − c)² per coordinate, summed over 0..μ + 40σ + 50, beyond which these
    distributions keep a negligible mass (their tails decay geometrically or faster)."""
    problem = PROBLEMS.make(spec)
    twin = _scipy_distribution(problem)
    top = int(twin.mean() + 40 * twin.std()) + 50
    k = torch.arange(top + 1, dtype=torch.float64)
    by_sum = float((torch.as_tensor(twin.pmf(k.numpy())) * (k - problem.target) ** 2).sum())
    expected = float(problem.expected_objective().detach())
    assert expected == pytest.approx(problem.dim * by_sum, rel=1e-12)
    assert float(problem.distribution().mean[0].detach()) == pytest.approx(twin.mean(), rel=1e-12)


@pytest.mark.parametrize("spec", SPECS)
def test_gradient_equals_the_hand_derived_formula(spec):
    problem = PROBLEMS.make(spec)
    (theta,) = problem.parameters()
    (grad,) = torch.autograd.grad(problem.expected_objective(), theta)
    torch.testing.assert_close(grad, torch.tensor(closed_form_gradient(spec), dtype=torch.float64),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("spec", SPECS)
def test_objective_shapes_and_distribution_support(spec):
    problem = PROBLEMS.make(spec)
    z = draw(problem.distribution(), 4, torch.Generator().manual_seed(0))  # [4, dim]
    assert problem.objective(z).shape == (4,)
    assert (z >= 0).all() and (z == z.round()).all()


def test_inversion_sampler_finds_the_first_cdf_value_at_or_above_u():
    """NegativeBinomial samples by inversion: z = #{k : F(k) < u}, by binary search, the same
    draws as counting the comparisons directly (per batch element, its own CDF)."""
    dist = NegativeBinomial(torch.tensor([0.5, 2.5, 30.0]), logits=torch.tensor([-1.0, 0.3, 1.5]))
    z = _sample_by_inversion(dist, (1000,), torch.Generator().manual_seed(4))  # [1000, 3]
    values, log_p = support_log_probs(dist, generic_cap(dist))
    cdf = log_p.double().exp().cumsum(-1)  # [3, K]
    u = noise.uniform((1000, 3), torch.Generator().manual_seed(4), like=cdf)
    counted = (cdf.unsqueeze(0) < u.unsqueeze(-1)).sum(-1).clamp(max=len(values) - 1)
    assert z.shape == (1000, 3)
    torch.testing.assert_close(z, values[counted], rtol=0, atol=0)


@pytest.mark.parametrize(
    "spec, message",
    [
        # torch.poisson returns -2^63 from a rate of 2^63 on (and its variance is off from 1e16)
        ("poisson-quadratic:rate=1e30", "choose rate <= 1.6e7"),
        ("poisson-quadratic:rate=1.7e7", "past 2^24"),
        ("poisson-quadratic:rate=1e-300", "float32's normal range"),  # exp θ flushes to 0
        # the inversion sampler's support 0..μ + 40σ overflowed int (logit=40) or was inf (80)
        ("negbinomial-quadratic:logit=40", "lower logit or total_count"),
        ("negbinomial-quadratic:logit=80", "lower logit or total_count"),
        ("negbinomial-quadratic:total_count=1e300", "float32's normal range"),
        ("negbinomial-quadratic:logit=-1e300", "finite in float32"),
        ("binomial-quadratic:total_count=16777217", "between 1 and 2^24"),
        ("binomial-quadratic:logit=1e39", "finite in float32"),
        # mean e^{-θ}: Geometric's log_prob saw inf samples at logit=-800
        ("geometric-quadratic:logit=-800", "choose logit >= -12.9"),
        ("geometric-quadratic:logit=-13", "choose logit >= -12.9"),
    ],
)
def test_counts_float32_cannot_hold_are_refused_with_the_allowed_range(spec, message):
    with pytest.raises(SpecError) as error:
        PROBLEMS.make(spec)
    assert message in str(error.value)


@pytest.mark.parametrize(
    "spec",
    ["poisson-quadratic:rate=1.6e7", "poisson-quadratic:rate=1.2e-38",
     "geometric-quadratic:logit=-12.9", "binomial-quadratic:total_count=16777216",
     "negbinomial-quadratic:total_count=1e6,logit=1", "geometric-quadratic:logit=3e38"],
)
def test_counts_up_to_the_limit_sample_as_integers(spec):
    """At the edge of the allowed range torch samples valid counts (no −2^63, no inf)."""
    problem = PROBLEMS.make(spec).to(dtype=torch.float32)
    z = draw(problem.distribution(), 4, torch.Generator().manual_seed(0))  # [4, dim]
    assert torch.isfinite(z).all() and (z >= 0).all() and (z == z.round()).all()
