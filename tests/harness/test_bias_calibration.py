"""The bias test's own false-alarm rate, and its skewness correction.

``harness.stats.bias_test`` decides whether an estimator is biased. Its p-value must be
calibrated: for an unbiased estimator, P(p < α) ≤ α. The plain t-test was not on skewed
estimates (issue 20): REINFORCE on ``categorical-linear:k=6,seed=2``, whose fourth category
has probability 0.045, gives a mean of R estimates that is skewed by γ/√R (|γ| ≈ 4), and a
studentised t skewed by about −2γ/√R. The test now applies Hall's (1992) transformation (see
``bias_test``).

Calibration (statistical, tests/statistical.py's policy): M independent cells of R = 200
unbiased estimates each, every cell's statistics computed by the harness's own
``cell_statistics`` and tested by ``bias_pvalues`` (the batched ``bias_test``), exactly as
``measure`` does for one cell. The number of cells with p < α is Binomial(M, r), r the true
false-alarm rate. The threshold c is the smallest count with P(Binomial(M, α) > c) ≤ ALPHA/3
for each of the three levels α in {0.05, 0.01, 0.001}, so a calibrated test (r ≤ α) fails a
check (at any of the levels) with probability at most ALPHA = 1e-4; M is the smallest
multiple of 100 for which c ≤ 1.5 α M at every level, so passing means the observed rate is
at most 1.5 α. Both M and c come from ``scipy.stats.binom`` below, not from a run (M = 71,400;
c = 3804, 822 and 107).

R = 200 is harder than the issue's R = 1000 (the skewness of a mean falls as 1/√R) and keeps
the 1.4 · 10⁷ estimates within seconds. It is large enough that the rare category is missing
from a cell only with probability 0.955²⁰⁰ ≈ 1e-4: a cell that never sees it has no moment
that could show the skew (``bias_test`` says so), and such cells add at most 1e-4 to the
rate. For the record, over 200,000 cells at R = 200 (another seed) the plain t-test's rates
at α = 0.05, 0.01, 0.001 were 0.070, 0.032, 0.0091 and the corrected test's 0.033, 0.0060,
0.00067; at R = 1000, 0.050, 0.013, 0.0020 and 0.042, 0.0083, 0.00076. On this file's cells
of the skewed problem the plain t-test had 5142, 2325 and 646 false alarms, over the limit
at every level.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import numpy as np
import pytest
import torch
from scipy import stats

from estimators import ESTIMATORS
from harness.measure import estimate_chunks, true_gradient
from harness.stats import (bias_pvalues, bias_test, cell_statistics, roundoff_scale,
                           summarise)
from problems import PROBLEMS
from tests.statistical import ALPHA

LEVELS = (0.05, 0.01, 0.001)
INFLATION = 1.5  # the largest false-alarm rate, as a multiple of α, that the checks accept
REPLICATES = 200
CELLS_PER_PASS = 500


def calibration_design(levels: Iterable[float] = LEVELS, inflation: float = INFLATION,
                       false_alarm: float = ALPHA) -> tuple[int, dict[float, int]]:
    """(M, {α: c}): the fewest cells (a multiple of 100) and, per α, the largest count of
    rejections that passes, c = the smallest count with P(Binomial(M, α) > c) ≤
    ``false_alarm`` / (number of levels), such that c ≤ ``inflation`` · α · M at every α."""
    levels = tuple(levels)
    for cells in range(100, 10**6, 100):
        limits = {a: int(stats.binom.isf(false_alarm / len(levels), cells, a)) for a in levels}
        if all(limits[a] <= inflation * a * cells for a in levels):
            assert sum(stats.binom.sf(limits[a], cells, a) for a in levels) <= false_alarm
            return cells, limits
    raise AssertionError("no number of cells below 10⁶ separates α from the inflated rate")


CELLS, LIMITS = calibration_design()


def as_cells(blocks: Iterable[torch.Tensor], replicates: int) -> Iterator[torch.Tensor]:
    """Consecutive rows of ``blocks`` (``[n, D]`` each) regrouped as cells ``[m, R, D]``."""
    leftover = None
    for block in blocks:
        if leftover is not None:
            block = torch.cat([leftover, block])
        whole = block.shape[0] // replicates * replicates
        if whole:
            yield block[:whole].reshape(-1, replicates, block.shape[1])
        leftover = block[whole:]
    assert leftover is None or leftover.shape[0] == 0


def harness_pvalues(cells: Iterable[torch.Tensor], true: torch.Tensor, eps: float,
                    objective_scale: float = 0.0, skew_corrected: bool = True) -> torch.Tensor:
    """The harness's bias p-value of every cell ``[m, R, D]`` of float estimates, computed as
    ``summarise`` computes it (``cell_statistics``, then ``bias_test``, batched); ``[M]``.

    ``summarise`` widens the tolerance by the measured round-off only when a coordinate is at
    round-off scale; no coordinate here is, which is asserted, so the tolerance is ``spread``.
    """
    pvalues = []
    for block in cells:
        cell = cell_statistics(block, true, None, eps, objective_scale)
        replicates = block.shape[-2]
        assert not roundoff_scale(cell.bias_stderr, replicates, cell.spread).any()
        pvalues.append(bias_pvalues(
            cell.bias, cell.bias_stderr, replicates, tolerance=cell.spread, spread=cell.spread,
            third_moment=cell.third_moment if skew_corrected else None))
    return torch.cat(pvalues)


def estimator_pvalues(problem_spec: str, estimator_spec: str, cells: int, replicates: int,
                      seed: int, **options) -> torch.Tensor:
    """Bias p-values of ``cells`` independent cells of ``replicates`` float32 estimates of one
    sample each, drawn by the harness in batched passes from one generator (disjoint blocks of
    one stream are independent) and compared with the exact gradient."""
    problem = PROBLEMS.make(problem_spec)
    estimator = ESTIMATORS.make(estimator_spec)
    reference = true_gradient(problem, device=torch.device("cpu"), seed=seed)
    assert reference.stderr is None  # exact: the test is of the estimates alone
    work = problem.to(torch.device("cpu"), torch.float32)
    generator = torch.Generator().manual_seed(seed)
    blocks = estimate_chunks(work, estimator, num_samples=1, replicates=cells * replicates,
                             generator=generator, chunk_size=CELLS_PER_PASS * replicates)
    return harness_pvalues(as_cells(blocks, replicates), reference.gradient,
                           torch.finfo(torch.float32).eps, reference.objective_scale, **options)


def assert_calibrated(pvalues: torch.Tensor) -> None:
    assert pvalues.shape == (CELLS,)
    counts = {a: int((pvalues < a).sum()) for a in LEVELS}
    failing = {a: (counts[a], LIMITS[a]) for a in LEVELS if counts[a] > LIMITS[a]}
    assert not failing, (
        f"false alarms (count, most allowed) out of {CELLS} cells: {failing}; all: {counts}")


def test_design_separates_alpha_from_its_inflation():
    assert CELLS == 71_400 and LIMITS == {0.05: 3804, 0.01: 822, 0.001: 107}
    assert all(LIMITS[a] <= INFLATION * a * CELLS for a in LEVELS)
    # A calibrated test fails a check (any level) with probability at most ALPHA.
    assert sum(stats.binom.sf(LIMITS[a], CELLS, a) for a in LEVELS) <= ALPHA


@pytest.mark.statistical
def test_false_alarm_rate_on_a_skewed_estimate():
    """REINFORCE on a category of probability 0.045: rare, large terms (skewness about −4 in
    the fourth coordinate)."""
    pvalues = estimator_pvalues("categorical-linear:k=6,seed=2", "reinforce", CELLS,
                                REPLICATES, seed=20)
    assert_calibrated(pvalues)


@pytest.mark.statistical
def test_false_alarm_rate_on_a_symmetric_estimate():
    """REINFORCE on bernoulli-toy at θ = 0: one estimate takes two values with probability
    1/2 each, a symmetric, far from normal distribution."""
    pvalues = estimator_pvalues("bernoulli-toy", "reinforce", CELLS, REPLICATES, seed=20)
    assert_calibrated(pvalues)


@pytest.mark.statistical
def test_false_alarm_rate_on_gaussian_estimates():
    """Four independent exactly normal coordinates, where the plain t-test is exact: the
    estimated skewness (noise of order 1/√R) must not spoil it."""
    generator = torch.Generator().manual_seed(20)
    true = torch.tensor([0.5, -1.0, 0.0, 2.0], dtype=torch.float64)
    cells = (true + torch.randn(min(CELLS_PER_PASS, CELLS - start), REPLICATES, 4,
                                generator=generator, dtype=torch.float64)
             for start in range(0, CELLS, CELLS_PER_PASS))
    assert_calibrated(harness_pvalues(cells, true, torch.finfo(torch.float64).eps))


# -- exact checks of the pieces -------------------------------------------------------------


def test_cell_statistics_are_the_sample_moments():
    x = torch.rand(3, 50, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = x**3  # skewed
    true = torch.full((4,), 0.2, dtype=torch.float64)
    ref_se = torch.full((4,), 0.01, dtype=torch.float64)
    cell = cell_statistics(x, true, ref_se, eps=1e-7, block_elements=7)  # many blocks
    numpy = x.numpy()
    np.testing.assert_allclose(cell.mean, numpy.mean(1), rtol=1e-13)
    np.testing.assert_allclose(cell.variance, numpy.var(1, ddof=1), rtol=1e-12)
    np.testing.assert_allclose(cell.third_moment, stats.moment(numpy, 3, axis=1), rtol=1e-10)
    np.testing.assert_allclose(cell.bias_stderr**2, numpy.var(1, ddof=1) / 50 + 1e-4,
                               rtol=1e-12)
    one = cell_statistics(x[1], true, ref_se, eps=1e-7)
    for name in ("mean", "variance", "third_moment", "bias", "bias_stderr", "spread"):
        torch.testing.assert_close(getattr(one, name), getattr(cell, name)[1])


def test_equal_rows_have_exactly_zero_moments():
    row = torch.tensor([0.1, 1 / 3, -7.25], dtype=torch.float64)
    cell = cell_statistics(row.expand(1000, 3), row, None, eps=2.2e-16)
    assert cell.variance.eq(0).all() and cell.third_moment.eq(0).all()


def hall(t: float, a: float) -> float:
    """Hall's (1992) transformation written out: T + aT²/3 + a²T³/27 + a/6."""
    return t + a * t**2 / 3 + a**2 * t**3 / 27 + a / 6


def test_bias_test_is_hall_transformed_t_on_one_coordinate():
    replicates, bias, stderr, third = 400, 0.03, 0.012, 0.08
    a = third / (replicates**2 * stderr**3)
    expected = 2 * stats.t.sf(abs(hall(bias / stderr, a)), replicates - 1)

    def one(value: float) -> torch.Tensor:
        return torch.tensor([value], dtype=torch.float64)

    ours = bias_test(one(bias), one(stderr), replicates, tolerance=one(0.0),
                     third_moment=one(third))
    assert ours == pytest.approx(expected, rel=1e-12)
    # No skewness: the plain t-test (scipy's one-sample t-test is checked in test_measure).
    plain = bias_test(one(bias), one(stderr), replicates, tolerance=one(0.0))
    zero = bias_test(one(bias), one(stderr), replicates, tolerance=one(0.0),
                     third_moment=one(0.0))
    assert plain == zero == pytest.approx(2 * stats.t.sf(bias / stderr, replicates - 1),
                                          rel=1e-12)


def test_positive_skew_trusts_the_lower_tail_less_than_the_upper():
    """Right-skewed estimates make T left-skewed (a low mean comes with a low standard
    deviation): a low mean is more often chance than the t-test says (p larger), a high mean
    less often (p smaller); and p falls monotonically as |bias| grows on either side."""
    se, replicates = torch.tensor([1.0], dtype=torch.float64), 100
    third = torch.tensor([0.5 * replicates**1.5], dtype=torch.float64)  # γ = 0.5, s = √R

    def p(bias, third_moment=third):
        return bias_test(torch.tensor([bias], dtype=torch.float64), se, replicates,
                         tolerance=torch.zeros(1), third_moment=third_moment)

    assert p(2.5) < p(2.5, None) and p(-2.5) > p(-2.5, None)
    upper = [p(b) for b in np.linspace(0.5, 40, 60)]
    lower = [p(-b) for b in np.linspace(0.5, 40, 60)]
    assert all(x >= y for x, y in zip(upper, upper[1:]))
    assert all(x >= y for x, y in zip(lower, lower[1:]))


def test_extreme_statistics_stay_finite():
    """|T| of 1e200 or a tiny standard error reject without NaN (T², T³ and stderr³ would
    overflow or underflow)."""
    for bias, se in [(1e200, 1.0), (1.0, 1e-120), (-1e300, 1e-300)]:
        for third in (1e-3, -1e-3):
            p = bias_test(torch.tensor([bias]), torch.tensor([se]), 50,
                          tolerance=torch.zeros(1), third_moment=torch.tensor([third]))
            assert p == 0.0


def test_batched_p_values_equal_one_cell_at_a_time_and_keep_bonferroni_and_roundoff():
    generator = torch.Generator().manual_seed(1)
    bias = torch.randn(5, 3, generator=generator, dtype=torch.float64) * 0.1
    stderr = torch.rand(5, 3, generator=generator, dtype=torch.float64) * 0.1 + 0.01
    third = torch.randn(5, 3, generator=generator, dtype=torch.float64) * 1e2
    stderr[2, 1] = 0.0  # round-off scale: judged by the tolerance
    bias[2, 1] = 1e-9
    tolerance = torch.full((3,), 1e-8, dtype=torch.float64)
    batched = bias_pvalues(bias, stderr, 60, tolerance=tolerance, third_moment=third)
    for i in range(5):
        assert float(batched[i]) == bias_test(bias[i], stderr[i], 60, tolerance=tolerance,
                                              third_moment=third[i])
    one = [bias_test(bias[0, j:j + 1], stderr[0, j:j + 1], 60, tolerance=tolerance[:1],
                     third_moment=third[0, j:j + 1]) for j in range(3)]
    assert float(batched[0]) == pytest.approx(min(1.0, 3 * min(one)))
    bias[2, 1] = 1e-6  # beyond the tolerance: certainly biased
    assert bias_test(bias[2], stderr[2], 60, tolerance=tolerance, third_moment=third[2]) == 0.0


def test_reference_gradient_correction_uses_the_estimates_third_moment_only():
    """With a reference gradient the skewness is m₃/R² over the combined standard error
    cubed: a precise reference leaves the correction as it was, a noisy one shrinks it."""
    x = torch.rand(300, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x = x**4
    true = torch.tensor([0.2], dtype=torch.float64)
    for ref_se in (1e-12, 0.02):
        cell = cell_statistics(x, true, torch.tensor([ref_se], dtype=torch.float64), eps=1e-16)
        t = float(cell.bias[0] / cell.bias_stderr[0])
        a = float(cell.third_moment[0]) / (300**2 * float(cell.bias_stderr[0]) ** 3)
        expected = 2 * stats.t.sf(abs(hall(t, a)), 299)
        got = bias_test(cell.bias, cell.bias_stderr, 300, tolerance=cell.spread,
                        spread=cell.spread, third_moment=cell.third_moment)
        assert got == pytest.approx(expected, rel=1e-12)
        skewness = float(cell.third_moment[0]) / float(cell.variance[0]) ** 1.5
        assert a <= skewness / math.sqrt(300) * (1 + 1e-9)


def test_summarise_applies_the_correction():
    x = (torch.rand(200, 2, generator=torch.Generator().manual_seed(3),
                    dtype=torch.float64) ** 4)
    true = torch.tensor([0.21, 0.19], dtype=torch.float64)
    record = summarise(x, true, None, eps=torch.finfo(torch.float64).eps)
    cell = cell_statistics(x, true, None, torch.finfo(torch.float64).eps)
    assert record["bias_pvalue"] == bias_test(cell.bias, cell.bias_stderr, 200,
                                              tolerance=cell.spread, spread=cell.spread,
                                              third_moment=cell.third_moment)
    assert record["bias_pvalue"] != bias_test(cell.bias, cell.bias_stderr, 200,
                                              tolerance=cell.spread, spread=cell.spread)
