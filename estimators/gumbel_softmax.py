"""Gumbel-softmax / Concrete relaxations (Jang et al. 2017; Maddison et al. 2017).

Categorical: y = softmax((logits + g) / τ), g ~ Gumbel(0, 1) i.i.d.
Bernoulli (binary Concrete): y = sigmoid((logits + log u − log(1 − u)) / τ), u ~ U(0, 1), the
two-class Gumbel-softmax with logits [θ, 0].

``gumbel-softmax`` evaluates f on y (pathwise, biased for any τ > 0). ``st-gumbel-softmax`` is
the straight-through variant: f sees the hard sample argmax (which has exactly the
distribution of z), the gradient flows through y (biased).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Distribution

from estimators import noise
from estimators.base import Estimator, EstimatorInfo, Objective, register
from estimators.families import base_distribution, one_hot_argmax
from estimators.registry import Option, positive

TEMPERATURE = Option(
    "temperature", 0.5, doc="relaxation temperature τ > 0; bias falls and variance grows as τ → 0",
    check=positive,
)


def relaxed_sample(
    dist: Distribution, family: str, num_samples: int, generator: torch.Generator, tau: float
) -> tuple[Tensor, Tensor]:
    """Relaxed samples y ``[S, *batch, *event]`` and the noisy logits they soften.

    The hard sample with the distribution of z is ``keys > 0`` (bernoulli) or the one-hot of
    ``argmax(keys)`` (categorical).
    """
    logits = base_distribution(dist).logits
    shape = (num_samples,) + logits.shape
    if family == "bernoulli":
        keys = logits + noise.logistic(shape, generator, like=logits)
        return torch.sigmoid(keys / tau), keys
    keys = logits + noise.gumbel(shape, generator, like=logits)
    return torch.softmax(keys / tau, dim=-1), keys


def harden(keys: Tensor, family: str) -> Tensor:
    """The hard sample that the noisy logits ``keys`` select."""
    if family == "bernoulli":
        return (keys > 0).to(keys.dtype)
    return one_hot_argmax(keys)


@register
class GumbelSoftmax(Estimator):
    info = EstimatorInfo(
        name="gumbel-softmax",
        description="Concrete relaxation: f evaluated on softmax((logits + Gumbel) / τ).",
        families=("bernoulli", "categorical"),
        unbiased=False,
        pathwise=True,
        needs_relaxable=True,
        options=(TEMPERATURE,),
        references="Jang et al. 2017; Maddison et al. 2017",
    )

    def surrogate(
        self, dist: Distribution, f: Objective, *, num_samples: int, generator: torch.Generator
    ) -> Tensor:
        family = self.check_inputs(dist, num_samples)
        y, _ = relaxed_sample(dist, family, num_samples, generator, self.temperature)
        return f(y).mean(0)


@register
class STGumbelSoftmax(Estimator):
    info = EstimatorInfo(
        name="st-gumbel-softmax",
        description="Straight-through Gumbel-softmax: hard sample forward, relaxed gradient.",
        families=("bernoulli", "categorical"),
        unbiased=False,
        pathwise=True,
        needs_relaxable=True,
        options=(TEMPERATURE,),
        references="Jang et al. 2017 (straight-through variant)",
    )

    def surrogate(
        self, dist: Distribution, f: Objective, *, num_samples: int, generator: torch.Generator
    ) -> Tensor:
        family = self.check_inputs(dist, num_samples)
        y, keys = relaxed_sample(dist, family, num_samples, generator, self.temperature)
        # hard + (y − y.detach()) is exactly the hard sample in the forward pass.
        z = harden(keys.detach(), family) + (y - y.detach())
        return f(z).mean(0)
