"""Polynomial programming (Liu et al. 2023, the ReinMax paper's first experiment).

``dim`` independent categorical variables of 2 categories, x_i ∈ {0, 1} the category drawn;
f(x) = (1/dim) Σ_i |x_i − c|^p. With z_i the one-hot sample, f = Σ_i z_i · a / dim where
a = (c^p, (1 − c)^p), so E[f] = (1/dim) Σ_i softmax(θ_i) · a exactly, and the minimum puts every
x_i on 0 (for c < 1/2). θ is drawn from N(0, 1) with the problem's seed.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Distribution, OneHotCategorical

from estimators.registry import Option, at_least, positive
from problems.base import Problem, ProblemInfo, register


def _unit(value) -> str | None:
    return None if 0 <= value <= 1 else f"must be in [0, 1], got {value}"


@register
class Polynomial(Problem):
    info = ProblemInfo(
        name="polynomial",
        description="dim categorical variables of 2 categories x ∈ {0, 1}, f = mean |x_i − c|^p "
                    "(ReinMax's polynomial programming); exact.",
        family="categorical",
        exact=True,
        relaxable=True,
        enumerable=False,
        options=(
            Option("dim", 128, doc="number of variables", check=at_least(1)),
            Option("power", 2.0, doc="p > 0 in |x − c|^p", check=positive),
            Option("target", 0.45, doc="c in [0, 1]", check=_unit),
            Option("seed", 0, doc="seed of the initial logits θ", check=at_least(0)),
        ),
    )
    parameter_names = ("logits",)

    def __init__(self, **options) -> None:
        super().__init__(**options)
        generator = torch.Generator().manual_seed(self.seed)
        self.logits = torch.randn(self.dim, 2, generator=generator,
                                  dtype=torch.float64).requires_grad_(True)
        values = torch.tensor([0.0, 1.0], dtype=torch.float64)
        self.costs = (values - self.target).abs() ** self.power / self.dim

    def distribution(self) -> Distribution:
        return OneHotCategorical(logits=self.logits)

    def objective(self, z: Tensor) -> Tensor:
        return (z * self.costs.to(z)).sum((-2, -1))  # [..., dim, 2] -> [...]

    def expected_objective(self) -> Tensor:
        return (torch.softmax(self.logits, dim=-1) * self.costs.to(self.logits)).sum()
