"""Relaxed top-k (Xie & Ermon 2019): the formula, its limits, its numerics, its memory."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from estimators import ESTIMATORS, Subset, native, noise
from estimators.relaxed_topk import reference_port_relaxed_topk, relaxed_topk
from estimators.subset import topk_khot
from harness import measure
from harness.memory import peak_memory
from tests.statistical import z_threshold


@pytest.fixture(params=["torch", "native"])
def backend(request):
    """Each formula test runs on the torch implementation and on the C kernel (CPU)."""
    if request.param == "native" and native.library() is None:
        pytest.skip(f"the C kernel is unavailable here: {native.status()}")
    return request.param


def textbook(keys: torch.Tensor, k: int, tau: float) -> torch.Tensor:
    """The recursion exactly as written, in float64: r ← r + log(1 − α); α = softmax(r/τ)."""
    r = keys.double()
    total = torch.zeros_like(r)
    for _ in range(k):
        alpha = torch.softmax(r / tau, -1)
        total = total + alpha
        r = r + torch.log1p(-alpha)
    return total


def gumbel_keys(logits, samples, seed):
    g = noise.gumbel((samples,) + tuple(logits.shape), torch.Generator().manual_seed(seed), like=logits)
    return logits + g


@pytest.mark.parametrize("tau", [0.1, 1.0, 10.0])
def test_the_papers_synthetic_check(tau, backend):
    """n = 4, k = 2, weights ∝ (1, 2, 3, 4): the top-k of 10,000 relaxed samples is within
    total variation 0.02 of the exact subset probabilities (Xie & Ermon 2019 report ≈ 0.016)."""
    logits = torch.log(torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64))
    dist = Subset(logits, 2)
    y = relaxed_topk(gumbel_keys(logits, 10_000, seed=0), 2, tau, backend=backend)
    hard = topk_khot(y, 2)
    support = dist.enumerate_support()  # [6, 4]
    exact = dist.log_prob(support).exp()
    empirical = (hard[:, None, :] == support[None]).all(-1).double().mean(0)
    tv = 0.5 * float((empirical - exact).abs().sum())
    assert tv <= 0.02, tv


@pytest.mark.parametrize("k, tau", [(1, 0.5), (3, 0.5), (3, 2.0), (7, 0.3), (10, 1.0)])
def test_matches_the_textbook_recursion_with_and_without_checkpointing(k, tau, backend):
    logits = torch.randn(2, 10, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
    keys = gumbel_keys(logits, 3, seed=k).requires_grad_(True)
    weights = torch.randn(10, dtype=torch.float64, generator=torch.Generator().manual_seed(99))
    expected = textbook(keys, k, tau)
    (expected_grad,) = torch.autograd.grad((expected * weights).sum(), keys)
    for segment in (1, 2, None, k):
        y = relaxed_topk(keys, k, tau, segment=segment, backend=backend)
        torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)
        (grad,) = torch.autograd.grad((y * weights).sum(), keys)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("a_logit", [-2.0, 0.0, 0.7, 3.0])
def test_closed_form_for_two_items(a_logit, backend):
    """n = k = 2, τ = 1: α¹ = (a, 1 − a) and α² = (1/2, 1/2) exactly, so y = (a + ½, 3/2 − a).

    The published relaxation can put more than 1 on an item at moderate τ; this pins it down.
    """
    keys = torch.tensor([a_logit, 0.0], dtype=torch.float64)
    a = 1 / (1 + math.exp(-a_logit))
    torch.testing.assert_close(relaxed_topk(keys, 2, 1.0, backend=backend), torch.tensor([a + 0.5, 1.5 - a], dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tau", [1e-3, 0.1, 1.0, 100.0])
def test_sums_to_k_and_stays_finite(dtype, tau, backend):
    logits = torch.randn(64, 50, generator=torch.Generator().manual_seed(0), dtype=dtype) * 10
    keys = gumbel_keys(logits, 1, seed=1)[0].requires_grad_(True)
    y = relaxed_topk(keys, 12, tau, backend=backend)
    torch.testing.assert_close(y.sum(-1), torch.full((64,), 12.0, dtype=dtype), rtol=0, atol=1e-4 if dtype == torch.float32 else 1e-10)
    assert (y >= 0).all()
    (grad,) = torch.autograd.grad((y * torch.arange(50, dtype=dtype)).sum(), keys)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_an_item_whose_alpha_rounds_to_one_is_not_drawn_twice(dtype, backend):
    """The reference code's bug: log(max(1 − α, ε)) lowers a sure winner by only −log ε, so it
    wins again and its entry approaches 2. Here it is lowered by the exact amount."""
    keys = torch.tensor([[100.0, 0.0, -1.0, -2.0], [50.0, 49.0, 0.0, -50.0]], dtype=dtype)
    keys.requires_grad_(True)
    y = relaxed_topk(keys, 2, 0.1, backend=backend)
    assert (y[0] <= 1).all(), y
    # Row 1 is the published relaxation exceeding 1 by itself: α¹ = (1 − 4.5e-5, 4.5e-5, ..)
    # and α² ≈ (0, 1, ..), so y_1 ≈ 1 + 4.5e-5 in exact arithmetic. The exact values: item 0 is drawn at step 1, then a softmax over the rest at τ = 0.1
    # (the textbook recursion gets the values right here; its log1p(−1) = −inf breaks only
    # its gradient).
    torch.testing.assert_close(y, textbook(keys.detach(), 2, 0.1).to(dtype))
    assert torch.isfinite(torch.autograd.grad(y[:, 1].sum(), keys)[0]).all()
    if dtype == torch.float32:
        assert float(reference_port_relaxed_topk(keys.detach(), 2, 0.1).max()) > 1.9


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("tau", [1e-2, 1e-3, 1e-5])
def test_tends_to_the_top_k_sample_as_temperature_falls(k, tau, backend):
    """Where the k + 1 largest keys are at least 40τ apart, every softmax step is one-hot to
    within about n·e^{-40}, and the winner's key then falls by about gap/τ ≥ 400, below every
    other key (the keys span about 80), so y equals the top-k sample to 1e-12."""
    logits = torch.linspace(-35, 35, 8, dtype=torch.float64)  # 10 apart: most draws separate
    keys = gumbel_keys(logits, 2000, seed=k)
    ordered = keys.sort(-1, descending=True).values
    separated = (ordered[:, :k] - ordered[:, 1 : k + 1]).min(-1).values > 40 * tau
    assert separated.sum() >= 20
    error = (relaxed_topk(keys, k, tau, backend=backend) - topk_khot(keys, k))[separated].abs().max()
    assert float(error) < 1e-12


@pytest.mark.parametrize("name", ["relaxed-topk", "st-relaxed-topk"])
def test_single_sample_estimate_against_the_textbook_recursion(name):
    tau, k = 0.7, 3
    theta = torch.randn(6, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    w = torch.randn(6, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    f = lambda z: ((z * w).sum(-1)) ** 2  # noqa: E731
    theta_a = theta.clone().requires_grad_(True)
    loss = ESTIMATORS.make(f"{name}:temperature={tau}").surrogate(
        Subset(theta_a, k), f, num_samples=1, generator=torch.Generator().manual_seed(8))
    (grad,) = torch.autograd.grad(loss, theta_a)
    theta_b = theta.clone().requires_grad_(True)
    keys = theta_b + noise.gumbel((1, 6), torch.Generator().manual_seed(8), like=theta_b)
    y = textbook(keys, k, tau)
    z = y if name == "relaxed-topk" else topk_khot(keys.detach(), k) + (y - y.detach())
    (expected,) = torch.autograd.grad(f(z).mean(), theta_b)
    torch.testing.assert_close(loss.detach(), f(z).mean().detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)


def test_backward_does_not_keep_k_full_size_intermediates(backend):
    """Peak memory of forward + backward, k = 64, n = 2^17 (past the size up to which every
    step is kept): the kernel holds about 2√k states plus a few temporaries, the reference
    port every step's intermediates."""
    n = 2**17
    keys = torch.randn(n)

    def run(fn):
        def go():
            x = keys.clone().requires_grad_(True)
            fn(x, 64, 0.5).sum().backward()
        return peak_memory(go, torch.device("cpu"))[0]

    ours = run(lambda x, k, tau: relaxed_topk(x, k, tau, backend=backend))
    reference = run(reference_port_relaxed_topk)
    state = n * 4
    assert ours < 40 * state < 64 * state < reference, (ours / state, reference / state)


@pytest.mark.statistical
def test_bias_falls_as_the_temperature_falls():
    """On subset-linear:n=8,k=3, the bias norm at τ = 10, 1, 0.3 decreases, each step by more
    than the two-sided α threshold times the combined standard error of the two norms."""
    norms = []
    for tau in (10.0, 1.0, 0.3):
        record = measure("subset-linear:n=8,k=3", f"relaxed-topk:temperature={tau}",
                         replicates=20000, seed=1, timing=False, memory_profile=False)
        se = math.sqrt(sum(s * s for s in record["bias_stderr"]))  # bounds the norm's s.e.
        norms.append((record["bias_norm"], se))
    for (high, se_high), (low, se_low) in itertools.pairwise(norms):
        assert high - low > z_threshold() * math.hypot(se_high, se_low), norms


@pytest.mark.statistical
def test_reinforce_on_subsets_is_unbiased_by_the_harness():
    record = measure("subset-linear:n=8,k=3", "reinforce", replicates=20000, seed=3,
                     timing=False, memory_profile=False)
    from tests.statistical import ALPHA
    assert record["bias_pvalue"] > ALPHA
