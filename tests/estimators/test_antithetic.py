"""ARM and DisARM against quadrature over the uniform noise, independent of their code.

On ``bernoulli-toy:dim=1`` (f(b) = (b − t)², b ~ Bernoulli(σ(θ))) one estimate of one sample is
a function of one uniform u, so its mean, variance and fourth central moment are 1-D integrals
with the breakpoints σ(θ) and σ(−θ). The mean must be the closed-form gradient
(1 − 2t) σ(1 − σ); the variance of R harness estimates is compared with the integral by the
normal approximation of the sample variance,
Var(s²) ≈ (μ₄ − σ⁴ (R − 3)/(R − 1)) / R, at the false-alarm rate ALPHA.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import integrate

from estimators import ESTIMATORS
from harness.measure import batched_estimates
from problems import PROBLEMS
from tests.statistical import z_threshold

TARGET = 0.45
LOGITS = [0.3, -2.0]
REPLICATES = 200_000


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def f(b: int) -> float:
    return (b - TARGET) ** 2


def arm(u: float, theta: float) -> float:
    return (f(int(u > sigmoid(-theta))) - f(int(u < sigmoid(theta)))) * (u - 0.5)


def disarm(u: float, theta: float) -> float:
    b, b_tilde = int(u < sigmoid(theta)), int(1 - u < sigmoid(theta))
    if b == b_tilde:
        return 0.0
    return 0.5 * (f(b) - f(b_tilde)) * (-1) ** b_tilde * sigmoid(abs(theta))


ESTIMATES = {"arm": arm, "disarm": disarm}


def moments(name: str, theta: float) -> tuple[float, float, float]:
    """(mean, variance, fourth central moment) of one single-sample estimate."""
    g = ESTIMATES[name]
    points = sorted({sigmoid(theta), sigmoid(-theta)})

    def expect(h):
        return integrate.quad(lambda u: h(g(u, theta)), 0, 1, points=points, epsabs=1e-14,
                              epsrel=1e-12, limit=200)[0]

    mean = expect(lambda x: x)
    return mean, expect(lambda x: (x - mean) ** 2), expect(lambda x: (x - mean) ** 4)


@pytest.mark.parametrize("theta", LOGITS)
@pytest.mark.parametrize("name", ["arm", "disarm"])
def test_quadrature_mean_is_the_closed_form_gradient(name, theta):
    """The integral of the definition (not of the code) is the exact gradient; quad's
    absolute error on these piecewise polynomials is at the 1e-14 it is asked for."""
    s = sigmoid(theta)
    mean, _, _ = moments(name, theta)
    assert mean == pytest.approx((1 - 2 * TARGET) * s * (1 - s), abs=1e-12)


@pytest.mark.parametrize("theta", LOGITS)
def test_disarm_variance_never_exceeds_arm(theta):
    assert moments("disarm", theta)[1] <= moments("arm", theta)[1]


@pytest.mark.statistical
@pytest.mark.parametrize("theta", LOGITS)
@pytest.mark.parametrize("name", ["arm", "disarm"])
def test_variance_matches_quadrature(name, theta):
    problem = PROBLEMS.make(f"bernoulli-toy:dim=1,target={TARGET},logit={theta}")
    problem = problem.to("cpu", torch.float64)
    estimates = batched_estimates(problem, ESTIMATORS.make(name), num_samples=1,
                                  replicates=REPLICATES,
                                  generator=torch.Generator().manual_seed(11))[:, 0]
    mean, variance, fourth = moments(name, theta)
    r = REPLICATES
    stderr = math.sqrt((fourth - variance**2 * (r - 3) / (r - 1)) / r)
    z = (float(estimates.var()) - variance) / stderr
    assert abs(z) < z_threshold(), (float(estimates.var()), variance)


@pytest.mark.parametrize("name", ["arm", "disarm"])
def test_pairs_are_exact_samples_at_extreme_logits(name):
    """At θ = ±40 (σ(θ) is 1 or 0 in float32) the comparisons in logit space still give the
    right samples: b and b̃ are 1 for θ = 40 and 0 for θ = −40, and the estimate is finite."""
    seen = []
    theta = torch.tensor([40.0, -40.0], requires_grad=True)
    dist = torch.distributions.Independent(torch.distributions.Bernoulli(logits=theta), 1)

    def objective(z):
        seen.append(z)
        return (z - 0.3).pow(2).sum(-1)

    loss = ESTIMATORS.make(name).surrogate(dist, objective, num_samples=64,
                                           generator=torch.Generator().manual_seed(0))
    (grad,) = torch.autograd.grad(loss, theta)
    assert torch.equal(seen[0][..., 0], torch.ones(128)) and torch.equal(seen[0][..., 1],
                                                                         torch.zeros(128))
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_disarm_solves_the_rebar_toy(seed):
    """2,000 Adam steps (learning rate 0.01, one pair per step) on E[(b − 0.499)²] from θ = 0
    drive σ(θ) below 0.05 (Tucker et al. 2017's toy, where REINFORCE without a baseline
    wanders). Not a matter of luck: on one variable every DisARM estimate is
    ½ (f(1) − f(0)) σ(|θ|) ≥ 0 or 0, so θ never moves the wrong way; the studies file
    ``studies/bernoulli-toy-antithetic.toml`` runs the comparison with the other estimators."""
    from harness.training import train

    record = train("bernoulli-toy:target=0.499", "disarm", num_samples=1, optimizer="adam",
                   learning_rate=0.01, steps=2000, eval_every=2000, variance_replicates=2,
                   seed=seed)
    assert sigmoid(record["parameters"][0]) < 0.05
