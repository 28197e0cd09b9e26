"""The straight-through estimator (Bengio et al. 2013).

The objective sees the hard sample z ~ p_θ; the backward pass treats z as if it were its mean,
the probabilities p = E[z] (sigmoid(logits) or softmax(logits)):

    ĝ = (1/S) Σ_s (∂p/∂θ)ᵀ ∇f(z_s)

Pathwise and biased (unbiased only when f is linear). The objective must accept real-valued
input for its gradient to exist, but it is only ever evaluated at hard samples. It is the
Gumbel relaxation's straight-through estimator with the probabilities as the carrier
(``estimators.relaxation``).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Distribution

from estimators.base import EstimatorInfo, register
from estimators.families import base_distribution
from estimators.gumbel_softmax import GumbelRelaxation


@register
class StraightThrough(GumbelRelaxation):
    straight_through = True
    info = EstimatorInfo(
        name="straight-through",
        description="Hard sample forward, gradient of the probabilities backward.",
        families=("bernoulli", "categorical"),
        unbiased=False,
        pathwise=True,
        needs_relaxable=True,
        references="Bengio et al. 2013",
    )

    def carrier(self, dist: Distribution, keys: Tensor, hard: Tensor,
                generator: torch.Generator) -> Tensor:
        return base_distribution(dist).probs  # [*batch, *event], broadcast over the samples
