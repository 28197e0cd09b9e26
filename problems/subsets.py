"""Objectives of a k-subset of n items (Xie & Ermon 2019's setting).

z ~ Subset(softmax-weights exp(θ), k), a k-hot vector; θ and the objective's constants are
drawn from the problem's seed. For n <= 16 the expectation is exact: the sum over the C(n, k)
subsets S of P(S) f(S), with P(S) the exact unordered-set probability (``Subset.log_prob``),
differentiable in θ. Beyond that ``expected_objective`` raises ``NotImplementedError`` and the
harness uses its unbiased reference gradient.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor
from torch.distributions import Distribution

from estimators.errors import SpecError
from estimators.registry import Option, at_least
from estimators.exactk import ExactK
from estimators.subset import MAX_LOG_PROB_K, Subset
from problems.base import Problem, ProblemInfo, expectation_by_enumeration, register

MAX_EXACT_N = 16


def enumerable_subsets(n: int, k: int, most: int | None = None) -> bool:
    """Whether E f over the k-subsets of n items is summed exactly (``expected_objective``):
    n <= MAX_EXACT_N items (or, given ``most``, at most ``most`` subsets), and k within the
    range where ``Subset.log_prob`` is exact."""
    few = n <= MAX_EXACT_N if most is None else math.comb(n, k) <= most
    return few and k <= MAX_LOG_PROB_K

OPTIONS = (
    Option("n", 8, doc="number of items", check=at_least(2)),
    Option("k", 3, doc="subset size, 1 <= k <= n", check=at_least(1)),
    Option("seed", 0, doc="seed of the initial logits θ and the objective's constants",
           check=at_least(0)),
)


class SubsetProblem(Problem):
    """Shared parts: θ from the seed, the distribution, exact expectation by enumeration."""

    parameter_names = ("logits",)

    def __init__(self, **options) -> None:
        super().__init__(**options)
        if self.k > self.n:
            raise SpecError(f"{self.info.name} needs k <= n, got n={self.n}, k={self.k}")
        exact = enumerable_subsets(self.n, self.k)
        self.info = dataclasses.replace(self.info, exact=exact, enumerable=exact)
        generator = torch.Generator().manual_seed(self.seed)
        logits = torch.randn(self.n, generator=generator, dtype=torch.float64)
        self.draw_constants(generator)
        self.logits = logits.requires_grad_(True)

    def draw_constants(self, generator: torch.Generator) -> None:
        """Draw the objective's constants (after θ, from the same seeded stream)."""
        raise NotImplementedError

    def distribution(self) -> Distribution:
        return Subset(self.logits, self.k)

    def expected_objective(self) -> Tensor:
        if not self.info.exact:
            raise NotImplementedError(f"{self.spec}: more than {MAX_EXACT_N} items to enumerate")
        return expectation_by_enumeration(self.distribution(), self.objective)


def _info(name: str, description: str) -> ProblemInfo:
    return ProblemInfo(
        name=name, description=description, family="subset", exact=True, relaxable=True,
        enumerable=True, options=OPTIONS, references="Xie & Ermon 2019",
    )


@register
class SubsetLinear(SubsetProblem):
    info = _info(
        "subset-linear", "A k-subset of n items, f(z) = w·z with random weights; exact for n <= 16."
    )

    def draw_constants(self, generator: torch.Generator) -> None:
        self.weights = torch.randn(self.n, generator=generator, dtype=torch.float64)

    def objective(self, z: Tensor) -> Tensor:
        return (z * self.weights).sum(-1)  # [S, *batch, n] -> [S, *batch]

    def config(self) -> dict:
        return {**super().config(), "weights": self.weights.tolist()}


@register
class SubsetQuadratic(SubsetProblem):
    info = _info(
        "subset-quadratic",
        "A k-subset of n items, f(z) = ‖z − t‖² for a fixed soft target; exact for n <= 16.",
    )

    def draw_constants(self, generator: torch.Generator) -> None:
        # t = 0.8 · (k-hot of k random items) + 0.2 · k/n: entries in [0, 1], summing to k.
        chosen = torch.randperm(self.n, generator=generator)[: self.k]
        hard = torch.zeros(self.n, dtype=torch.float64).index_fill_(0, chosen, 1.0)
        self.target = 0.8 * hard + 0.2 * self.k / self.n

    def objective(self, z: Tensor) -> Tensor:
        return ((z - self.target) ** 2).sum(-1)

    def config(self) -> dict:
        return {**super().config(), "target": self.target.tolist()}


@register
class SubsetGraded(SubsetProblem):
    """Xie & Ermon 2019's synthetic check (§5.1): item weights w_i ∝ i, i = 1..n (n = 4:
    0.1, 0.2, 0.3, 0.4), so θ = log w, and f(z) = w·z. Nothing is random: the problem is the
    same for every seed, and the distribution of its samples is compared with the exact one
    (``[[sampling]]`` study tables)."""

    info = ProblemInfo(
        name="subset-graded",
        description="A k-subset of n items with weights w_i ∝ i (Xie & Ermon 2019's synthetic "
        "check), f(z) = w·z; exact for n <= 16.",
        family="subset", exact=True, relaxable=True, enumerable=True,
        options=(Option("n", 4, doc="number of items", check=at_least(2)),
                 Option("k", 2, doc="subset size, 1 <= k <= n", check=at_least(1))),
        references="Xie & Ermon 2019",
    )

    def __init__(self, **options) -> None:
        Problem.__init__(self, **options)
        if self.k > self.n:
            raise SpecError(f"subset-graded needs k <= n, got n={self.n}, k={self.k}")
        exact = enumerable_subsets(self.n, self.k)
        self.info = dataclasses.replace(self.info, exact=exact, enumerable=exact)
        grades = torch.arange(1, self.n + 1, dtype=torch.float64)
        self.weights = grades / grades.sum()
        self.logits = self.weights.log().requires_grad_(True)

    def objective(self, z: Tensor) -> Tensor:
        return (z * self.weights).sum(-1)

    def config(self) -> dict:
        return {**super().config(), "weights": self.weights.tolist()}


# -- the exact-k family ------------------------------------------------------------------------


class ExactKProblem(SubsetProblem):
    """The same objectives under the exact-k distribution p(z) ∝ exp(θ·z), |z| = k
    (``estimators.ExactK``). The expectation is exact for any n: both objectives are affine in
    z on k-hot vectors (‖z − t‖² = k − 2 t·z + ‖t‖²), so E f is f's affine form at the exact
    marginals, differentiable in θ through the elementary-symmetric recursion; the support is
    enumerable for n <= 16."""

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.info = dataclasses.replace(self.info, exact=True,
                                        enumerable=enumerable_subsets(self.n, self.k))

    def distribution(self) -> Distribution:
        return ExactK(self.logits, self.k)

    def expected_objective(self) -> Tensor:
        return self.affine_expectation(self.distribution().marginals())


def _exactk_info(name: str, description: str) -> ProblemInfo:
    return ProblemInfo(
        name=name, description=description, family="exactk", exact=True, relaxable=True,
        enumerable=True, options=OPTIONS, references="Ahmed et al. 2023; Niepert et al. 2021",
    )


@register
class ExactKLinear(ExactKProblem, SubsetLinear):
    info = _exactk_info("exactk-linear", "An exact-k subset of n items, f(z) = w·z with random "
                        "weights; exact for any n.")

    def affine_expectation(self, marginals: Tensor) -> Tensor:
        return (marginals * self.weights).sum(-1)


@register
class ExactKQuadratic(ExactKProblem, SubsetQuadratic):
    info = _exactk_info("exactk-quadratic", "An exact-k subset of n items, f(z) = ‖z − t‖² for "
                        "a fixed soft target; exact for any n.")

    def affine_expectation(self, marginals: Tensor) -> Tensor:
        return self.k - 2 * (marginals * self.target).sum(-1) + (self.target**2).sum(-1)
