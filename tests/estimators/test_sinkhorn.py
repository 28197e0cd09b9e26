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


# -- diffsort -----------------------------------------------------------------------------------


@pytest.mark.parametrize("network", ["odd_even", "bitonic"])
def test_sorting_network_tends_to_the_sorting_permutation(network):
    """In the canonical encoding (row i: the item ranked i, descending); the swaps' error falls
    like 1/(π β gap) for Cauchy swaps, so it shrinks as the steepness β grows."""
    from estimators.sinkhorn import sorting_network_matrix

    scores = torch.tensor([[0.3, 2.0, -1.0, 0.7], [1.0, -0.5, 0.2, 3.0]], dtype=torch.float64)
    distances = [float((sorting_network_matrix(scores, network, beta)
                        - sorting_matrix(scores)).abs().max()) for beta in (10.0, 100.0, 1e4)]
    assert distances[0] > distances[1] > distances[2] and distances[2] < 1e-3


def test_bitonic_needs_a_power_of_two():
    from estimators import UserError
    from estimators.sinkhorn import sorting_network_matrix

    with pytest.raises(UserError, match="power of 2"):
        sorting_network_matrix(torch.zeros(1, 5), "bitonic", 10.0)


def test_missing_extra_is_one_line_naming_it(monkeypatch):
    import builtins

    from estimators import UserError
    from estimators.sinkhorn import sorting_network_matrix

    real_import = builtins.__import__

    def no_diffsort(name, *args, **kwargs):
        if name.startswith("diffsort"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_diffsort)
    with pytest.raises(UserError, match=r"pip install 'estibench\[sorting\]'"):
        sorting_network_matrix(torch.zeros(1, 4), "odd_even", 10.0)


def test_studies_skip_diffsort_without_the_extra(monkeypatch):
    from estimators import sinkhorn as module
    from harness.study import parse_study

    def missing():
        raise module.UserError("the diffsort estimator needs the optional extra: "
                               "pip install 'estibench[sorting]'")

    monkeypatch.setattr(module, "_diffsort", missing)
    study = parse_study('name = "s"\n[[grid]]\nproblems = ["permutation-sort"]\n'
                        'estimators = ["diffsort", "neuralsort"]\n')
    cells, skipped = study.expand()
    assert [c.estimator.split(":")[0] for c in cells] == ["neuralsort"]
    assert "estibench[sorting]" in skipped[0].reason
