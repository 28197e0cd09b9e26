"""A linear objective of one categorical variable.

z ~ OneHotCategorical(softmax(θ)) over k categories, f(z) = Σ_j c_j z_j, so
E[f] = Σ_j softmax(θ)_j c_j (the sum over the k points of the support) and
∂E[f]/∂θ_j = p_j (c_j − E[f]). θ and c are drawn from N(0, 1) with the problem's seed.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor
from torch.distributions import Distribution, OneHotCategorical

from estimators.registry import Option, at_least
from problems.base import Problem, ProblemInfo, register

MAX_ENUMERABLE_K = 2**16


@register
class CategoricalLinear(Problem):
    info = ProblemInfo(
        name="categorical-linear",
        description="One categorical variable, f(z) = c·z with random costs; exact.",
        family="categorical",
        exact=True,
        relaxable=True,
        enumerable=True,
        single_variable=True,
        options=(
            Option("k", 10, doc="number of categories", check=at_least(2)),
            Option("seed", 0, doc="seed of the initial logits θ and the costs c", check=at_least(0)),
        ),
    )
    parameter_names = ("logits",)

    def __init__(self, **options) -> None:
        super().__init__(**options)
        if self.k > MAX_ENUMERABLE_K:
            self.info = dataclasses.replace(self.info, enumerable=False)
        generator = torch.Generator().manual_seed(self.seed)
        logits = torch.randn(self.k, generator=generator, dtype=torch.float64)
        self.costs = torch.randn(self.k, generator=generator, dtype=torch.float64)
        self.logits = logits.requires_grad_(True)

    def distribution(self) -> Distribution:
        return OneHotCategorical(logits=self.logits)

    def objective(self, z: Tensor) -> Tensor:
        return (z * self.costs).sum(-1)  # [S, *batch, k] -> [S, *batch]

    def expected_objective(self) -> Tensor:
        return (torch.softmax(self.logits, dim=-1) * self.costs).sum(-1)

    def config(self) -> dict:
        return {**super().config(), "costs": self.costs.tolist()}
