"""NeuralSort and SoftSort relaxations (Grover et al. 2019; Prillo & Eisenschlos 2020)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from estimators import ESTIMATORS, PlackettLuce, noise
from estimators.neuralsort import (
    neuralsort,
    neuralsort_apply,
    pairwise_abs_row_sums,
    reference_port_neuralsort,
    softsort,
)
from estimators.plackett_luce import permutation_matrix_of
from harness import measure
from harness.memory import peak_memory
from tests.finite_differences import assert_within, central_difference
from tests.statistical import ALPHA, z_threshold

RELAXATIONS = {"neuralsort": neuralsort, "softsort": softsort}


@pytest.mark.parametrize("n", [1, 2, 7, 50])
def test_row_sums_of_absolute_differences(n):
    s = torch.randn(3, n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    s[..., 0] = s[..., -1]  # a tie
    brute = (s.unsqueeze(-1) - s.unsqueeze(-2)).abs().sum(-1)
    torch.testing.assert_close(pairwise_abs_row_sums(s), brute, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("tau", [0.1, 1.0, 5.0])
def test_neuralsort_matches_the_reference_formula(tau):
    s = torch.randn(4, 9, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(neuralsort(s, tau), reference_port_neuralsort(s, tau), rtol=1e-12, atol=1e-12)


def test_softsort_matches_its_definition():
    s = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    ranked = [2.0, 0.3, -1.0]
    expected = torch.stack([torch.softmax(-(r - s).abs() / 0.7, -1) for r in ranked])
    torch.testing.assert_close(softsort(s, 0.7), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["neuralsort", "softsort"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_unimodal_row_stochastic_and_converges_to_the_sort(name, dtype):
    """Rows sum to 1; each row's argmax is the item of that rank (unimodal), at every τ here,
    on scores at least 0.05 apart; the matrix tends to the sorting permutation as τ → 0."""
    generator = torch.Generator().manual_seed(2)
    s = (torch.randperm(40, generator=generator).to(dtype) * 0.05).reshape(4, 10)  # no ties
    truth = permutation_matrix_of(s.argsort(-1, descending=True), s)
    errors = []
    for tau in (1.0, 0.1, 0.01, 1e-3):
        p = RELAXATIONS[name](s, tau)
        torch.testing.assert_close(p.sum(-1), torch.ones(4, 10, dtype=dtype), rtol=0, atol=1e-5)
        assert torch.equal(p.argmax(-1), s.argsort(-1, descending=True))
        errors.append(float((p - truth).abs().max()))
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-6


def test_neuralsort_gives_an_exact_permutation_at_tiny_temperature_in_float32():
    """A reported failure of the reference code: tiny τ in float32 not giving a permutation.

    The logits are of size n·|s|, so scores closer than about n·|s|·2^-23 tie in float32
    whatever τ is; these scores (n = 100, |s| <= 5) are at least 0.01 apart.
    """
    generator = torch.Generator().manual_seed(0)
    s = torch.stack([torch.randperm(1000, generator=generator)[:100] for _ in range(64)]) * 0.01 - 5
    p = neuralsort(s, 1e-6)
    truth = permutation_matrix_of(s.argsort(-1, descending=True), s)
    assert torch.isfinite(p).all() and torch.equal(p, truth)


@pytest.mark.parametrize("block", [1, 7, None])
def test_lean_apply_equals_the_full_matrix_product_with_gradients(block):
    s = torch.randn(2, 30, generator=torch.Generator().manual_seed(3), dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 30, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64, requires_grad=True)
    full = neuralsort(s, 0.5) @ v
    lean = neuralsort_apply(s, v, 0.5, block=block)
    torch.testing.assert_close(lean, full, rtol=1e-12, atol=1e-12)
    w = torch.randn_like(full)
    for a, b in zip(torch.autograd.grad((full * w).sum(), (s, v)), torch.autograd.grad((lean * w).sum(), (s, v))):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_lean_apply_never_holds_the_n_by_n_matrix():
    n = 2048
    s = torch.randn(n)
    v = torch.randn(n, 1)

    def run(fn):
        def go():
            x = s.clone().requires_grad_(True)
            fn(x).sum().backward()
        return peak_memory(go, torch.device("cpu"))[0]

    full = run(lambda x: neuralsort(x, 1.0) @ v)
    lean = run(lambda x: neuralsort_apply(x, v, 1.0, block=64))
    square = n * n * 4
    assert full >= square and lean < square / 8, (full / square, lean / square)


# Exactly tied scores. A_s 1 is not differentiable there; the gradient we give is that of the
# naive formula Σ_k |s_j − s_k| with torch's abs (sign(0) = 0), which for NeuralSort is the
# average of the one-sided derivatives (each |s_j − s_k| has one kink, composed with smooth
# maps), i.e. the central difference. Before the fix, the prefix-sum formula counted tied
# scores as below or above each other in torch.sort's tie order and gave one one-sided
# derivative: grad tr(P̂) at s = [[1, 1, 0]], τ = 1 was [0.4610, -0.1157, -0.3454].
TIE_TRACE_GRADIENT = [0.6277707267484608, -0.2824036226634258, -0.34536710408503485]

NEURALSORT_PATHS = {
    "full": lambda s, tau: neuralsort(s, tau),
    "lean": lambda s, tau: neuralsort_apply(s, torch.eye(s.shape[-1], dtype=s.dtype), tau),
    "lean-block-1": lambda s, tau: neuralsort_apply(s, torch.eye(s.shape[-1], dtype=s.dtype), tau, block=1),
}


def _grad(fn, s, weights):
    x = s.clone().requires_grad_(True)
    (g,) = torch.autograd.grad((fn(x) * weights).sum(), x)
    return g


def _check_central_difference(fn, s, weights, grad):
    """The gradient at ties against the central difference of Σ w·P̂(s), within the bound of
    tests/finite_differences.py for a kink at s (S = Σ|w·P̂| is the size of what is summed)."""
    loss = lambda x: float((fn(x) * weights).sum())  # noqa: E731
    scale = float((fn(s) * weights).abs().sum())
    numeric, bound = central_difference(loss, s, scale, kink=True)
    assert_within(grad, numeric, bound)


# float32 comparisons with the float32 naive formula or a float64 value: entries are O(1)
# softmax weights and their gradients, each a sum of at most n = 9 terms of size <= 1/τ <= 1.5,
# so they differ by at most a few roundings per term: 9 · 8 ε₃₂ · 1.5 ≈ 1.3e-5 absolute, with
# 1e-4 relative for the larger entries (and 1e-12 for the float64 ones, n · 8 ε₆₄ · 1.5 ≈ 2e-14).


@pytest.mark.parametrize("path", NEURALSORT_PATHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_neuralsort_gradient_at_a_tie_is_the_average_of_the_one_sided_derivatives(path, dtype):
    """The issue's case: grad of tr(P̂) at s = [[1, 1, 0]], τ = 1."""
    s = torch.tensor([[1.0, 1.0, 0.0]], dtype=dtype)
    eye = torch.eye(3, dtype=dtype)
    fn = lambda x: NEURALSORT_PATHS[path](x, 1.0)  # noqa: E731
    grad = _grad(fn, s, eye)
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 2e-5}
    torch.testing.assert_close(grad, torch.tensor([TIE_TRACE_GRADIENT], dtype=dtype), **tol)
    naive = _grad(lambda x: reference_port_neuralsort(x, 1.0), s, eye)
    torch.testing.assert_close(grad, naive, **tol)
    if dtype == torch.float64:
        _check_central_difference(lambda x: fn(x.unsqueeze(0))[0], s[0], eye, grad[0])


@pytest.mark.parametrize("path", NEURALSORT_PATHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_neuralsort_gradient_at_ties_of_two_three_and_four(path, dtype):
    """Tie groups of sizes 1-4 in a batch, a random linear loss: the naive O(n²) formula's
    gradient, the central difference, and the same gradient whichever tied label comes first."""
    generator = torch.Generator().manual_seed(11)
    s = torch.tensor([[0.5, -1.0, 0.5, 2.0, -1.0, 0.5, 3.0, -1.0, -1.0],
                      [1.0, 1.0, 1.0, 1.0, 0.0, 2.0, 2.0, -3.0, 0.25]], dtype=dtype)
    weights = torch.randn(2, 9, 9, generator=generator, dtype=dtype)
    fn = lambda x: NEURALSORT_PATHS[path](x, 0.7)  # noqa: E731
    grad = _grad(fn, s, weights)
    tol = {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 2e-5}
    torch.testing.assert_close(grad, _grad(lambda x: reference_port_neuralsort(x, 0.7), s, weights), **tol)
    if dtype == torch.float64:
        for b in range(2):
            _check_central_difference(lambda x: fn(x.unsqueeze(0))[0], s[b], weights[b], grad[b])
    # relabel: swapping two tied items is a symmetry of s, so it permutes the gradient
    swap = torch.arange(9)
    swap[[0, 2]] = swap[[2, 0]]
    relabelled = _grad(fn, s[:, swap], weights[..., swap])
    torch.testing.assert_close(relabelled[:, swap], grad, **tol)


def test_row_sums_gradient_at_ties_uses_sign_zero():
    s = torch.tensor([[2.0, 2.0, 2.0, -1.0, 0.0, 0.0]], dtype=torch.float64)
    weights = torch.randn(1, 6, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    brute = lambda x: (x.unsqueeze(-1) - x.unsqueeze(-2)).abs().sum(-1)  # noqa: E731
    torch.testing.assert_close(_grad(pairwise_abs_row_sums, s, weights), _grad(brute, s, weights),
                               rtol=1e-12, atol=1e-12)


def test_deterministic_neuralsort_estimator_at_tied_scores():
    """The issue's path: stochastic=false relaxes the scores themselves, which may tie."""
    theta = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64, requires_grad=True)
    trace = lambda z: z.diagonal(dim1=-2, dim2=-1).sum(-1)  # noqa: E731
    loss = ESTIMATORS.make("neuralsort:temperature=1.0,stochastic=false").surrogate(
        PlackettLuce(theta), trace, num_samples=2, generator=torch.Generator().manual_seed(0))
    (grad,) = torch.autograd.grad(loss, theta)
    torch.testing.assert_close(grad, torch.tensor(TIE_TRACE_GRADIENT, dtype=torch.float64),
                               rtol=1e-12, atol=1e-12)


def _softsort_in_order(s, order, tau):
    """SoftSort with the descending sort given by ``order`` (one way to break its ties)."""
    ranked = s[order]
    return torch.softmax(-(ranked.unsqueeze(-1) - s.unsqueeze(-2)).abs() / tau, dim=-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_softsort_gradient_at_ties_is_the_mean_over_tie_orders(dtype):
    """SoftSort's kinks at a tie (the sort's and the abs's) coincide, so its central difference
    is not a sign(0) rule; our choice is the mean over the orders of each tie of the gradient
    with that order, which shares the sort's gradient evenly among the tied items and is the
    same whichever label comes first (before the fix, torch.sort's order chose)."""
    s = torch.tensor([1.0, 1.0, 0.0, 2.0, 1.0, 0.0], dtype=dtype)
    weights = torch.randn(6, 6, generator=torch.Generator().manual_seed(13), dtype=dtype)
    grad = _grad(lambda x: softsort(x, 0.8), s, weights)
    per_order = [
        _grad(lambda x: _softsort_in_order(x, torch.tensor([3, *ones, *zeros]), 0.8), s, weights)
        for ones in itertools.permutations([0, 1, 4]) for zeros in itertools.permutations([2, 5])
    ]
    tol = {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-5}
    torch.testing.assert_close(grad, torch.stack(per_order).mean(0), **tol)
    torch.testing.assert_close(softsort(s, 0.8), _softsort_in_order(s, torch.tensor([3, 0, 1, 4, 2, 5]), 0.8),
                               rtol=0, atol=0)


@pytest.mark.parametrize("name", ["neuralsort", "softsort", "st-neuralsort"])
@pytest.mark.parametrize("stochastic", [True, False])
def test_single_sample_estimate_against_the_formula(name, stochastic):
    tau = 0.6
    theta = torch.randn(5, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    x = torch.randn(5, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    f = lambda z: ((z * x).sum(-1) * torch.arange(5, dtype=torch.float64)).sum(-1) ** 2  # noqa: E731
    theta_a = theta.clone().requires_grad_(True)
    loss = ESTIMATORS.make(f"{name}:temperature={tau},stochastic={str(stochastic).lower()}").surrogate(
        PlackettLuce(theta_a), f, num_samples=1, generator=torch.Generator().manual_seed(8))
    (grad,) = torch.autograd.grad(loss, theta_a)
    theta_b = theta.clone().requires_grad_(True)
    keys = theta_b.unsqueeze(0)
    if stochastic:
        keys = keys + noise.gumbel((1, 5), torch.Generator().manual_seed(8), like=theta_b)
    relax = reference_port_neuralsort if name != "softsort" else softsort
    p = relax(keys, tau)
    if name == "st-neuralsort":
        p = permutation_matrix_of(keys.detach().argsort(-1, descending=True), p) + (p - p.detach())
    (expected,) = torch.autograd.grad(f(p).mean(), theta_b)
    torch.testing.assert_close(loss.detach(), f(p).mean().detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.statistical
def test_reinforce_on_permutation_assignment_is_unbiased():
    record = measure("permutation-assignment:n=5", "reinforce", replicates=20000, seed=4,
                     timing=False, memory_profile=False)
    assert record["bias_pvalue"] > ALPHA


@pytest.mark.statistical
def test_neuralsort_bias_falls_with_the_temperature():
    norms = []
    for tau in (10.0, 3.0, 1.0):
        record = measure("permutation-assignment:n=5", f"neuralsort:temperature={tau}",
                         replicates=20000, seed=2, timing=False, memory_profile=False)
        norms.append((record["bias_norm"], math.sqrt(sum(s * s for s in record["bias_stderr"]))))
    for (high, se_high), (low, se_low) in itertools.pairwise(norms):
        assert high - low > z_threshold() * math.hypot(se_high, se_low), norms
