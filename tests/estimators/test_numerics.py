"""Numerical stability and input checks of every estimator of the bernoulli/categorical families."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Bernoulli, Independent, Normal, OneHotCategorical

from estimators import ESTIMATORS, IncompatibleError, UserError, noise
from tests.estimators.test_single_sample_formulas import quad_f, toy_f

SPECS = [
    "reinforce",
    "reinforce:baseline=loo",
    "gumbel-softmax:temperature=0.5",
    "gumbel-softmax:temperature=0.01",
    "st-gumbel-softmax:temperature=0.5",
    "straight-through",
    "exact",
]
EXTREMES = [(torch.float32, 50.0), (torch.float64, 500.0)]


def _gradient(spec, dist_fn, theta, f, num_samples=8):
    theta = theta.clone().requires_grad_(True)
    loss = ESTIMATORS.make(spec).surrogate(
        dist_fn(theta), f, num_samples=num_samples, generator=torch.Generator().manual_seed(0)
    )
    (grad,) = torch.autograd.grad(loss.sum(), theta)
    return loss, grad


@pytest.mark.parametrize("dtype, magnitude", EXTREMES, ids=["float32-50", "float64-500"])
@pytest.mark.parametrize("spec", SPECS)
def test_extreme_logits_give_finite_values_and_gradients(spec, dtype, magnitude):
    theta_b = torch.tensor([magnitude, -magnitude, 0.0, magnitude / 2], dtype=dtype)
    loss, grad = _gradient(spec, lambda t: Independent(Bernoulli(logits=t), 1), theta_b, toy_f)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    assert loss.dtype == grad.dtype == dtype
    theta_c = torch.tensor([magnitude, -magnitude, 0.0, magnitude / 2], dtype=dtype)
    loss, grad = _gradient(spec, lambda t: OneHotCategorical(logits=t), theta_c, quad_f)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    assert loss.dtype == grad.dtype == dtype


def test_noise_stays_finite_and_inside_the_open_interval():
    like = torch.zeros((), dtype=torch.float32)
    generator = torch.Generator().manual_seed(0)
    u = noise.uniform((10**6,), generator, like=like)
    assert (u > 0).all() and (u < 1).all()
    for draw in (noise.gumbel, noise.logistic):
        values = draw((10**6,), generator, like=like)
        assert values.dtype == torch.float32 and torch.isfinite(values).all()


def test_a_zero_uniform_is_moved_inside_the_interval(monkeypatch):
    """torch.rand may return exactly 0; the Gumbel of it must still be finite."""
    monkeypatch.setattr(torch, "rand", lambda shape, **kw: torch.zeros(shape, dtype=kw["dtype"]))
    like = torch.zeros((), dtype=torch.float64)
    assert torch.isfinite(noise.gumbel((3,), torch.Generator(), like=like)).all()
    assert torch.isfinite(noise.logistic((3,), torch.Generator(), like=like)).all()


def test_million_relaxed_samples_have_no_nan():
    """A known failure of Gumbel-softmax samplers: a few NaN per 1e5 draws."""
    theta = torch.zeros(1000, 10)
    loss = ESTIMATORS.make("gumbel-softmax:temperature=0.1").surrogate(
        OneHotCategorical(logits=theta), lambda z: z.max(-1).values, num_samples=100,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.isfinite(loss).all()


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("bad", [float("inf"), -float("inf")])
def test_infinite_logits_are_rejected(spec, bad):
    """torch itself rejects +inf categorical logits (they normalise to NaN); we reject -inf."""
    theta = torch.tensor([0.0, bad])
    with pytest.raises(ValueError, match="logits"):
        ESTIMATORS.make(spec).surrogate(
            OneHotCategorical(logits=theta), quad_f, num_samples=2,
            generator=torch.Generator().manual_seed(0),
        )


@pytest.mark.parametrize("spec", SPECS)
def test_infinite_bernoulli_logits_are_rejected(spec):
    dist = Independent(Bernoulli(logits=torch.tensor([0.0, float("inf")])), 1)
    with pytest.raises(UserError, match="non-finite logits"):
        ESTIMATORS.make(spec).surrogate(dist, toy_f, num_samples=2, generator=torch.Generator())


def test_nan_logits_are_rejected_by_the_distribution():
    with pytest.raises(ValueError, match="logits"):
        Independent(Bernoulli(logits=torch.tensor([float("nan")])), 1)


@pytest.mark.parametrize("spec", SPECS)
def test_too_few_samples_are_rejected(spec):
    minimum = 2 if "loo" in spec else 1
    dist = Independent(Bernoulli(logits=torch.zeros(2)), 1)
    with pytest.raises(UserError, match=f"num_samples >= {minimum}"):
        ESTIMATORS.make(spec).surrogate(
            dist, toy_f, num_samples=minimum - 1, generator=torch.Generator()
        )


@pytest.mark.parametrize("spec", SPECS)
def test_unsupported_family_is_a_clear_error(spec):
    with pytest.raises(IncompatibleError, match="family|registered"):
        ESTIMATORS.make(spec).surrogate(
            Normal(torch.zeros(2), 1.0), lambda z: z.sum(-1), num_samples=2, generator=torch.Generator()
        )
