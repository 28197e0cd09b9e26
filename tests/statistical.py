"""Policy for randomized statistical tests.

Exact tests (one sample, fixed noise, a hand-derived value, tight tolerance) and statistical
tests (many samples) are different things. Every statistical test here

- runs with a fixed seed, so a given commit either always passes or always fails;
- states its false-alarm rate α: the probability that it would fail, over a random choice of
  seed, when the implementation is correct;
- derives its threshold from α (a two-sided normal or t quantile, or a p-value compared with
  α), never from a tolerance tuned until the test passes.

With α = 1e-4 per check and fewer than 370 statistical checks (363 collected by
``pytest -m statistical``; the CUDA ones skip without a GPU), the chance that a correct
implementation fails any of them for some seed is below 3.7%. When a statistical test fails, find
out why; do not loosen it or change its seed.
"""

from __future__ import annotations

from scipy import stats

ALPHA = 1e-4


def z_threshold(alpha: float = ALPHA) -> float:
    """Two-sided standard-normal threshold with false-alarm rate ``alpha``."""
    return float(stats.norm.isf(alpha / 2))
