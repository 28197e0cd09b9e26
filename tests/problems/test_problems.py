"""Problems: exact expectations and gradients, batch polymorphism, configs."""

from __future__ import annotations

import json

import pytest
import torch

from estimators.exact import enumerate_joint
from problems import PROBLEMS
from tests.conformance.examples import all_problem_examples

EXAMPLES = all_problem_examples()


@pytest.mark.parametrize("spec", EXAMPLES)
def test_exact_gradient_matches_central_finite_differences(spec):
    problem = PROBLEMS.make(spec)
    if not problem.info.exact:
        pytest.skip("no exact expectation: the harness uses its unbiased reference gradient")
    (theta,) = problem.parameters()
    (grad,) = torch.autograd.grad(problem.expected_objective(), theta)

    def at(i: int, step: float) -> float:
        shifted = theta.detach().clone()
        shifted.view(-1)[i] += step
        return float(problem.with_parameters([shifted]).expected_objective())

    h, wide = 1e-6, 1e-2
    numeric, third = torch.empty_like(theta), torch.empty_like(theta)
    with torch.no_grad():
        for i in range(theta.numel()):
            numeric.view(-1)[i] = (at(i, h) - at(i, -h)) / (2 * h)
            # The third derivative, by a third central difference at a step this wide.
            third.view(-1)[i] = (at(i, 2 * wide) - 2 * at(i, wide) + 2 * at(i, -wide)
                                 - at(i, -2 * wide)) / (2 * wide**3)
        # The magnitude of the values summed: E f = Σ_z p(z) f(z), each term's p(z) =
        # exp(log p(z)) with a relative error of ε·|log p(z)|, so S = E_p[|f(z)| (1 + |log p(z)|)]
        # (4096 fixed draws give its scale; no more precision is needed).
        dist = problem.distribution()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            z = dist.sample((4096,))
        scale = max(float((problem.objective(z).abs() * (1 + dist.log_prob(z).abs())).mean()),
                    float(problem.expected_objective().abs()))
    # Error of a central difference in float64 on any vector path (AVX-512, AVX2 and the
    # default path sum in different orders). Each evaluation of E f is within c·ε·S of the
    # exact value, c = 16 ≥ ⌈log2 N⌉ + 4 (a cascade sum of the N ≤ 4096 terms enumerated
    # here, plus a few roundings per term), so the quotient is off by at most c·ε·S/h
    # (round-off: 1.1e-6 for the VAEs, S ≈ 300 with a negative ELBO ≈ 62; 4e-9 at S ≈ 1) plus
    # h²/6·|f'''| (truncation, with f''' estimated above and doubled for that estimate's own
    # error; below 1e-10 for every example). The autograd gradient's round-off, about
    # c·ε·S·|∂ log p|, is smaller by a factor h. Measured: at most 1.1·ε·S/h on either path.
    eps = torch.finfo(torch.float64).eps
    bound = 16 * eps * scale / h + 2 * h**2 / 6 * third.abs()
    error = (grad - numeric).abs()
    assert (error <= bound).all(), f"error {error.max().item():.3g}, bound {bound.min().item():.3g}"


@pytest.mark.parametrize("spec", EXAMPLES)
def test_expected_objective_equals_enumeration(spec):
    problem = PROBLEMS.make(spec)
    if not problem.info.enumerable:
        pytest.skip("infinite or too large a support: checked by finite differences and closed form")
    dist = problem.distribution()
    support = enumerate_joint(dist)
    by_enumeration = (dist.log_prob(support).exp() * problem.objective(support)).sum(0)
    torch.testing.assert_close(problem.expected_objective(), by_enumeration, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("t, logit", [(0.45, 0.0), (0.499, 1.3), (0.1, -2.0)])
def test_bernoulli_toy_gradient_closed_form(t, logit):
    problem = PROBLEMS.make(f"bernoulli-toy:dim=2,target={t},logit={logit}")
    (theta,) = problem.parameters()
    (grad,) = torch.autograd.grad(problem.expected_objective(), theta)
    s = torch.sigmoid(theta)
    # Autograd forms (1 − t)² − t², which cancels when t ≈ 1/2: the error is a few ulps of the
    # terms, ((1 − t)² + t²) σ(1 − σ), not of their difference.
    ulps = 8 * torch.finfo(torch.float64).eps * ((1 - t) ** 2 + t**2) * s * (1 - s)
    assert ((grad - (1 - 2 * t) * s * (1 - s)).abs() <= ulps).all()


def test_categorical_linear_is_determined_by_its_seed():
    a, b = PROBLEMS.make("categorical-linear:k=7,seed=5"), PROBLEMS.make("categorical-linear:k=7,seed=5")
    c = PROBLEMS.make("categorical-linear:k=7,seed=6")
    assert torch.equal(a.logits, b.logits) and torch.equal(a.costs, b.costs)
    assert not torch.equal(a.costs, c.costs)


@pytest.mark.parametrize("spec", EXAMPLES)
def test_methods_broadcast_over_leading_parameter_dimensions(spec):
    problem = PROBLEMS.make(spec)
    (theta,) = problem.parameters()
    batch = (3, 2)
    batched = problem.with_parameters([theta.detach().expand(*batch, *theta.shape).clone()])
    dist = batched.distribution()
    assert dist.batch_shape == batch
    z = dist.sample((5,))  # [S, *batch, *event]
    assert batched.objective(z).shape == (5, *batch)
    if not problem.info.exact:
        return  # sampling and the objective broadcast; there is no expectation to check
    expected = batched.expected_objective()
    assert expected.shape == batch
    torch.testing.assert_close(expected, problem.expected_objective().detach().expand(batch))


@pytest.mark.parametrize("spec", EXAMPLES)
def test_with_parameters_checks_trailing_shape(spec):
    problem = PROBLEMS.make(spec)
    (theta,) = problem.parameters()
    with pytest.raises(ValueError, match="must end in shape"):
        problem.with_parameters([torch.zeros(theta.numel() + 1)])


@pytest.mark.parametrize("spec", EXAMPLES)
def test_config_is_json_and_names_the_spec(spec):
    problem = PROBLEMS.make(spec)
    config = json.loads(json.dumps(problem.config()))
    assert config["spec"] == problem.spec and config["name"] == problem.info.name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_to_casts_constants_and_keeps_parameters_as_leaves(dtype):
    problem = PROBLEMS.make("categorical-linear:k=4").to("cpu", dtype)
    (theta,) = problem.parameters()
    assert theta.dtype == dtype and theta.is_leaf and theta.requires_grad
    assert problem.costs.dtype == dtype


def test_large_problems_are_not_enumerable():
    assert not PROBLEMS.make("bernoulli-toy:dim=40").info.enumerable
    assert PROBLEMS.make("bernoulli-toy:dim=4").info.enumerable
