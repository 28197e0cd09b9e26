"""The problem contract, stated once.

A problem hands out a differentiable ``torch.distributions.Distribution`` built from its
parameters θ and an objective f; the quantity studied is ∇_θ E_{z~p_θ}[f(z)].

- ``parameters()``: the unconstrained real tensors θ (logits, scores, log-rates) whose gradient
  is studied, leaves with ``requires_grad=True``.
- ``distribution()``: built from θ, differentiable. Samples are in the canonical encoding
  (0/1, one-hot, k-hot, permutation matrix, count), so f takes hard and relaxed samples alike.
- ``objective(z)``: ``[S, *batch, *event] -> [S, *batch]``.
- ``expected_objective()``: the exact E[f(z)], ``[*batch]``, differentiable in θ; raises
  ``NotImplementedError`` where it is intractable. The true gradient is its autograd gradient.
- ``config()``: every constant that defines the problem, JSON-serialisable.

Problems are *batch-polymorphic*: their parameters may carry extra leading dimensions and every
method broadcasts over them. ``with_parameters`` returns the same problem with other parameter
tensors (e.g. R replicated copies, shape ``[R, *θ.shape]``): this is how the harness draws R
independent estimates in one pass. ``to`` moves a problem to a device and dtype.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor
from torch.distributions import Distribution

from estimators.registry import Configurable, Option, Registry


@dataclasses.dataclass(frozen=True)
class ProblemInfo:
    """What a problem is, as data.

    ``exact``: ``expected_objective`` is implemented (the true gradient is exact).
    ``relaxable``: the objective accepts relaxed (continuous) samples.
    ``enumerable``: the joint support is small enough to enumerate (the ``exact`` estimator).
    ``single_variable``: the distribution is one variable of its family (one categorical), not
    a product of several (estimators with ``needs_single_variable`` ask).
    """

    name: str
    description: str
    family: str
    exact: bool
    relaxable: bool
    enumerable: bool
    single_variable: bool = False
    options: tuple[Option, ...] = ()
    references: str = ""


class Problem(Configurable):
    """Base class: options, parameters by name, ``with_parameters`` and ``to``.

    Subclasses list the attribute names of their parameters in ``parameter_names``; every other
    tensor attribute is a constant that ``to`` moves along.
    """

    info: ClassVar[ProblemInfo]
    parameter_names: ClassVar[tuple[str, ...]]

    def parameters(self) -> list[Tensor]:
        return [getattr(self, name) for name in self.parameter_names]

    def with_parameters(self, parameters: Sequence[Tensor]) -> Problem:
        """A shallow copy of this problem whose parameters are ``parameters``."""
        if len(parameters) != len(self.parameter_names):
            raise ValueError(
                f"{self.info.name} has {len(self.parameter_names)} parameter tensors, "
                f"got {len(parameters)}"
            )
        new = copy.copy(self)
        for name, old, value in zip(self.parameter_names, self.parameters(), parameters):
            if value.dim() < old.dim() or value.shape[value.dim() - old.dim() :] != old.shape:
                raise ValueError(
                    f"parameter {name!r} of {self.info.name} must end in shape "
                    f"{tuple(old.shape)}, got {tuple(value.shape)}"
                )
            setattr(new, name, value)
        return new

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        """A copy on ``device`` with floating tensors in ``dtype``; parameters stay leaves."""
        new = copy.copy(self)
        for name, value in vars(self).items():
            if not isinstance(value, Tensor):
                continue
            moved = value.detach().to(
                device=device, dtype=dtype if value.is_floating_point() else None
            )
            if name in self.parameter_names:
                moved = moved.clone().requires_grad_(True)
            setattr(new, name, moved)
        return new

    def sample_elements(self) -> int | None:
        """Roughly how many numbers one evaluation of the objective creates per sample, when
        that is large (a network's outputs for a minibatch); None when it is small. The harness
        bounds the replicates it draws in one batched pass by it, to bound memory."""
        return None

    def distribution(self) -> Distribution:
        raise NotImplementedError

    def objective(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def expected_objective(self) -> Tensor:
        raise NotImplementedError(f"{self.info.name} has no exact expected objective")

    def config(self) -> dict:
        """The options and every derived constant, JSON-serialisable."""
        return {"name": self.info.name, "spec": self.spec, **self.options}


def expectation_by_enumeration(dist: Distribution, objective) -> Tensor:
    """Σ_z p(z) f(z) over ``dist.enumerate_support()``, ``[*batch]``, differentiable in θ."""
    support = dist.enumerate_support()  # [N, *batch, *event]
    return (dist.log_prob(support).exp() * objective(support)).sum(0)


PROBLEMS: Registry[Problem] = Registry("problem", "estibench.problems")
register = PROBLEMS.register
