"""The exact "estimator": enumerate the joint support, E[f] = Σ_z p_θ(z) f(z).

Zero variance and no bias: the reference every other estimator is compared with on small
problems. It ignores ``num_samples`` and the generator (it draws nothing).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent

from estimators.base import Estimator, EstimatorInfo, Objective, register
from estimators.errors import IncompatibleError
from estimators.families import FAMILIES
from estimators.subset import Subset

MAX_SUPPORT = 2**16


def enumerate_joint(dist: Distribution, max_support: int = MAX_SUPPORT,
                    user: str = "the exact estimator") -> Tensor:
    """Every point of the joint support, ``[N, *batch, *event]``; more than ``max_support``
    points is an ``IncompatibleError`` naming ``user``, who enumerates them.

    ``Independent`` distributions over scalar variables (e.g. a vector of Bernoulli) are
    expanded into the Cartesian product of their coordinates' supports.
    """
    if isinstance(dist, Independent) and dist.base_dist.event_shape == torch.Size():
        base = dist.base_dist
        values = base.enumerate_support(expand=False).reshape(-1)  # [m]
        event_shape = dist.event_shape
        size = len(values) ** math.prod(event_shape)
        _check_size(size, max_support, user)
        grid = torch.cartesian_prod(*[values] * math.prod(event_shape))
        grid = grid.reshape((size,) + tuple(event_shape))
        view = (size,) + (1,) * len(dist.batch_shape) + tuple(event_shape)
        return grid.reshape(view).expand((size,) + dist.batch_shape + event_shape)
    if not dist.has_enumerate_support:
        raise IncompatibleError(f"{type(dist).__name__} cannot enumerate its support")
    support = dist.enumerate_support(expand=True)
    _check_size(support.shape[0], max_support, user)
    return support


def _check_size(size: int, max_support: int, user: str) -> None:
    if size > max_support:
        raise IncompatibleError(
            f"the joint support has {size} points, more than the {max_support} {user} "
            "enumerates"
        )


@register
class Exact(Estimator):
    info = EstimatorInfo(
        name="exact",
        description="Enumerates the support: the exact gradient, zero variance (small problems).",
        families=FAMILIES,
        unbiased=True,
        pathwise=False,
        needs_enumerable=True,
        evaluations_per_sample=None,
        evaluations="one per support point",
    )

    def objective_evaluations(self, dist: Distribution, num_samples: int) -> int:
        return enumerate_joint(dist).shape[0]

    def pass_elements(self, dist: Distribution, num_samples: int) -> int:
        """Every support point is a sample (``num_samples`` plays no part), plus the set
        probability's programme on subsets."""
        size = self.objective_evaluations(dist, num_samples)
        elements = super().pass_elements(dist, size)
        if isinstance(dist, Subset):
            elements += size * dist.log_prob_elements()
        return elements

    def surrogate(
        self, dist: Distribution, f: Objective, *, num_samples: int, generator: torch.Generator
    ) -> Tensor:
        self.check_inputs(dist, num_samples)
        support = enumerate_joint(dist)  # [N, *batch, *event]
        probs = dist.log_prob(support).exp()  # [N, *batch]
        return (probs * f(support)).sum(0)
