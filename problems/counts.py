"""Quadratic objectives of independent count variables (Joo et al. 2020's setting).

z_i ~ D(θ_i) independently for i = 1..dim, f(z) = Σ_i (z_i − c)². Since
E(z_i − c)² = Var z_i + (E z_i − c)², every problem here is exact in closed form from torch's
``mean`` and ``variance`` of its distribution, differentiable in θ:

- ``poisson-quadratic``: z_i ~ Poisson(exp θ_i), E f = Σ λ_i + (λ_i − c)².
- ``binomial-quadratic``: z_i ~ Binomial(n, sigmoid θ_i).
- ``negbinomial-quadratic``: z_i ~ NegativeBinomial(r, logits θ_i).
- ``geometric-quadratic``: z_i ~ Geometric(logits θ_i), failures before the first success.
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

from estimators.registry import Option, at_least, finite, positive
from problems.base import Problem, ProblemInfo, register

DIM = Option("dim", 3, doc="number of independent count variables", check=at_least(1))


def _target(default: float) -> Option:
    return Option("target", default, doc="target c in f(z) = Σ (z_i − c)²", check=finite)


def _info(name: str, description: str, options: tuple[Option, ...]) -> ProblemInfo:
    return ProblemInfo(name=name, description=description, family="count", exact=True,
                       relaxable=True, enumerable=False, options=options,
                       references="Joo et al. 2020")


class CountQuadratic(Problem):
    """θ (one value per coordinate), f(z) = Σ (z_i − c)², E f from the mean and variance."""

    parameter_names = ("theta",)

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.theta = torch.full((self.dim,), self.initial_theta(), dtype=torch.float64,
                                requires_grad=True)

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
                 (DIM, Option("rate", 5.0, doc="initial rate λ = exp θ", check=positive), _target(4.0)))

    def initial_theta(self) -> float:
        return math.log(self.rate)

    def base(self) -> Distribution:
        return Poisson(torch.exp(self.theta))


@register
class BinomialQuadratic(CountQuadratic):
    info = _info("binomial-quadratic", "Independent Binomial(n, sigmoid θ_i) counts, f(z) = Σ (z_i − c)²; exact.",
                 (DIM, Option("total_count", 10, doc="number of trials n", check=at_least(1)),
                  Option("logit", 0.0, doc="initial θ", check=finite), _target(4.0)))

    def initial_theta(self) -> float:
        return self.logit

    def base(self) -> Distribution:
        return Binomial(self.total_count, logits=self.theta)


@register
class NegBinomialQuadratic(CountQuadratic):
    info = _info("negbinomial-quadratic", "Independent NegativeBinomial(r, logits θ_i) counts, f(z) = Σ (z_i − c)²; exact.",
                 (DIM, Option("total_count", 5.0, doc="number of successes r > 0", check=positive),
                  Option("logit", 0.0, doc="initial θ", check=finite), _target(4.0)))

    def initial_theta(self) -> float:
        return self.logit

    def base(self) -> Distribution:
        return NegativeBinomial(self.total_count, logits=self.theta)


@register
class GeometricQuadratic(CountQuadratic):
    info = _info("geometric-quadratic", "Independent Geometric(logits θ_i) counts, f(z) = Σ (z_i − c)²; exact.",
                 (DIM, Option("logit", 0.0, doc="initial θ (success probability sigmoid θ)", check=finite),
                  _target(2.0)))

    def initial_theta(self) -> float:
        return self.logit

    def base(self) -> Distribution:
        return Geometric(logits=self.theta)
