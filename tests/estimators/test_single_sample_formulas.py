"""Exact tests: one estimate with fixed noise against a hand-derived value.

Each test replays the estimator's noise (the same generator seed and the same draw from
``estimators.noise``), derives the gradient estimate by hand from the formula in the
estimator's docstring, and compares it with autograd of the surrogate at float64 round-off
tolerance. These pin down the formulas; the statistical tests elsewhere pin down the
distributions.
"""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Bernoulli, Independent, OneHotCategorical

from estimators import ESTIMATORS, noise

SEEDS = [0, 1, 2, 3, 4]
TAU = 0.7
T = 0.45
C = torch.tensor([0.3, -1.2, 2.0, 0.5], dtype=torch.float64)


def estimate(spec, dist_fn, theta, f, seed, num_samples=1):
    """Autograd gradient of the surrogate for the estimator ``spec``."""
    theta = theta.clone().requires_grad_(True)
    loss = ESTIMATORS.make(spec).surrogate(
        dist_fn(theta), f, num_samples=num_samples, generator=torch.Generator().manual_seed(seed)
    )
    (grad,) = torch.autograd.grad(loss, theta)
    return loss.detach(), grad


def bernoulli(theta):
    return Independent(Bernoulli(logits=theta), 1)


def categorical(theta):
    return OneHotCategorical(logits=theta)


def toy_f(z):
    return ((z - T) ** 2).sum(-1)


def quad_f(z):
    return ((z * C.to(z.dtype)).sum(-1)) ** 2


def logistic_noise(seed, shape):
    return noise.logistic(shape, torch.Generator().manual_seed(seed), like=torch.zeros((), dtype=torch.float64))


def gumbel_noise(seed, shape):
    return noise.gumbel(shape, torch.Generator().manual_seed(seed), like=torch.zeros((), dtype=torch.float64))


THETA_B = torch.tensor([0.3], dtype=torch.float64)
THETA_C = torch.tensor([0.1, -0.4, 0.8, 0.0], dtype=torch.float64)


@pytest.mark.parametrize("seed", SEEDS)
def test_reinforce_bernoulli(seed):
    p = torch.sigmoid(THETA_B)
    b = (THETA_B + logistic_noise(seed, (1, 1))[0] > 0).double()
    value, grad = estimate("reinforce", bernoulli, THETA_B, toy_f, seed)
    torch.testing.assert_close(value, toy_f(b))
    torch.testing.assert_close(grad, ((b - T) ** 2) * (b - p), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("seed", SEEDS)
def test_reinforce_loo_bernoulli_two_samples(seed):
    p = torch.sigmoid(THETA_B)
    b = (THETA_B + logistic_noise(seed, (2, 1)) > 0).double()  # [2, 1]
    f = ((b - T) ** 2).sum(-1)  # [2]
    expected = 0.5 * ((f[0] - f[1]) * (b[0] - p) + (f[1] - f[0]) * (b[1] - p))
    value, grad = estimate("reinforce:baseline=loo", bernoulli, THETA_B, toy_f, seed, num_samples=2)
    torch.testing.assert_close(value, f.mean())
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("seed", SEEDS)
def test_gumbel_softmax_bernoulli_is_binary_concrete(seed):
    y = torch.sigmoid((THETA_B + logistic_noise(seed, (1, 1))[0]) / TAU)
    value, grad = estimate(f"gumbel-softmax:temperature={TAU}", bernoulli, THETA_B, toy_f, seed)
    torch.testing.assert_close(value, toy_f(y))
    torch.testing.assert_close(grad, 2 * (y - T) * y * (1 - y) / TAU, rtol=1e-12, atol=1e-14)


def test_binary_concrete_equals_two_class_gumbel_softmax():
    """sigmoid((θ + L)/τ) with L = g1 − g2 is softmax(([θ, 0] + [g1, g2])/τ)[0]."""
    g = gumbel_noise(11, (1000, 2))
    theta = torch.tensor(0.8, dtype=torch.float64)
    two_class = torch.softmax((torch.stack([theta, torch.zeros_like(theta)]) + g) / TAU, -1)[:, 0]
    binary = torch.sigmoid((theta + g[:, 0] - g[:, 1]) / TAU)
    torch.testing.assert_close(two_class, binary, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("seed", SEEDS)
def test_st_gumbel_softmax_bernoulli(seed):
    keys = THETA_B + logistic_noise(seed, (1, 1))[0]
    y, b = torch.sigmoid(keys / TAU), (keys > 0).double()
    value, grad = estimate(f"st-gumbel-softmax:temperature={TAU}", bernoulli, THETA_B, toy_f, seed)
    torch.testing.assert_close(value, toy_f(b), rtol=0, atol=0)  # exactly the hard value
    torch.testing.assert_close(grad, 2 * (b - T) * y * (1 - y) / TAU, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("seed", SEEDS)
def test_straight_through_bernoulli(seed):
    p = torch.sigmoid(THETA_B)
    b = (THETA_B + logistic_noise(seed, (1, 1))[0] > 0).double()
    value, grad = estimate("straight-through", bernoulli, THETA_B, toy_f, seed)
    torch.testing.assert_close(value, toy_f(b), rtol=0, atol=0)
    torch.testing.assert_close(grad, 2 * (b - T) * p * (1 - p), rtol=1e-12, atol=1e-14)


def test_exact_bernoulli():
    p = torch.sigmoid(THETA_B)
    value, grad = estimate("exact", bernoulli, THETA_B, toy_f, 0)
    torch.testing.assert_close(value, (p * (1 - T) ** 2 + (1 - p) * T**2).sum())
    torch.testing.assert_close(grad, (1 - 2 * T) * p * (1 - p), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("seed", SEEDS)
def test_reinforce_categorical(seed):
    p = torch.softmax(THETA_C, -1)
    z = torch.nn.functional.one_hot((THETA_C + gumbel_noise(seed, (1, 4))[0]).argmax(), 4).double()
    value, grad = estimate("reinforce", categorical, THETA_C, quad_f, seed)
    torch.testing.assert_close(value, quad_f(z))
    torch.testing.assert_close(grad, quad_f(z) * (z - p), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("seed", SEEDS)
def test_gumbel_softmax_categorical(seed):
    y = torch.softmax((THETA_C + gumbel_noise(seed, (1, 4))[0]) / TAU, -1)
    cy = (C * y).sum()
    value, grad = estimate(f"gumbel-softmax:temperature={TAU}", categorical, THETA_C, quad_f, seed)
    torch.testing.assert_close(value, cy**2)
    torch.testing.assert_close(grad, 2 * cy * y * (C - cy) / TAU, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("seed", SEEDS)
def test_st_gumbel_softmax_categorical(seed):
    keys = THETA_C + gumbel_noise(seed, (1, 4))[0]
    y = torch.softmax(keys / TAU, -1)
    z = torch.nn.functional.one_hot(keys.argmax(), 4).double()
    cz, cy = (C * z).sum(), (C * y).sum()
    value, grad = estimate(f"st-gumbel-softmax:temperature={TAU}", categorical, THETA_C, quad_f, seed)
    torch.testing.assert_close(value, cz**2, rtol=0, atol=0)
    torch.testing.assert_close(grad, 2 * cz * y * (C - cy) / TAU, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("seed", SEEDS)
def test_straight_through_categorical(seed):
    p = torch.softmax(THETA_C, -1)
    z = torch.nn.functional.one_hot((THETA_C + gumbel_noise(seed, (1, 4))[0]).argmax(), 4).double()
    cz, cp = (C * z).sum(), (C * p).sum()
    value, grad = estimate("straight-through", categorical, THETA_C, quad_f, seed)
    torch.testing.assert_close(value, cz**2, rtol=0, atol=0)
    torch.testing.assert_close(grad, 2 * cz * p * (C - cp), rtol=1e-12, atol=1e-14)


def test_exact_categorical():
    p = torch.softmax(THETA_C, -1)
    value, grad = estimate("exact", categorical, THETA_C, quad_f, 0)
    expected_value = (p * C**2).sum()
    torch.testing.assert_close(value, expected_value)
    torch.testing.assert_close(grad, p * (C**2 - expected_value), rtol=1e-12, atol=1e-14)
