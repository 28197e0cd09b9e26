"""One conformance suite for every compatible (problem, estimator) pair of the registries.

Pairs come from the example specs in ``examples.py`` (every registered entry has at least one;
``tests/test_meta.py`` enforces it), skipped only when ``harness.incompatibility`` says the
pair cannot run. Test ids are ``problem-spec|estimator-spec``.

Checks: surrogate and gradient shapes, dtype and device; finite gradients; the same generator
gives the same estimate; f is evaluated ``objective_evaluations`` times; replicates are independent (the batched pass is a loop in disguise);
for every estimator whose info says unbiased, a statistical test of unbiasedness against the
exact gradient (false-alarm rate in tests/statistical.py). Known failures are read from
``info.expected_failures``, never from names.
"""

from __future__ import annotations

import pytest
import torch

from estimators import ESTIMATORS
from harness import incompatibility, measure
from problems import PROBLEMS
from tests.conformance.examples import all_estimator_examples, all_problem_examples
from tests.statistical import ALPHA

DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param("cuda", id="cuda", marks=pytest.mark.cuda),
]
DTYPES = [pytest.param(torch.float32, id="float32"), pytest.param(torch.float64, id="float64")]


def compatible_pairs() -> list:
    pairs = []
    for problem_spec in all_problem_examples():
        for estimator_spec in all_estimator_examples():
            problem = PROBLEMS.make(problem_spec)
            estimator = ESTIMATORS.make(estimator_spec)
            if incompatibility(problem, estimator) is None:
                pairs.append(pytest.param(problem_spec, estimator_spec,
                                          id=f"{problem_spec}|{estimator_spec}"))
    return pairs


PAIRS = compatible_pairs()


def expect_failure(estimator, problem, check: str) -> None:
    """xfail (strictly, through pytest) when the estimator's info declares this failure."""
    for failure in estimator.info.expected_failures:
        if failure.check == check and (not failure.families or problem.info.family in failure.families):
            pytest.xfail(failure.reason)


def replicated(problem, replicates: int, device, dtype):
    work = problem.to(device, dtype)
    theta = [p.detach().expand(replicates, *p.shape).clone().requires_grad_(True)
             for p in work.parameters()]
    return work.with_parameters(theta), theta


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("problem_spec, estimator_spec", PAIRS)
def test_shapes_dtype_device_and_finite_gradients(problem_spec, estimator_spec, dtype, device):
    problem, estimator = PROBLEMS.make(problem_spec), ESTIMATORS.make(estimator_spec)
    expect_failure(estimator, problem, "finite_gradients")
    work, theta = replicated(problem, 7, device, dtype)
    num_samples = max(3, estimator.min_samples())
    generator = torch.Generator(device).manual_seed(0)
    loss = estimator.surrogate(work.distribution(), work.objective,
                               num_samples=num_samples, generator=generator)
    assert loss.shape == (7,)
    assert loss.dtype == dtype and loss.device.type == device
    grads = torch.autograd.grad(loss.sum(), theta)
    for grad, param in zip(grads, theta):
        assert grad.shape == param.shape and grad.dtype == dtype and grad.device.type == device
        assert torch.isfinite(grad).all()


@pytest.mark.parametrize("problem_spec, estimator_spec", PAIRS)
def test_same_generator_same_estimate(problem_spec, estimator_spec):
    problem, estimator = PROBLEMS.make(problem_spec), ESTIMATORS.make(estimator_spec)
    results = []
    for _ in range(2):
        work, theta = replicated(problem, 5, "cpu", torch.float64)
        loss = estimator.surrogate(work.distribution(), work.objective,
                                   num_samples=max(2, estimator.min_samples()),
                                   generator=torch.Generator().manual_seed(123))
        results.append((loss.detach(), torch.autograd.grad(loss.sum(), theta)))
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=0)


@pytest.mark.parametrize("problem_spec, estimator_spec", PAIRS)
def test_objective_evaluations_count_what_f_sees(problem_spec, estimator_spec):
    """The record's ``objective_evaluations`` is the number of samples f was evaluated on."""
    problem, estimator = PROBLEMS.make(problem_spec), ESTIMATORS.make(estimator_spec)
    work, _ = replicated(problem, 3, "cpu", torch.float64)
    seen = []

    def counted(z):
        seen.append(z.shape[0])
        return work.objective(z)

    num_samples = max(3, estimator.min_samples())
    dist = work.distribution()
    estimator.surrogate(dist, counted, num_samples=num_samples,
                        generator=torch.Generator().manual_seed(5))
    assert sum(seen) == estimator.objective_evaluations(dist, num_samples)


@pytest.mark.parametrize("problem_spec, estimator_spec", PAIRS)
def test_replicates_are_independent(problem_spec, estimator_spec):
    """Replicate 0's surrogate must not depend on any other replicate's parameters."""
    problem, estimator = PROBLEMS.make(problem_spec), ESTIMATORS.make(estimator_spec)
    work, theta = replicated(problem, 4, "cpu", torch.float64)
    loss = estimator.surrogate(work.distribution(), work.objective,
                               num_samples=max(2, estimator.min_samples()),
                               generator=torch.Generator().manual_seed(7))
    grads = torch.autograd.grad(loss[0], theta, allow_unused=True)
    for grad in grads:
        if grad is not None:
            assert torch.count_nonzero(grad[1:]) == 0


@pytest.mark.parametrize("problem_spec, estimator_spec", PAIRS)
def test_batched_pass_equals_a_loop_of_single_estimates(problem_spec, estimator_spec):
    """With one sample per estimate the batched noise stream is the loop's stream, in order."""
    problem, estimator = PROBLEMS.make(problem_spec), ESTIMATORS.make(estimator_spec)
    if estimator.min_samples() > 1:
        pytest.skip("needs several samples per estimate: covered by test_replicates_are_independent")
    work, theta = replicated(problem, 6, "cpu", torch.float64)
    loss = estimator.surrogate(work.distribution(), work.objective, num_samples=1,
                               generator=torch.Generator().manual_seed(3))
    batched = torch.autograd.grad(loss.sum(), theta)[0]
    single = problem.to("cpu", torch.float64)
    generator = torch.Generator().manual_seed(3)
    loop = []
    for _ in range(6):
        value = estimator.surrogate(single.distribution(), single.objective, num_samples=1,
                                    generator=generator)
        loop.append(torch.autograd.grad(value, single.parameters())[0])
    torch.testing.assert_close(batched, torch.stack(loop), rtol=1e-12, atol=1e-15)


@pytest.mark.statistical
@pytest.mark.parametrize("problem_spec, estimator_spec", PAIRS)
def test_unbiased_estimators_are_unbiased(problem_spec, estimator_spec):
    problem, estimator = PROBLEMS.make(problem_spec), ESTIMATORS.make(estimator_spec)
    if not estimator.info.unbiased:
        pytest.skip(f"{estimator.info.name} does not claim to be unbiased")
    expect_failure(estimator, problem, "unbiased")
    record = measure(problem, estimator, num_samples=max(2, estimator.min_samples()),
                     replicates=20000, seed=2024, timing=False, memory_profile=False)
    assert record["bias_pvalue"] > ALPHA, (record["bias"], record["bias_stderr"])
