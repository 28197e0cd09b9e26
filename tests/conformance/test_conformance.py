"""One conformance suite for every compatible (problem, estimator) pair of the registries.

The checks themselves live in ``harness/checks.py``, the one implementation that
``estibench check SPEC`` and a plug-in's own pytest suite run too; this module parametrises
each check over every pair of example specs (``harness/examples.py``: every registered entry
has at least one; ``tests/test_meta.py`` enforces it), skipped only when
``harness.incompatibility`` says the pair cannot run. Test ids are ``problem-spec|estimator-spec``
(then the dtype and device, where the check has variants).

Checks: surrogate and gradient shapes, dtype and device, finite gradients (float32 and
float64, CPU and CUDA); finite gradients at extreme logits; the same generator gives the same
estimate; f is evaluated ``objective_evaluations`` times; replicates are independent (and the
batched pass is a loop in disguise); the global generators stay untouched; for every
estimator whose info says unbiased, a statistical test of unbiasedness against the exact
gradient (false-alarm rate ``ALPHA`` of tests/statistical.py, the same as
``harness.checks.ALPHA``). Known failures are read from ``info.expected_failures``, never from
names, and become strict xfails.
"""

from __future__ import annotations

import pytest

from harness import checks
from harness.checks import Case, CheckSkipped, pytest_params, suite_cases
from tests.statistical import ALPHA


def params(check: str) -> list:
    """The check's cases as pytest params; those on CUDA carry the ``cuda`` mark (the root
    conftest skips them, saying why, where there is no CUDA device)."""
    found = []
    for param in pytest_params(suite_cases(check)):
        case = param.values[0]
        cuda = [pytest.mark.cuda] if dict(case.variant).get("device") == "cuda" else []
        found.append(pytest.param(case, id=param.id, marks=[*param.marks, *cuda]))
    return found


def run(case: Case) -> None:
    """Run the case's check."""
    skip_unless_it_applies(case.run)


def skip_unless_it_applies(check, *args, **kwargs) -> None:
    """Call the check; its skip is reported here, with its reason (pytest would place a
    ``unittest.SkipTest`` inside its own code)."""
    try:
        check(*args, **kwargs)
    except CheckSkipped as skip:
        pytest.skip(str(skip))


def test_the_suite_and_the_checks_share_one_policy():
    assert checks.ALPHA == ALPHA


@pytest.mark.parametrize("case", params("shapes"))
def test_shapes_dtype_device_and_finite_gradients(case: Case):
    run(case)


@pytest.mark.parametrize("case", params("finite_gradients"))
def test_finite_gradients_at_extreme_logits(case: Case):
    run(case)


@pytest.mark.parametrize("case", params("determinism"))
def test_same_generator_same_estimate(case: Case):
    run(case)


@pytest.mark.parametrize("case", params("objective_evaluations"))
def test_objective_evaluations_count_what_f_sees(case: Case):
    """The record's ``objective_evaluations`` is the number of samples f was evaluated on."""
    run(case)


@pytest.mark.parametrize("case", params("independence"))
def test_replicates_are_independent(case: Case):
    """Replicate 0's surrogate must not depend on any other replicate's parameters."""
    run(case)


@pytest.mark.parametrize("case", params("batched_loop"))
def test_batched_pass_equals_a_loop_of_single_estimates(case: Case):
    """With one sample per estimate the batched noise stream is the loop's stream, in order."""
    run(case)


@pytest.mark.parametrize("case", params("global_rng"))
def test_no_global_random_number_generator(case: Case):
    run(case)


@pytest.mark.statistical
@pytest.mark.parametrize("case", params("unbiased"))
def test_unbiased_estimators_are_unbiased(case: Case):
    skip_unless_it_applies(checks.check_unbiased, case.estimator, case.problem, alpha=ALPHA)
