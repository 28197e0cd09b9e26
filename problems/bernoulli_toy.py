"""The Bernoulli toy problem (Tucker et al. 2017, REBAR; Grathwohl et al. 2018, RELAX).

d independent b_i ~ Bernoulli(sigmoid(θ_i)),  f(b) = Σ_i (b_i − t)².

    E[f] = Σ_i σ(θ_i)(1 − t)² + (1 − σ(θ_i)) t²,   ∂E[f]/∂θ_i = (1 − 2t) σ(θ_i)(1 − σ(θ_i)).

With t close to 1/2 the true gradient is tiny next to the noise of a score-function
estimate, which is what makes the problem a classic variance test.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor
from torch.distributions import Bernoulli, Distribution, Independent

from estimators.registry import Option, at_least, finite
from problems.base import Problem, ProblemInfo, register

MAX_ENUMERABLE_DIM = 16


@register
class BernoulliToy(Problem):
    info = ProblemInfo(
        name="bernoulli-toy",
        description="d independent Bernoulli variables, f(b) = Σ (b_i − t)²; exact.",
        family="bernoulli",
        exact=True,
        relaxable=True,
        enumerable=True,
        options=(
            Option("dim", 1, doc="number of independent Bernoulli variables", check=at_least(1)),
            Option("target", 0.45, doc="target t in f(b) = Σ (b_i − t)²", check=finite),
            Option("logit", 0.0, doc="initial θ_i (all coordinates)", check=finite),
        ),
        references="Tucker et al. 2017; Grathwohl et al. 2018",
    )
    parameter_names = ("logits",)

    def __init__(self, **options) -> None:
        super().__init__(**options)
        if self.dim > MAX_ENUMERABLE_DIM:
            self.info = dataclasses.replace(self.info, enumerable=False)
        self.logits = torch.full((self.dim,), self.logit, dtype=torch.float64, requires_grad=True)

    def distribution(self) -> Distribution:
        return Independent(Bernoulli(logits=self.logits), 1)

    def objective(self, z: Tensor) -> Tensor:
        return ((z - self.target) ** 2).sum(-1)  # [S, *batch, d] -> [S, *batch]

    def expected_objective(self) -> Tensor:
        p = torch.sigmoid(self.logits)
        t = self.target
        return (p * (1 - t) ** 2 + (1 - p) * t**2).sum(-1)
