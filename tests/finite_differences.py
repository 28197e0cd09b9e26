"""Central differences in float64 with an error bound that holds on any CPU vector path.

For (f(x + h) − f(x − h)) / 2h the error has two parts:

- round-off: each computed f is within c·ε·S of the exact value, where S is the magnitude of
  the values summed to make f (Σ|terms|, not |f|: f ≈ 62 for the VAEs, and cancellation can
  make |f| much smaller than S), so the quotient is off by at most c·ε·S/h. c = 16 ≥ ⌈log2 N⌉ + 4
  covers a cascade (pairwise) sum of N ≤ 4096 terms, whatever order a vector path sums in
  (AVX-512, AVX2 and ATEN_CPU_CAPABILITY=default each have their own), plus a few roundings
  per term;
- truncation: h²/6·|f'''(ξ)|, with f''' estimated by a third central difference at a step
  wide enough that its own round-off is negligible, and doubled for that estimate's error.

An autograd gradient's own round-off is about c·ε·S times the terms' derivatives: smaller than
the quotient's by a factor h, so the bound covers both sides of the comparison.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

ROUNDINGS = 16  # c above


def central_difference(
    fn: Callable[[Tensor], float], x: Tensor, scale: float, *, h: float = 1e-6,
    wide: float = 1e-2, kink: bool = False,
) -> tuple[Tensor, Tensor]:
    """The central difference of ``fn`` at ``x`` (float64), coordinate by coordinate, and its
    error bound ``c·ε·scale/h + h²/3·|f'''|`` per coordinate (module docstring).

    Args:
        fn: f, a float from a tensor shaped like ``x``.
        x: the point.
        scale: S, the magnitude of the values summed to make f.
        h: the step.
        wide: the step of the third difference that estimates f'''.
        kink: f may have a kink at ``x`` (smooth on each side, one-sided derivatives g±, as
            at a tie of sorted scores): the difference tends to (g₊ + g₋)/2 with an error
            h/4·|f''₊ − f''₋| + O(h²), so the bound adds h/2·(|f''₊| + |f''₋|) (twice that
            term), f''± from one-sided second differences at step ``wide``.
    """
    x = x.detach()

    def at(i: int, step: float) -> float:
        moved = x.clone()
        moved.view(-1)[i] += step
        return fn(moved)

    numeric, third, sides = (torch.zeros_like(x) for _ in range(3))
    with torch.no_grad():
        for i in range(x.numel()):
            numeric.view(-1)[i] = (at(i, h) - at(i, -h)) / (2 * h)
            third.view(-1)[i] = (at(i, 2 * wide) - 2 * at(i, wide) + 2 * at(i, -wide)
                                 - at(i, -2 * wide)) / (2 * wide**3)
            if kink:
                centre = at(i, 0.0)
                sides.view(-1)[i] = (
                    abs(at(i, 2 * wide) - 2 * at(i, wide) + centre)
                    + abs(centre - 2 * at(i, -wide) + at(i, -2 * wide))) / wide**2
    eps = torch.finfo(torch.float64).eps
    return numeric, ROUNDINGS * eps * scale / h + 2 * h**2 / 6 * third.abs() + h / 2 * sides


def problem_scale(problem) -> float:
    """S for E f = Σ_z p(z) f(z): each term's p(z) = exp(log p(z)) carries a relative error of
    about ε·|log p(z)|, so S = E_p[|f(z)| (1 + |log p(z)|)], estimated from 4096 fixed draws
    (it sets a scale; a few percent do not matter), and at least |E f|."""
    with torch.no_grad():
        dist = problem.distribution()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            z = dist.sample((4096,))
        terms = problem.objective(z).abs() * (1 + dist.log_prob(z).abs())
        return max(float(terms.mean()), float(problem.expected_objective().abs().max()))


def assert_within(grad: Tensor, numeric: Tensor, bound: Tensor) -> None:
    error = (grad.detach() - numeric).abs()
    worst = int((error / bound).argmax())
    assert (error <= bound).all(), (
        f"|autograd − central difference| = {error.view(-1)[worst].item():.3g} at coordinate "
        f"{worst}, above its round-off and truncation bound {bound.view(-1)[worst].item():.3g}")
