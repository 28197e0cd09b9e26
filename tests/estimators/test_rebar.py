"""REBAR and RELAX: one sample against the formula derived by hand with the noise fixed, and the
harness's training of their state.

Fixed noise: ``estimators.noise.uniform`` is replaced, for one call, by the chosen uniforms
(laid out as ``noise.per_replicate_uniforms`` asks: sample, batch, copy, event). The expected
gradient is written out below in NumPy from Tucker et al. 2017's definitions, with the
derivatives of the conditional samples derived by hand (not by autograd):

- Bernoulli, p = σ(θ), z = θ + logit u, b = 1[z > 0], w = σ(v): z̃ = θ + logit(1 − w p) with
  dz̃/dθ = 1 − (1 − p)/(1 − w p) if b = 1, z̃ = θ + logit(w (1 − p)) with
  dz̃/dθ = 1 − p/(1 − w (1 − p)) if b = 0.
- Categorical, z = log p + g, E = −log u₁: z̃_b = −log E_b, z̃_k = −log(E_k/p_k + E_b), with
  dz̃_k/dθ_j = (E_k/p_k)(δ_kj − p_j)/(E_k/p_k + E_b) for k ≠ b and 0 for k = b.

Float64 throughout: the tolerance 1e-12 is far above the round-off of these O(1) expressions
(a few dozen operations at ε = 2.2e-16).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import Bernoulli, Independent, OneHotCategorical

from estimators import ESTIMATORS, noise
from harness.adapt import adapt
from harness.measure import measure
from problems import PROBLEMS
from tests.statistical import ALPHA


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def fixed_uniforms(monkeypatch, values: np.ndarray) -> None:
    def uniform(shape, generator, *, like):
        return torch.tensor(values, dtype=torch.float64).reshape(shape)
    monkeypatch.setattr(noise, "uniform", uniform)


@pytest.mark.parametrize("u, v", [(0.7, 0.3), (0.2, 0.9), (0.55, 0.05)])
@pytest.mark.parametrize("eta, lam", [(1.0, 0.5), (0.4, 1.3)])
def test_rebar_one_bernoulli_sample_by_hand(monkeypatch, u, v, eta, lam):
    theta_value, t = 0.3, 0.45
    fixed_uniforms(monkeypatch, np.array([u, v]))
    theta = torch.tensor([theta_value], dtype=torch.float64, requires_grad=True)
    loss = ESTIMATORS.make(f"rebar:eta={eta},temperature={lam}").surrogate(
        Independent(Bernoulli(logits=theta), 1), lambda z: ((z - t) ** 2).sum(-1),
        num_samples=1, generator=torch.Generator())
    (grad,) = torch.autograd.grad(loss, theta)

    p = sigmoid(theta_value)
    z = theta_value + math.log(u / (1 - u))
    b = float(z > 0)
    w = sigmoid(math.log(v / (1 - v)))
    if b:
        z_tilde, dz_tilde = theta_value + math.log((1 - w * p) / (w * p)), 1 - (1 - p) / (1 - w * p)
    else:
        x = w * (1 - p)
        z_tilde, dz_tilde = theta_value + math.log(x / (1 - x)), 1 - p / (1 - x)

    def f(y):
        return (y - t) ** 2

    def df_dz(zz):  # d f(σ(zz/λ)) / d zz
        y = sigmoid(zz / lam)
        return 2 * (y - t) * y * (1 - y) / lam

    expected = ((f(b) - eta * f(sigmoid(z_tilde / lam))) * (b - p) + eta * df_dz(z)
                - eta * df_dz(z_tilde) * dz_tilde)
    assert float(grad[0]) == pytest.approx(expected, abs=1e-12)


W, C = np.array([1.0, -2.0, 0.5]), np.array([0.3, 0.1, -0.7])


def objective_np(y):
    return (y @ W) ** 2 + y @ C


def grad_objective_np(y):
    return 2 * (y @ W) * W + C


def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


@pytest.mark.parametrize("u0, u1", [([0.3, 0.8, 0.5], [0.6, 0.2, 0.9]),
                                    ([0.9, 0.1, 0.4], [0.05, 0.7, 0.35])])
@pytest.mark.parametrize("eta, lam", [(1.0, 0.5), (0.7, 2.0)])
def test_rebar_one_categorical_sample_by_hand(monkeypatch, u0, u1, eta, lam):
    theta_np = np.array([0.5, -0.3, 1.2])
    fixed_uniforms(monkeypatch, np.array([u0, u1]))
    theta = torch.tensor(theta_np, requires_grad=True)
    loss = ESTIMATORS.make(f"rebar:eta={eta},temperature={lam}").surrogate(
        OneHotCategorical(logits=theta),
        lambda z: (z @ torch.tensor(W)) ** 2 + z @ torch.tensor(C),
        num_samples=1, generator=torch.Generator())
    (grad,) = torch.autograd.grad(loss, theta)

    p = softmax(theta_np)
    z = np.log(p) - np.log(-np.log(np.array(u0)))
    index = int(z.argmax())
    one_hot = np.eye(3)[index]
    e = -np.log(np.array(u1))
    z_tilde = -np.log(e / p + e[index])
    z_tilde[index] = -np.log(e[index])
    dz_tilde = (e / p)[:, None] * (np.eye(3) - p[None, :]) / (e / p + e[index])[:, None]
    dz_tilde[index] = 0.0
    y, y_tilde = softmax(z / lam), softmax(z_tilde / lam)

    def jacobian(q):
        return np.diag(q) - np.outer(q, q)

    expected = ((objective_np(one_hot) - eta * objective_np(y_tilde)) * (one_hot - p)
                + eta * jacobian(y) @ grad_objective_np(y) / lam
                - eta * dz_tilde.T @ (jacobian(y_tilde) @ grad_objective_np(y_tilde)) / lam)
    np.testing.assert_allclose(grad.numpy(), expected, rtol=0, atol=1e-12)


def test_relax_starts_as_rebar():
    """The network's output layer starts at zero: before adaptation the two estimates agree."""
    problem = PROBLEMS.make("bernoulli-toy:dim=3,target=0.499,logit=0.5").to("cpu", torch.float64)
    estimates = []
    for spec in ("rebar:adapt_steps=0", "relax:adapt_steps=0"):
        estimator = adapt(problem, ESTIMATORS.make(spec), num_samples=2, seed=4)
        theta = problem.parameters()[0].detach().clone().requires_grad_(True)
        work = problem.with_parameters([theta])
        loss = estimator.surrogate(work.distribution(), work.objective, num_samples=2,
                                   generator=torch.Generator().manual_seed(1))
        estimates.append(torch.autograd.grad(loss, theta)[0])
    torch.testing.assert_close(estimates[0], estimates[1], rtol=0, atol=0)


@pytest.mark.statistical
def test_adaptation_lowers_the_variance_and_freezes_the_state():
    """RELAX before and after its default adaptation on the REBAR/RELAX toy, on common noise
    (one seed for both): the paired differences of ĝ² must be negative by a one-sided z-test at
    the false-alarm rate ALPHA."""
    from harness.measure import batched_estimates
    from tests.statistical import z_threshold

    problem = PROBLEMS.make("bernoulli-toy:target=0.499").to("cpu", torch.float64)
    before = adapt(problem, ESTIMATORS.make("relax:adapt_steps=0"), num_samples=1, seed=0)
    after = adapt(problem, ESTIMATORS.make("relax"), num_samples=1, seed=0)
    assert all(not p.requires_grad for p in after.state_parameters())
    squares = [batched_estimates(problem, estimator, num_samples=1, replicates=20_000,
                                 generator=torch.Generator().manual_seed(9))[:, 0] ** 2
               for estimator in (before, after)]
    difference = squares[1] - squares[0]
    z = float(difference.mean() / (difference.std() / math.sqrt(len(difference))))
    assert z < -z_threshold(2 * ALPHA)


def test_the_cell_records_the_adaptation():
    record = measure("bernoulli-toy:target=0.499", "relax:adapt_steps=5", num_samples=1,
                     replicates=50, timing=False, memory_profile=False)
    config = record["estimator_config"]
    assert config["adapt_steps"] == 5 and set(config["diagnostics"]) == {"eta", "temperature"}
    assert record["objective_evaluations"] == 3


def _variance_and_its_stderr(estimates: torch.Tensor) -> tuple[float, float]:
    """Sample variance of one-coordinate estimates and its standard error from the fourth
    central moment, (m₄ − s⁴)/R: normal in the limit whatever the estimates' distribution."""
    centred = estimates - estimates.mean()
    variance = float(centred.pow(2).mean())
    return variance, math.sqrt((float(centred.pow(4).mean()) - variance**2) / len(estimates))


@pytest.mark.statistical
def test_relax_variance_below_reinforce_at_equal_evaluations():
    """After adaptation, RELAX with one sample (3 evaluations of f) against REINFORCE with three
    (3 evaluations) on the REBAR/RELAX toy: one-sided z-test of σ²_RELAX < σ²_REINFORCE on the
    difference of the sample variances, false-alarm rate ALPHA."""
    from harness.measure import batched_estimates
    from tests.statistical import z_threshold

    problem = PROBLEMS.make("bernoulli-toy:target=0.499").to("cpu", torch.float64)
    relax = adapt(problem, ESTIMATORS.make("relax"), num_samples=1, seed=3)
    reinforce = ESTIMATORS.make("reinforce")
    assert (relax.objective_evaluations(problem.distribution(), 1)
            == reinforce.objective_evaluations(problem.distribution(), 3) == 3)
    (v1, s1), (v2, s2) = (
        _variance_and_its_stderr(batched_estimates(
            problem, estimator, num_samples=n, replicates=20_000,
            generator=torch.Generator().manual_seed(seed))[:, 0])
        for estimator, n, seed in ((relax, 1, 5), (reinforce, 3, 6)))
    assert (v1 - v2) / math.sqrt(s1**2 + s2**2) < -z_threshold(2 * ALPHA)  # one-sided ALPHA


@pytest.mark.parametrize("problem", ["bernoulli-toy:dim=2,target=0.499",
                                     "vae-bernoulli:latent=4,batch=2,train_steps=40"])
def test_training_runs_train_the_state_reproducibly(problem):
    """θ and φ move together (φ by the double backward); the same seed gives the same run."""
    from harness.training import train

    runs = [train(problem, "relax:hidden=4", num_samples=1, steps=6, eval_every=3,
                  variance_replicates=8, seed=1) for _ in range(2)]
    for a, b in zip(runs[0]["curve"], runs[1]["curve"]):
        a.pop("wall_time_s"), b.pop("wall_time_s")
        assert a == b
    assert runs[0]["parameters"] == runs[1]["parameters"]
    assert runs[0]["objective_evaluations"] == 3
    assert all(math.isfinite(point["gradient_variance"]) for point in runs[0]["curve"])
