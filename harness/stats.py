"""Statistics of R gradient estimates: moments and the test of unbiasedness."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
from scipy import stats
from torch import Tensor


def bias_test(
    bias: Tensor, stderr: Tensor, replicates: int, *, tolerance: Tensor,
    spread: Tensor | None = None, third_moment: Tensor | None = None,
) -> float:
    """p-value of H0 "the estimator is unbiased", from per-coordinate bias and standard error.

    Each coordinate gets a two-sided test of bias == 0; the coordinates are combined with the
    Bonferroni correction, p = min(1, D · min_i p_i), which holds whatever the correlation
    between coordinates. Under H0, P(p ≤ α) ≤ α up to the accuracy of the per-coordinate tests.

    Args:
        bias: ``[D]`` mean estimate minus the true gradient.
        stderr: ``[D]`` standard error of ``bias`` (the estimates' √(s²/R), combined with a
            reference gradient's standard error where the true gradient is one).
        replicates: R, the number of estimates.
        tolerance: ``[D]`` largest |bias| that counts as unbiased at round-off scale.
        spread: ``[D]`` round-off bound τ of one estimate, if known.
        third_moment: ``[D]`` third central moment m₃ = mean_r (ĝ_r − ḡ)³ of the estimates;
            ``None`` gives the plain t-test.

    The test of one coordinate is Hall's (1992) transformation of the t statistic
    T = bias / stderr, which removes the skewness of T:

        H = T + a T²/3 + a² T³/27 + a/6,   a = m₃ / (R² · stderr³),

    referred to Student's t with R − 1 degrees of freedom, p_i = 2 P(t_{R−1} > |H|). Here a
    is the skewness of the bias: γ̂/√R for plain estimates, γ̂ = m₃/s³ the skewness of one.

    Why: the mean of R estimates of skewness γ is skewed by γ/√R, and the studentised T by
    about −2γ/√R (for right-skewed estimates a low mean comes with a low standard deviation):
    P(T ≤ x) = Φ(x) + (γ/6√R)(2x² + 1)φ(x) + O(1/R), so each tail of the plain t-test is off
    at order 1/√R. Two-sided those terms cancel, but the next grows like γ²x⁵/R, and the
    Bonferroni combination works far out in the tails (level α/D per coordinate): REINFORCE
    with a category of probability 0.045 (|γ| ≈ 4) gave the plain test a false-alarm rate of
    0.0020 at α = 0.001 for R = 1000, and 0.0091 for R = 200. H removes the 1/√R term of each
    tail (T's one-term Cornish–Fisher correction: P(H ≤ x) = Φ(x) + O(1/R)); its a/6 + aT²/3
    terms are Johnson's (1978) modified t, and Hall's cubic term makes
    H = ((1 + aT/3)³ − 1)/a + a/6 strictly increasing in T, so each tail keeps one rejection
    region (Johnson's quadratic turns back). On the same cells its rates at α = 0.001 were
    0.00076 and 0.00067; tests/harness/test_bias_calibration.py checks the rate at α = 0.05,
    0.01 and 0.001 on skewed, two-point and normal estimates. Without skewness (a = 0, or
    ``third_moment`` not given) H = T, the plain t-test.

    With a reference gradient, ``stderr`` combines both standard errors and the correction uses
    the estimates' third moment only, taking the reference's own skewness (a mean of many more
    samples) as zero: the 1/√R term of a studentised difference of two means depends on the
    third cumulant of the difference alone, m₃/R² minus the reference's, over stderr³.

    A coordinate whose estimates vary by no more than round-off cannot be tested statistically:
    a t-test there would compare the bias with the spread of the rounding errors, and a
    deterministic rounding error of a few ulps is then "significant" (straight-through on a
    linear objective, exact up to round-off, got p = 0 in float32). Such a coordinate counts as
    unbiased when |bias| is within ``tolerance`` and as certainly biased otherwise. It is one
    with zero standard error, or, where ``spread`` (the round-off bound τ of one estimate) is
    given, one with standard error at most τ/√(R − 1): R numbers within ±τ of one value have a
    sample variance (ddof 1) of at most τ² R/(R − 1) (Popoviciu's inequality), i.e. a standard
    error of at most τ/√(R − 1), so a larger standard error is more than round-off can make.

    The tests are asymptotic: when a coordinate's estimates are dominated by events too rare
    to appear among the draws (an item chosen with probability 1e-4, R · S = 4,000 draws), no
    moment of the draws shows them, the sample mean is off and the test rejects although the
    estimator is unbiased.

    References:
        Hall, P. (1992). On the removal of skewness by transformation. JRSS B 54(1), 221–228.
        Johnson, N. J. (1978). Modified t tests and confidence intervals for asymmetrical
        populations. JASA 73(363), 536–544.

    Example:
        >>> round(bias_test(torch.tensor([0.1]), torch.tensor([0.05]), 100,
        ...                 tolerance=torch.zeros(1)), 4)
        0.0482
    """
    return float(bias_pvalues(bias, stderr, replicates, tolerance=tolerance, spread=spread,
                              third_moment=third_moment))


def bias_pvalues(
    bias: Tensor, stderr: Tensor, replicates: int, *, tolerance: Tensor,
    spread: Tensor | None = None, third_moment: Tensor | None = None,
) -> Tensor:
    """``bias_test`` of many cells at once: arguments ``[..., D]`` (``tolerance`` and ``spread``
    broadcast against them), one Bonferroni-combined p-value per cell ``[...]``, float64."""
    bias, stderr = bias.double(), stderr.double()
    tolerance = tolerance.double().expand_as(bias)
    flat = roundoff_scale(stderr, replicates, spread).expand_as(bias)
    scale = torch.where(flat, torch.ones_like(stderr), stderr)
    # |T| beyond 1e100 rejects at any level; the clamp keeps T² and T³ finite (no inf − inf).
    t = (bias / scale).clamp(-1e100, 1e100)
    if third_moment is not None:
        # a = m₃ / (R² stderr³), divided in steps so that a tiny stderr³ cannot underflow.
        # |a| < 1 for any sample (|Σ d³| ≤ (Σ d²)^{3/2}); the clamp guards other inputs.
        a = (third_moment.double() / scale / scale / scale / replicates**2).clamp(-1.0, 1.0)
        a = torch.where(flat, torch.zeros_like(a), a)
        u = a * t / 3
        # Hall's H = T + aT²/3 + a²T³/27 + a/6 = T (1 + u + u²/3) + a/6 with u = aT/3; the
        # quadratic is at least 1/4, so H is computed without cancellation.
        t = t * (1 + u + u**2 / 3) + a / 6
    df = max(replicates - 1, 1)
    tail = torch.from_numpy(stats.t.sf(t.abs().numpy(force=True), df)).to(t)
    within = (bias.abs() <= tolerance).to(t)
    pvalues = torch.where(flat, within, 2 * tail)
    if pvalues.shape[-1] == 0:
        return torch.ones(pvalues.shape[:-1], dtype=torch.float64)
    return (pvalues.shape[-1] * pvalues.amin(-1)).clamp(max=1.0)


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


@dataclasses.dataclass(frozen=True)
class CellStatistics:
    """Per-coordinate statistics of R estimates, the inputs of ``bias_test``; each ``[..., D]``
    for estimates ``[..., R, D]``."""

    mean: Tensor  # ḡ
    variance: Tensor  # s², ddof 1
    third_moment: Tensor  # m₃ = mean_r (ĝ_r − ḡ)³
    bias: Tensor  # ḡ − true
    bias_stderr: Tensor  # √(s²/R + reference stderr²)
    spread: Tensor  # round-off bound τ of one estimate (see ``summarise``)
    squared_deviations: Tensor  # ``[..., R]``: ‖ĝ_r − ḡ‖², summing over R − 1 to the variance


def cell_statistics(
    estimates: Tensor, true: Tensor, true_stderr: Tensor | None, eps: float,
    objective_scale: float = 0.0, block_elements: int = 2**22,
) -> CellStatistics:
    """Moments, bias, its standard error and the round-off bound of R estimates, in float64.

    ``estimates`` is ``[R, D]`` (one cell) or ``[..., R, D]`` (many cells at once, reduced
    over R each; the calibration tests use this). Two passes over blocks of rows of at most
    ``block_elements`` numbers: the mean of the deviations from the first row, then the sums
    of the second and third powers of the deviations from that mean (no cancellation as in a
    one-pass sum of powers, and exactly zero when all rows are equal). No ``[R, D]``
    temporary is added to the estimates already held.
    """
    g = estimates.double()
    true = true.double()
    replicates = g.shape[-2]
    mean = g.mean(-2)
    # Powers of deviations from the first row's offset mean: R equal rows give exactly zero.
    pivot = g[..., :1, :]
    rows = max(1, block_elements // max(1, g.numel() // max(replicates, 1)))
    blocks = g.split(rows, dim=-2)
    offset = sum((block - pivot).sum(-2) for block in blocks).unsqueeze(-2) / replicates
    squares, cubes = torch.zeros_like(mean), torch.zeros_like(mean)
    rows_squared = []
    for block in blocks:
        centred = block - pivot - offset
        square = centred * centred
        squares += square.sum(-2)
        cubes += (square * centred).sum(-2)
        rows_squared.append(square.sum(-1))
    var = squares / (replicates - 1) if replicates > 1 else torch.zeros_like(mean)
    stderr_sq = var / replicates
    if true_stderr is not None:
        stderr_sq = stderr_sq + true_stderr.double() ** 2
    true_max = float(true.abs().max())
    scale = mean.abs().amax(-1, keepdim=True).clamp(min=max(true_max, 1e-300))
    true_roundoff = 64 * torch.finfo(torch.float64).eps * max(true_max, objective_scale)
    spread = (64 * eps * scale + true_roundoff).expand_as(mean)
    return CellStatistics(mean=mean, variance=var, third_moment=cubes / replicates,
                          bias=mean - true, bias_stderr=stderr_sq.sqrt(), spread=spread,
                          squared_deviations=torch.cat(rows_squared, -1))


def summarise(
    estimates: Tensor,
    true: Tensor,
    true_stderr: Tensor | None,
    eps: float,
    roundoff: Tensor | Callable[[], Tensor] | None = None,
    objective_scale: float = 0.0,
    samples: dict | None = None,
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
        samples: a dict to receive ``squared_deviations``, the R values ‖ĝ_r − ḡ‖² (from the
            same pass as the moments), for ``measure``'s ``samples``.

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
    cell = cell_statistics(g, true, true_stderr, eps, objective_scale)
    if samples is not None:
        samples["squared_deviations"] = cell.squared_deviations.tolist()
    mean, var, bias, bias_stderr, spread = (cell.mean, cell.variance, cell.bias,
                                            cell.bias_stderr, cell.spread)
    std = var.sqrt()
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
                                 spread=spread, third_moment=cell.third_moment),
        "variance": float(var.sum()),
        "variance_per_coord": var.tolist(),
        "mse": float(((g - true) ** 2).sum(1).mean()),
        "cosine": cosine,
        "snr": snr,
    }
