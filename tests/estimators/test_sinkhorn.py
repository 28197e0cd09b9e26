"""Sinkhorn relaxations: doubly stochastic to the stated tolerance, the sorting permutation in
the limit τ → 0, and a bias that falls with τ."""

from __future__ import annotations

import math

import pytest
import torch

from estimators import ESTIMATORS
from estimators.sinkhorn import row_error, sinkhorn
from harness.measure import measure
from tests.statistical import ALPHA, z_threshold

SCORES = torch.randn(4, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


def sorting_matrix(scores: torch.Tensor) -> torch.Tensor:
    order = scores.argsort(-1, descending=True)
    return torch.zeros(scores.shape + scores.shape[-1:], dtype=scores.dtype).scatter_(
        -1, order.unsqueeze(-1), 1.0)


@pytest.mark.parametrize("tau", [1.0, 0.3])
def test_columns_exact_and_the_row_error_shrinks_to_rounding(tau):
    """The last step normalises columns: their sums are 1 to rounding (n terms, ε = 2.2e-16).
    The ℓ1 row error never grows as iterations are added (Sinkhorn's marginal error is
    monotone) and reaches rounding level."""
    errors = []
    for iterations in (1, 2, 3, 5, 10, 20, 50, 100, 200, 400):
        matrix = sinkhorn(SCORES, tau, iterations)
        assert (matrix.sum(-2) - 1).abs().max() < 8 * 8 * torch.finfo(torch.float64).eps
        errors.append(float((matrix.sum(-1) - 1).abs().sum()))
    assert all(b <= a + 1e-15 for a, b in zip(errors, errors[1:]))
    if tau == 1.0:  # fast here; at τ = 0.3 it is still 1e-3 after 400 iterations
        assert errors[-1] < 1e-12


def test_diagnostics_state_the_row_error_of_the_record():
    from estimators.plackett_luce import PlackettLuce

    estimator = ESTIMATORS.make("gumbel-sinkhorn:temperature=0.3,iterations=20")
    reported = estimator.diagnostics(PlackettLuce(SCORES))["row_error"]
    assert reported == row_error(sinkhorn(SCORES, 0.3, 20)) > 0


def test_tends_to_the_sorting_permutation_as_the_temperature_falls():
    """Scores at least 0.7 apart; the iterations needed grow as τ falls (20,000 here)."""
    scores = torch.tensor([2.0, -1.0, 0.5, 3.1, -2.2, 1.3], dtype=torch.float64)
    distances = [float((sinkhorn(scores, tau, 20_000) - sorting_matrix(scores)).abs().max())
                 for tau in (0.3, 0.1, 0.05)]
    assert distances[0] > distances[1] > distances[2] and distances[2] < 1e-3


@pytest.mark.statistical
def test_gumbel_sinkhorn_bias_falls_with_the_temperature():
    """‖bias‖ on permutation-sort at τ = 1, 0.3, 0.1 (100 iterations).
    Each estimate's error ‖b̂ − b‖ is at most z·√(Σ stderr²) with z the Bonferroni normal
    quantile over the D coordinates at ALPHA / 3; the intervals must be ordered."""
    intervals = []
    for tau in (1.0, 0.3, 0.1):
        record = measure("permutation-sort", f"gumbel-sinkhorn:temperature={tau},iterations=100",
                         num_samples=1, replicates=60_000, seed=0, timing=False,
                         memory_profile=False)
        d = len(record["bias"])
        half = z_threshold(ALPHA / 3 / d) * math.sqrt(sum(s * s for s in record["bias_stderr"]))
        intervals.append((record["bias_norm"] - half, record["bias_norm"] + half))
    assert intervals[1][1] < intervals[0][0] and intervals[2][1] < intervals[1][0], intervals
