"""The real subset tasks under the exact-k family (option ``distribution``)."""

from __future__ import annotations

import pytest

from estimators import ExactK, SpecError, Subset
from harness import incompatibility
from estimators import ESTIMATORS
from problems import PROBLEMS

SPECS = ["knn-subset:distribution=exactk,n=6,k=2,train_steps=40",
         "l2x:distribution=exactk,patch=4,k=2,train_steps=40"]


@pytest.mark.parametrize("spec", SPECS)
def test_exactk_tasks_hand_out_the_exact_k_family(spec):
    problem = PROBLEMS.make(spec)
    assert problem.info.family == "exactk" and isinstance(problem.distribution(), ExactK)
    assert problem.checkpoint_estimator == "simple"
    assert problem.options["distribution"] == "exactk"  # the option; distribution() the method
    assert incompatibility(problem, ESTIMATORS.make("relaxed-topk")) is not None
    assert incompatibility(problem, ESTIMATORS.make("simple")) is None


def test_the_default_stays_gumbel_top_k():
    problem = PROBLEMS.make("knn-subset:n=6,k=2,train_steps=40")
    assert problem.info.family == "subset" and isinstance(problem.distribution(), Subset)


def test_exactk_is_for_the_subset_family_of_knn():
    with pytest.raises(SpecError, match="distribution=exactk is for family=subset"):
        PROBLEMS.make("knn-subset:family=permutation,distribution=exactk,n=5,k=2")
