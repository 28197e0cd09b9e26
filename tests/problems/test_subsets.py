"""Subset problems: options, constants, and the fallback beyond exact enumeration."""

from __future__ import annotations

import pytest
import torch

from estimators import SpecError
from harness import measure
from problems import PROBLEMS
from tests.statistical import ALPHA


@pytest.mark.parametrize("name", ["subset-linear", "subset-quadratic"])
def test_k_larger_than_n_is_a_clear_error(name):
    with pytest.raises(SpecError, match="k <= n"):
        PROBLEMS.make(f"{name}:n=4,k=5")


def test_quadratic_target_is_k_hot_ish():
    problem = PROBLEMS.make("subset-quadratic:n=10,k=4,seed=3")
    assert float(problem.target.sum()) == pytest.approx(4.0)
    assert (problem.target >= 0).all() and (problem.target <= 1).all()


@pytest.mark.parametrize("name", ["subset-linear", "subset-quadratic"])
def test_beyond_sixteen_items_the_expectation_is_not_exact(name):
    problem = PROBLEMS.make(f"{name}:n=17,k=3")
    assert not problem.info.exact and not problem.info.enumerable
    with pytest.raises(NotImplementedError):
        problem.expected_objective()
    assert PROBLEMS.make(f"{name}:n=16,k=3").info.exact


@pytest.mark.statistical
def test_harness_falls_back_to_the_unbiased_reference():
    record = measure("subset-linear:n=18,k=3", "reinforce", num_samples=2, replicates=4000,
                     seed=1, timing=False, memory_profile=False, reference_replicates=20000)
    assert record["true_gradient_source"].startswith("reference:reinforce:baseline=loo")
    assert all(se > 0 for se in record["true_gradient_stderr"])
    assert record["bias_pvalue"] > ALPHA


def test_exact_expectation_is_differentiable_and_batched():
    problem = PROBLEMS.make("subset-quadratic:n=6,k=2")
    (theta,) = problem.parameters()
    batched = problem.with_parameters([theta.detach().expand(3, 6).clone().requires_grad_(True)])
    value = batched.expected_objective()
    assert value.shape == (3,)
    (grad,) = torch.autograd.grad(value.sum(), batched.parameters())
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.statistical
def test_beyond_the_set_probability_the_reference_scores_the_order_of_the_draw():
    """At the subsets paper's sizes (L2X: k = 10 of 400) the 2^k set probability is too costly
    for the reference: it scores the order of the draw instead, and its standard error is in
    the record. It agrees with the set-probability estimator, an independent unbiased
    estimator (a different log p), by the bias test (fails with probability α if correct)."""
    record = measure("subset-linear:n=400,k=10", "reinforce:baseline=loo,set_probability=unordered",
                     num_samples=4, replicates=2000, seed=2, timing=False, memory_profile=False,
                     reference_replicates=2000)
    assert record["true_gradient_source"] == (
        "reference:reinforce:baseline=loo,set_probability=ordered "
        "(replicates=2000, num_samples=16, seed=2)")
    assert len(record["true_gradient_stderr"]) == 400
    assert all(se > 0 for se in record["true_gradient_stderr"])
    assert record["bias_pvalue"] > ALPHA
