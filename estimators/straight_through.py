"""The straight-through estimator (Bengio et al. 2013).

The objective sees the hard sample z ~ p_θ; the backward pass treats z as if it were its mean,
the probabilities p = E[z] (sigmoid(logits) or softmax(logits)):

    ĝ = (1/S) Σ_s (∂p/∂θ)ᵀ ∇f(z_s)

Pathwise and biased (unbiased only when f is linear). The objective must accept real-valued
input for its gradient to exist, but it is only ever evaluated at hard samples.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Distribution

from estimators.base import Estimator, EstimatorInfo, Objective, register
from estimators.families import base_distribution, draw


@register
class StraightThrough(Estimator):
    info = EstimatorInfo(
        name="straight-through",
        description="Hard sample forward, gradient of the probabilities backward.",
        families=("bernoulli", "categorical"),
        unbiased=False,
        pathwise=True,
        needs_relaxable=True,
        references="Bengio et al. 2013",
    )

    def surrogate(
        self, dist: Distribution, f: Objective, *, num_samples: int, generator: torch.Generator
    ) -> Tensor:
        self.check_inputs(dist, num_samples)
        z = draw(dist, num_samples, generator)  # [S, *batch, *event]
        probs = base_distribution(dist).probs  # [*batch, *event], differentiable in θ
        return f(z + (probs - probs.detach())).mean(0)
