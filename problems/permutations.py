"""Objectives of a ranking of n items under Plackett-Luce (Grover et al. 2019's setting).

P ~ PlackettLuce(θ), a permutation matrix (row i: the item ranked i); θ and the objective's
constants come from the problem's seed. For n <= 8 the expectation is exact: the sum over the
n! rankings of p(σ) f(P_σ), differentiable in θ. Beyond that ``expected_objective`` raises
``NotImplementedError`` and the harness uses its unbiased reference gradient.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor
from torch.distributions import Distribution

from estimators.plackett_luce import MAX_ENUMERATE_N, PlackettLuce
from estimators.registry import Option, at_least
from problems.base import Problem, ProblemInfo, expectation_by_enumeration, register

OPTIONS = (
    Option("n", 5, doc="number of items", check=at_least(2)),
    Option("seed", 0, doc="seed of the initial scores θ and the objective's constants",
           check=at_least(0)),
)


def _info(name: str, description: str) -> ProblemInfo:
    return ProblemInfo(
        name=name, description=description, family="permutation", exact=True, relaxable=True,
        enumerable=True, options=OPTIONS, references="Grover et al. 2019",
    )


class PermutationProblem(Problem):
    """Shared parts: θ from the seed, the distribution, exact expectation by enumeration."""

    parameter_names = ("scores",)

    def __init__(self, **options) -> None:
        super().__init__(**options)
        exact = self.n <= MAX_ENUMERATE_N
        self.info = dataclasses.replace(self.info, exact=exact, enumerable=exact)
        generator = torch.Generator().manual_seed(self.seed)
        scores = torch.randn(self.n, generator=generator, dtype=torch.float64)
        self.draw_constants(generator)
        self.scores = scores.requires_grad_(True)

    def draw_constants(self, generator: torch.Generator) -> None:
        raise NotImplementedError

    def distribution(self) -> Distribution:
        return PlackettLuce(self.scores)

    def expected_objective(self) -> Tensor:
        if not self.info.exact:
            raise NotImplementedError(f"{self.spec}: more than {MAX_ENUMERATE_N} items to enumerate")
        return expectation_by_enumeration(self.distribution(), self.objective)


@register
class PermutationAssignment(PermutationProblem):
    info = _info("permutation-assignment",
                 "A ranking of n items, f(P) = Σ C_ij P_ij with random costs; exact for n <= 8.")

    def draw_constants(self, generator: torch.Generator) -> None:
        self.costs = torch.randn(self.n, self.n, generator=generator, dtype=torch.float64)

    def objective(self, z: Tensor) -> Tensor:
        return (z * self.costs).sum((-2, -1))  # [S, *batch, n, n] -> [S, *batch]

    def config(self) -> dict:
        return {**super().config(), "costs": self.costs.tolist()}


@register
class PermutationSort(PermutationProblem):
    info = _info("permutation-sort",
                 "A ranking of n items, f(P) = ‖P x − sort_desc(x)‖² for fixed values x; exact for n <= 8.")

    def draw_constants(self, generator: torch.Generator) -> None:
        self.values = torch.randn(self.n, generator=generator, dtype=torch.float64)
        self.sorted_values = self.values.sort(descending=True).values

    def objective(self, z: Tensor) -> Tensor:
        ranked = (z * self.values).sum(-1)  # P x: [S, *batch, n]
        return ((ranked - self.sorted_values) ** 2).sum(-1)

    def config(self) -> dict:
        return {**super().config(), "values": self.values.tolist()}
