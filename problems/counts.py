"""Quadratic objectives of independent count variables (Joo et al. 2020's setting).

z_i ~ D(θ_i) independently for i = 1..dim, f(z) = Σ_i (z_i − c)². Since
E(z_i − c)² = Var z_i + (E z_i − c)², every problem here is exact in closed form from torch's
``mean`` and ``variance`` of its distribution, differentiable in θ:

- ``poisson-quadratic``: z_i ~ Poisson(exp θ_i), E f = Σ λ_i + (λ_i − c)².
- ``binomial-quadratic``: z_i ~ Binomial(n, sigmoid θ_i).
- ``negbinomial-quadratic``: z_i ~ NegativeBinomial(r, logits θ_i).
- ``geometric-quadratic``: z_i ~ Geometric(logits θ_i), failures before the first success.

Every estimate may run in float32, so a problem refuses options whose counts float32 cannot
hold: past 2^24 = 16,777,216 consecutive integers are no longer exact (and torch's own Poisson
sampler returns −2^63 from a rate of 2^63 on), so the counts' mean plus 40 standard deviations
(where the inversion sampler in ``estimators.counts`` stops, all but 1e-15 of the mass) must stay
at or below 2^24; a rate, total count or logit must be a normal float32 number.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import (
    Binomial,
    Distribution,
    Geometric,
    Independent,
    NegativeBinomial,
    Poisson,
)

from estimators.errors import SpecError
from estimators.registry import Option, at_least, finite
from problems.base import Problem, ProblemInfo, register

LARGEST_COUNT = 2**24  # float32 holds every integer in 0..2^24 exactly, not beyond
_FLOAT32 = torch.finfo(torch.float32)

DIM = Option("dim", 3, doc="number of independent count variables", check=at_least(1))


def positive32(value: float) -> str | None:
    """Rates and total counts: > 0 and neither flushed to zero nor overflowing in float32."""
    ok = _FLOAT32.tiny <= value <= _FLOAT32.max
    return None if ok else (f"a number between {_FLOAT32.tiny:.4g} and {_FLOAT32.max:.4g} "
                            "(float32's normal range)")


def finite32(value: float) -> str | None:
    """Logits: finite in float32."""
    ok = abs(value) <= _FLOAT32.max
    return None if ok else (f"a number between {-_FLOAT32.max:.4g} and {_FLOAT32.max:.4g} "
                            "(finite in float32)")


def _target(default: float) -> Option:
    return Option("target", default, doc="target c in f(z) = Σ (z_i − c)²", check=finite)


def _info(name: str, description: str, options: tuple[Option, ...]) -> ProblemInfo:
    return ProblemInfo(name=name, description=description, family="count", exact=True,
                       relaxable=True, enumerable=False, options=options,
                       references="Joo et al. 2020")


class CountQuadratic(Problem):
    """θ (one value per coordinate), f(z) = Σ (z_i − c)², E f from the mean and variance."""

    parameter_names = ("theta",)

    # what to change when the counts grow past LARGEST_COUNT
    too_large_hint = ""

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.theta = torch.full((self.dim,), self.initial_theta(), dtype=torch.float64,
                                requires_grad=True)
        base = self.base()
        with torch.no_grad():  # one coordinate stands for all: θ is the same everywhere
            top = float(base.mean[0] + 40 * base.stddev[0])
        if not top <= LARGEST_COUNT:  # NaN too
            raise SpecError(
                f"{self.spec}: its counts reach about {top:.3g} (mean + 40 standard deviations), "
                f"past 2^24 = {LARGEST_COUNT:,}, the last integer float32 holds exactly; "
                f"{self.too_large_hint}"
            )

    def initial_theta(self) -> float:
        raise NotImplementedError

    def base(self) -> Distribution:
        raise NotImplementedError

    def distribution(self) -> Distribution:
        return Independent(self.base(), 1)

    def objective(self, z: Tensor) -> Tensor:
        return ((z - self.target) ** 2).sum(-1)  # [S, *batch, dim] -> [S, *batch]

    def expected_objective(self) -> Tensor:
        base = self.base()
        return (base.variance + (base.mean - self.target) ** 2).sum(-1)


@register
class PoissonQuadratic(CountQuadratic):
    info = _info("poisson-quadratic", "Independent Poisson(exp θ_i) counts, f(z) = Σ (z_i − c)²; exact.",
                 (DIM, Option("rate", 5.0, doc="initial rate λ = exp θ", check=positive32), _target(4.0)))
    too_large_hint = "choose rate <= 1.6e7"

    def initial_theta(self) -> float:
        return math.log(self.rate)

    def base(self) -> Distribution:
        return Poisson(torch.exp(self.theta))


def _trials(value: int) -> str | None:
    return None if 1 <= value <= LARGEST_COUNT else f"an integer between 1 and 2^24 = {LARGEST_COUNT:,}"


@register
class BinomialQuadratic(CountQuadratic):
    info = _info("binomial-quadratic", "Independent Binomial(n, sigmoid θ_i) counts, f(z) = Σ (z_i − c)²; exact.",
                 (DIM, Option("total_count", 10, doc="number of trials n", check=_trials),
                  Option("logit", 0.0, doc="initial θ", check=finite32), _target(4.0)))

    def initial_theta(self) -> float:
        return self.logit

    def base(self) -> Distribution:
        return Binomial(self.total_count, logits=self.theta)


@register
class NegBinomialQuadratic(CountQuadratic):
    info = _info("negbinomial-quadratic", "Independent NegativeBinomial(r, logits θ_i) counts, f(z) = Σ (z_i − c)²; exact.",
                 (DIM, Option("total_count", 5.0, doc="number of successes r > 0", check=positive32),
                  Option("logit", 0.0, doc="initial θ", check=finite32), _target(4.0)))
    too_large_hint = "lower logit or total_count"

    def initial_theta(self) -> float:
        return self.logit

    def base(self) -> Distribution:
        return NegativeBinomial(self.total_count, logits=self.theta)


@register
class GeometricQuadratic(CountQuadratic):
    info = _info("geometric-quadratic", "Independent Geometric(logits θ_i) counts, f(z) = Σ (z_i − c)²; exact.",
                 (DIM, Option("logit", 0.0, doc="initial θ (success probability sigmoid θ)", check=finite32),
                  _target(2.0)))
    too_large_hint = "choose logit >= -12.9"

    def initial_theta(self) -> float:
        return self.logit

    def base(self) -> Distribution:
        return Geometric(logits=self.theta)
