"""The relaxation mechanism: every relaxation estimator and its straight-through twin share
noise, hard sample and relaxed sample, and differ only in what f sees."""

from __future__ import annotations

import pytest
import torch

from estimators import ESTIMATORS
from estimators.relaxation import Relaxation, straight_through
from problems import PROBLEMS

TWINS = [
    ("gumbel-softmax", "st-gumbel-softmax", "bernoulli-toy:dim=3"),
    ("gumbel-softmax", "st-gumbel-softmax", "categorical-linear:k=5"),
    ("relaxed-topk", "st-relaxed-topk", "subset-linear"),
    ("neuralsort", "st-neuralsort", "permutation-sort"),
    ("gengs", "st-gengs", "poisson-quadratic"),
]


def test_straight_through_is_the_hard_value_with_the_carriers_gradient():
    carrier = torch.tensor([0.2, 0.7], requires_grad=True)
    z = straight_through(torch.tensor([0.0, 1.0]), carrier * 3)
    assert z.tolist() == [0.0, 1.0]
    (grad,) = torch.autograd.grad((z * torch.tensor([1.0, 2.0])).sum(), carrier)
    assert grad.tolist() == [3.0, 6.0]


@pytest.mark.parametrize("pathwise, twin, problem", TWINS)
def test_twin_shares_the_relaxation_and_evaluates_f_on_the_hard_sample(pathwise, twin, problem):
    soft_estimator, st_estimator = ESTIMATORS.make(pathwise), ESTIMATORS.make(twin)
    assert isinstance(soft_estimator, Relaxation) and isinstance(st_estimator, Relaxation)
    assert not soft_estimator.straight_through and st_estimator.straight_through
    assert type(st_estimator).__mro__[1] is type(soft_estimator)
    assert soft_estimator.info.options == st_estimator.info.options
    problem = PROBLEMS.make(problem)
    dist = problem.distribution()
    soft, hard = soft_estimator.relaxed(dist, 3, torch.Generator().manual_seed(1))
    seen = []

    def f(z):
        seen.append(z.detach().clone())
        return problem.objective(z)

    for estimator in (soft_estimator, st_estimator):
        estimator.surrogate(dist, f, num_samples=3, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(seen[0], soft.detach(), rtol=0, atol=0)
    torch.testing.assert_close(seen[1], hard, rtol=0, atol=0)
    assert dist.support.check(hard).all()

