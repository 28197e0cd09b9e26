"""Statistics of R gradient estimates: moments and the test of unbiasedness."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from scipy import stats
from torch import Tensor


def bias_test(
    bias: Tensor, stderr: Tensor, replicates: int, *, tolerance: Tensor,
    spread: Tensor | None = None,
) -> float:
    """p-value of H0 "the estimator is unbiased", from per-coordinate bias and standard error.

    Each coordinate gets a two-sided t-test (R − 1 degrees of freedom) of bias == 0; the
    coordinates are combined with the Bonferroni correction, p = min(1, D · min_i p_i), which
    holds whatever the correlation between coordinates. Under H0, P(p ≤ α) ≤ α.

    A coordinate whose estimates vary by no more than round-off cannot be tested statistically:
    a t-test there would compare the bias with the spread of the rounding errors, and a
    deterministic rounding error of a few ulps is then "significant" (straight-through on a
    linear objective, exact up to round-off, got p = 0 in float32). Such a coordinate counts as
    unbiased when |bias| is within ``tolerance`` and as certainly biased otherwise. It is one
    with zero standard error, or, where ``spread`` (the round-off bound τ of one estimate) is
    given, one with standard error at most τ/√(R − 1): R numbers within ±τ of one value have a
    sample variance (ddof 1) of at most τ² R/(R − 1) (Popoviciu's inequality), i.e. a standard
    error of at most τ/√(R − 1), so a larger standard error is more than round-off can make.

    The t-tests are asymptotic: when a coordinate's estimates are dominated by events too rare
    to appear among the draws (an item chosen with probability 1e-4, R · S = 4,000 draws), the
    sample mean is skewed and the test rejects although the estimator is unbiased.
    """
    bias, stderr = bias.double(), stderr.double()
    untestable = roundoff_scale(stderr, replicates, spread)
    pvalues = []
    for b, s, tol, flat in zip(bias.tolist(), stderr.tolist(), tolerance.tolist(),
                               untestable.tolist()):
        if flat:
            pvalues.append(1.0 if abs(b) <= tol else 0.0)
        else:
            pvalues.append(2 * stats.t.sf(abs(b) / s, df=max(replicates - 1, 1)))
    if not pvalues:
        return 1.0
    return min(1.0, len(pvalues) * min(pvalues))


def roundoff_scale(stderr: Tensor, replicates: int, spread: Tensor | None) -> Tensor:
    """``[D]`` bool: coordinates whose standard error round-off alone explains (zero, or at
    most ``spread``/√(R − 1) where the round-off bound ``spread`` is given; see ``bias_test``)."""
    flat = stderr <= 0
    if spread is not None:
        flat = flat | (stderr <= spread.double() / math.sqrt(max(replicates - 1, 1)))
    return flat


def finite_or_none(value: float) -> float | None:
    """``value`` as a float, or ``None`` when it is NaN or infinite (records stay valid JSON)."""
    value = float(value)
    return value if math.isfinite(value) else None


def summarise(
    estimates: Tensor,
    true: Tensor,
    true_stderr: Tensor | None,
    eps: float,
    roundoff: Tensor | Callable[[], Tensor] | None = None,
    objective_scale: float = 0.0,
) -> dict:
    """Every metric of ``harness.record.METRICS`` that depends on the estimates alone.

    Args:
        estimates: ``[R, D]`` gradient estimates.
        true: ``[D]`` true (or reference) gradient.
        true_stderr: ``[D]`` standard error of a reference gradient, ``None`` if exact.
        eps: machine epsilon of the dtype the estimates were computed in.
        roundoff: ``[D]`` measured round-off of one estimate (its difference from the same
            estimate in float64), if known; or a function that measures it, called only when
            some coordinate is at round-off scale.
        objective_scale: |E f|, the scale of the terms an exact gradient sums, if known.

    Round-off bound of one estimate: τ = 64 ε max(‖true‖∞, ‖mean‖∞) plus the float64 round-off
    of the true gradient itself, 64 ε₆₄ max(‖true‖∞, |E f|) (a gradient that is zero in exact
    arithmetic comes out of float64 autograd as about 1e-16 |E f|). A coordinate at round-off
    scale (zero variance, or a standard error of at most τ/√(R − 1), which is all that
    estimates within ±τ of one value can have; see ``bias_test``) is not t-tested: it counts as
    unbiased when its bias is within τ plus 4 times the measured round-off where it is given
    (cancellation can make the round-off large next to a small gradient).
    """
    g = estimates.double()
    true = true.double()
    replicates = g.shape[0]
    mean = g.mean(0)
    var = g.var(0, correction=1) if replicates > 1 else torch.zeros_like(mean)
    std = var.sqrt()
    bias = mean - true
    stderr_sq = var / replicates
    if true_stderr is not None:
        stderr_sq = stderr_sq + true_stderr.double() ** 2
    bias_stderr = stderr_sq.sqrt()
    scale = max(float(true.abs().max()), float(mean.abs().max()), 1e-300)
    float64_eps = torch.finfo(torch.float64).eps
    true_roundoff = 64 * float64_eps * max(float(true.abs().max()), objective_scale)
    spread = torch.full_like(mean, 64 * eps * scale + true_roundoff)
    tolerance = spread
    if callable(roundoff):
        flat = roundoff_scale(bias_stderr, replicates, spread).any()
        roundoff = roundoff() if bool(flat) else None
    if roundoff is not None:
        tolerance = tolerance + 4 * roundoff.double()
    if true.norm() > 0:
        cosine = finite_or_none(
            torch.nn.functional.cosine_similarity(g, true.expand_as(g), dim=1).mean()
        )
    else:
        cosine = None
    varying = std > 0
    snr = finite_or_none((mean.abs()[varying] / std[varying]).mean()) if varying.any() else None
    return {
        "mean_gradient": mean.tolist(),
        "bias": bias.tolist(),
        "bias_norm": float(bias.norm()),
        "bias_stderr": bias_stderr.tolist(),
        "bias_pvalue": bias_test(bias, bias_stderr, replicates, tolerance=tolerance,
                                 spread=spread),
        "variance": float(var.sum()),
        "variance_per_coord": var.tolist(),
        "mse": float(((g - true) ** 2).sum(1).mean()),
        "cosine": cosine,
        "snr": snr,
    }
