"""The unordered-set estimator against enumeration, independent of its sampling.

- ``leave_out_log_probs`` against brute force over the orders of each set (NumPy, float64);
- unbiasedness exactly: Σ_S p(S) ĝ(S) over every unordered set S of a small categorical is
  the exact gradient (p(S) by brute force), for a nonlinear f;
- with every category drawn the estimate is the exact gradient;
- the harness refuses what it cannot do, with a reason: a factorised problem, num_samples > C.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from estimators import ESTIMATORS, IncompatibleError, UserError
from estimators.subset import Subset, leave_out_log_probs
from estimators.unordered_set import UnorderedSet
from harness import incompatibility, measure
from harness.study import parse_study
from problems import PROBLEMS


def brute_log_prob(probs: np.ndarray, drawn: list[int], removed: set[int]) -> float:
    """log p^{D∖removed}(drawn ∖ removed): the sum over orders of the sequential draws."""
    domain = [i for i in range(len(probs)) if i not in removed]
    total = 0.0
    for order in itertools.permutations([s for s in drawn if s not in removed]):
        p, used = 1.0, set()
        for s in order:
            p *= probs[s] / sum(probs[j] for j in domain if j not in used)
            used.add(s)
        total += p
    return math.log(total)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("scale", [1.0, 12.0])
def test_leave_out_log_probs_match_brute_force(k, scale):
    generator = torch.Generator().manual_seed(k)
    logits = scale * torch.randn(3, 7, dtype=torch.float64, generator=generator)
    positions = torch.stack([torch.randperm(7, generator=generator)[:k] for _ in range(3)])
    log_set, log_p1, log_p2 = leave_out_log_probs(logits, positions)
    khot = torch.zeros_like(logits).scatter_(-1, positions, 1.0)
    torch.testing.assert_close(log_set, Subset(logits, k).log_prob(khot), rtol=1e-12, atol=1e-12)
    for row in range(3):
        probs, drawn = logits[row].softmax(-1).numpy(), positions[row].tolist()
        assert float(log_set[row]) == pytest.approx(brute_log_prob(probs, drawn, set()), abs=1e-10)
        for i, j in itertools.product(range(k), repeat=2):
            expected = brute_log_prob(probs, drawn, {drawn[i], drawn[j]})
            assert float(log_p2[row, i, j]) == pytest.approx(expected, abs=1e-10)
        torch.testing.assert_close(log_p1[row], log_p2[row].diagonal())


def objective(z: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor([0.3, -1.2, 2.0, 0.7, -0.4], dtype=z.dtype)
    return (z @ weights) ** 2 + z @ torch.arange(5.0, dtype=z.dtype)


@pytest.mark.parametrize("size", [2, 3, 4])
def test_expectation_over_every_set_is_the_exact_gradient(size):
    theta = torch.tensor([0.4, -0.9, 1.3, 0.0, -2.1], dtype=torch.float64, requires_grad=True)
    exact = torch.autograd.grad((theta.softmax(-1) * objective(torch.eye(5, dtype=theta.dtype)))
                                .sum(), theta)[0]
    probs = theta.detach().softmax(-1).numpy()
    expectation = torch.zeros_like(theta)
    total = 0.0
    for drawn in itertools.combinations(range(5), size):
        positions = torch.tensor(drawn)
        z = torch.eye(5, dtype=theta.dtype)[positions]
        estimate = torch.autograd.grad(UnorderedSet.set_surrogate(theta, positions, z, objective),
                                       theta)[0]
        p_set = math.exp(brute_log_prob(probs, list(drawn), set()))
        expectation += p_set * estimate
        total += p_set
    assert total == pytest.approx(1.0, abs=1e-12)
    torch.testing.assert_close(expectation, exact, rtol=0, atol=1e-12)


def test_every_category_drawn_gives_the_exact_gradient():
    theta = torch.tensor([[0.4, -0.9, 1.3, 0.0, -2.1]] * 4, dtype=torch.float64,
                         requires_grad=True)
    loss = UnorderedSet().surrogate(torch.distributions.OneHotCategorical(logits=theta),
                                    objective, num_samples=5,
                                    generator=torch.Generator().manual_seed(0))
    estimate = torch.autograd.grad(loss.sum(), theta)[0]
    exact = torch.autograd.grad((theta[0].softmax(-1) * objective(torch.eye(5, dtype=theta.dtype)))
                                .sum(), theta)[0][0]
    torch.testing.assert_close(estimate, exact.expand(4, 5), rtol=0, atol=1e-12)


def test_factorised_problems_are_incompatible_with_a_reason():
    reason = incompatibility(PROBLEMS.make("vae-categorical:latent=2,classes=3,batch=2"),
                             ESTIMATORS.make("unordered-set"))
    assert reason is not None and "product of several" in reason
    assert incompatibility(PROBLEMS.make("categorical-linear"),
                           ESTIMATORS.make("unordered-set")) is None
    theta = torch.zeros(3, 4, requires_grad=True)  # three categorical variables, one problem
    dist = torch.distributions.Independent(torch.distributions.OneHotCategorical(logits=theta), 1)
    with pytest.raises(IncompatibleError, match="product of several"):
        UnorderedSet().surrogate(dist, lambda z: z.sum((-1, -2)), num_samples=2,
                                 generator=torch.Generator())


def test_more_samples_than_categories_is_refused():
    with pytest.raises(UserError, match="at most num_samples=5"):
        measure("categorical-linear:k=5", "unordered-set", num_samples=6, replicates=10,
                timing=False, memory_profile=False)
    study = parse_study('name = "s"\n[[grid]]\nproblems = ["categorical-linear:k=5"]\n'
                              'estimators = ["unordered-set"]\nnum_samples = [1, 5, 6]\n')
    cells, skipped = study.expand()
    assert [cell.num_samples for cell in cells] == [5]
    assert sorted(s.reason.split(":")[0] for s in skipped) == ["num_samples=1", "num_samples=6"]


def test_far_too_many_samples_are_refused_before_the_memory_estimate():
    """num_samples = 1000 on 5 categories: the sample-range message, not a 2^1000 budget."""
    with pytest.raises(UserError, match="at most num_samples=5"):
        measure("categorical-linear:k=5", "unordered-set", num_samples=1000, replicates=10,
                timing=False, memory_profile=False)
