"""Polynomial programming (Liu et al. 2023, the ReinMax paper's first experiment).

``dim`` independent categorical variables of 2 categories, z_i the one-hot sample and
x_i = z_i[1] ∈ {0, 1}; f(z) = (1/dim) Σ_i |x_i − c|^p, as the authors' code computes it: a
function of the sample's coordinate, not linear in z, so a straight-through estimator's ∂f/∂z
(p |x − c|^(p−1) sign(x − c)) depends on p. E[f] = (1/dim) Σ_i [π_i0 c^p + π_i1 (1 − c)^p]
exactly (π_i = softmax(θ_i)); the minimum puts every x_i on 0 (for c < 1/2). θ starts from
U(−0.01, 0.01) drawn with the problem's seed, as in the authors' code.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, OneHotCategorical

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
        enumerable=False,  # a product of one-hot variables: the exact estimator does not
        # enumerate it; tests/problems/test_polynomial.py checks E[f] by enumeration
        options=(
            Option("dim", 128, doc="number of variables", check=at_least(1)),
            Option("power", 2.0, doc="p > 0 in |x − c|^p", check=positive),
            Option("target", 0.45, doc="c in [0, 1]", check=_unit),
            Option("seed", 0, doc="seed of the initial logits θ ~ U(−0.01, 0.01)",
                   check=at_least(0)),
        ),
    )
    parameter_names = ("logits",)

    def __init__(self, **options) -> None:
        super().__init__(**options)
        generator = torch.Generator().manual_seed(self.seed)
        logits = torch.rand(self.dim, 2, generator=generator, dtype=torch.float64)
        self.logits = ((logits - 0.5) * 0.02).requires_grad_(True)
        values = torch.tensor([0.0, 1.0], dtype=torch.float64)
        self.costs = (values - self.target).abs() ** self.power / self.dim  # f at x = 0, 1

    def distribution(self) -> Distribution:
        return Independent(OneHotCategorical(logits=self.logits), 1)  # event [dim, 2]

    def objective(self, z: Tensor) -> Tensor:
        x = z[..., 1]  # [..., dim]: the drawn value (relaxed: between 0 and 1)
        return ((x - self.target).abs() ** self.power).sum(-1) / self.dim

    def expected_objective(self) -> Tensor:
        return (torch.softmax(self.logits, dim=-1) * self.costs.to(self.logits)).sum((-2, -1))
