"""REINFORCE on subsets: the set probability and the order probability, chosen by cost.

The conformance suite checks ``reinforce`` with its default choice; here both choices are
checked for unbiasedness on every exact subset problem of the examples (statistical: the bias
test's false-alarm rate α of tests/statistical.py), and ``auto`` against its cost rule.
"""

from __future__ import annotations

import pytest
import torch

from estimators import ESTIMATORS, Subset
from estimators.subset import unordered_is_cheaper
from harness import incompatibility, measure
from problems import PROBLEMS
from tests.conformance.examples import all_problem_examples
from tests.statistical import ALPHA

SUBSET_PROBLEMS = [spec for spec in all_problem_examples()
                   if PROBLEMS.make(spec).info.family == "subset" and PROBLEMS.make(spec).info.exact]


@pytest.mark.statistical
@pytest.mark.parametrize("choice", ["ordered", "unordered"])
@pytest.mark.parametrize("problem_spec", SUBSET_PROBLEMS)
def test_both_scores_are_unbiased_on_every_exact_subset_problem(problem_spec, choice):
    estimator = ESTIMATORS.make(f"reinforce:baseline=loo,set_probability={choice}")
    assert incompatibility(PROBLEMS.make(problem_spec), estimator) is None
    record = measure(problem_spec, estimator, num_samples=2, replicates=20000, seed=2024,
                     timing=False, memory_profile=False)
    assert record["estimator_config"]["diagnostics"] == {"set_probability": choice}
    assert record["bias_pvalue"] > ALPHA, (record["bias"], record["bias_stderr"])


@pytest.mark.parametrize("n, k, expected", [(8, 3, "unordered"), (16, 4, "unordered"),
                                            (16, 5, "ordered"), (100, 6, "unordered"),
                                            (100, 8, "ordered"), (40, 17, "ordered")])
def test_auto_keeps_the_set_probability_while_its_programme_is_cheap(n, k, expected):
    assert unordered_is_cheaper(n, k) == (expected == "unordered")
    dist = Subset(torch.zeros(n), k)
    assert ESTIMATORS.make("reinforce").diagnostics(dist) == {"set_probability": expected}


def test_the_ordered_score_draws_the_same_subsets_as_the_set_score():
    """Both draw the Gumbel-top-k sample from the same noise: only log p differs."""
    dist = Subset(torch.randn(3, 9, dtype=torch.float64), 4)
    seen = {}
    for choice in ("ordered", "unordered"):
        estimator = ESTIMATORS.make(f"reinforce:set_probability={choice}")
        samples = []
        estimator.surrogate(dist, lambda z: (samples.append(z), z.sum(-1))[1], num_samples=5,
                            generator=torch.Generator().manual_seed(1))
        seen[choice] = samples[0]
    torch.testing.assert_close(seen["ordered"], seen["unordered"], rtol=0, atol=0)
