"""polynomial (ReinMax's polynomial programming): E[f] and its gradient against enumeration of
every joint outcome, and f of a relaxed sample as the authors' code computes it."""

from __future__ import annotations

import itertools

import pytest
import torch

from problems import PROBLEMS


@pytest.mark.parametrize("spec", ["polynomial:dim=3,power=1.5", "polynomial:dim=4,power=3.0,"
                                  "target=0.7,seed=2", "polynomial:dim=2,power=2.0"])
def test_expected_objective_and_gradient_equal_enumeration(spec):
    problem = PROBLEMS.make(spec)
    (theta,) = problem.parameters()
    dist = problem.distribution()
    outcomes = torch.tensor(list(itertools.product([0, 1], repeat=problem.dim)))
    z = torch.nn.functional.one_hot(outcomes, 2).double()  # [2^dim, dim, 2]
    by_enumeration = (dist.log_prob(z).exp() * problem.objective(z)).sum()
    closed = problem.expected_objective()
    # float64 sums of 2^dim terms of size <= 1: round-off a few ulps of the total
    torch.testing.assert_close(closed, by_enumeration, rtol=1e-12, atol=1e-14)
    (g_closed,) = torch.autograd.grad(closed, theta)
    (g_enum,) = torch.autograd.grad(by_enumeration, theta)
    torch.testing.assert_close(g_closed, g_enum, rtol=1e-10, atol=1e-14)


def test_objective_is_the_power_of_the_drawn_coordinate():
    problem = PROBLEMS.make("polynomial:dim=2,power=1.5,target=0.45")
    relaxed = torch.tensor([[[0.3, 0.7], [0.9, 0.1]]], dtype=torch.float64)
    expected = ((0.7 - 0.45) ** 1.5 + (0.45 - 0.1) ** 1.5) / 2
    torch.testing.assert_close(problem.objective(relaxed), torch.tensor([expected],
                                                                         dtype=torch.float64))
    start = problem.logits.detach()
    assert start.abs().max() <= 0.01  # U(−0.01, 0.01), as in the authors' code
