"""Gumbel-softmax / Concrete relaxations (Jang et al. 2017; Maddison et al. 2017).

Categorical: y = softmax((logits + g) / τ), g ~ Gumbel(0, 1) i.i.d.
Bernoulli (binary Concrete): y = sigmoid((logits + log u − log(1 − u)) / τ), u ~ U(0, 1), the
two-class Gumbel-softmax with logits [θ, 0].

``gumbel-softmax`` evaluates f on y (pathwise, biased for any τ > 0). ``st-gumbel-softmax`` is
its straight-through twin (``estimators.relaxation``): f sees the hard sample argmax (which has
exactly the distribution of z), the gradient flows through y (biased). The noisy logits are
those ``draw`` uses, so the hard samples of a seed are the same for every estimator here and
for ``straight-through``, Gumbel-Rao, ReinMax and GST, which reuse this relaxation.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Distribution

from estimators import noise
from estimators.base import EstimatorInfo, register
from estimators.families import base_distribution, family_of, one_hot_argmax
from estimators.registry import Option, positive
from estimators.relaxation import Relaxation, twin

TEMPERATURE = Option(
    "temperature", 0.5, doc="relaxation temperature τ > 0; bias falls and variance grows as τ → 0",
    check=positive,
)


def noisy_logits(dist: Distribution, family: str, num_samples: int,
                 generator: torch.Generator) -> Tensor:
    """logits + logistic noise (bernoulli) or + Gumbel noise (categorical), ``[S, *batch,
    *event]``, differentiable in the logits."""
    logits = base_distribution(dist).logits
    shape = (num_samples,) + logits.shape
    if family == "bernoulli":
        return logits + noise.logistic(shape, generator, like=logits)
    return logits + noise.gumbel(shape, generator, like=logits)


def soften(keys: Tensor, family: str, tau: float) -> Tensor:
    """The relaxed sample of the noisy logits ``keys`` at temperature ``tau``."""
    if family == "bernoulli":
        return torch.sigmoid(keys / tau)
    return torch.softmax(keys / tau, dim=-1)


def harden(keys: Tensor, family: str) -> Tensor:
    """The hard sample that the noisy logits ``keys`` select."""
    if family == "bernoulli":
        return (keys > 0).to(keys.dtype)
    return one_hot_argmax(keys)


def relaxed_sample(
    dist: Distribution, family: str, num_samples: int, generator: torch.Generator, tau: float
) -> tuple[Tensor, Tensor]:
    """Relaxed samples y ``[S, *batch, *event]`` and the noisy logits they soften."""
    keys = noisy_logits(dist, family, num_samples, generator)
    return soften(keys, family, tau), keys


class GumbelRelaxation(Relaxation):
    """The Concrete relaxation of Bernoulli and categorical variables; the base of every
    straight-through estimator of those families."""

    def noisy_keys(self, dist: Distribution, num_samples: int,
                   generator: torch.Generator) -> Tensor:
        return noisy_logits(dist, family_of(dist), num_samples, generator)

    def harden(self, dist: Distribution, keys: Tensor) -> Tensor:
        return harden(keys, family_of(dist))

    def soften(self, dist: Distribution, keys: Tensor) -> Tensor:
        return soften(keys, family_of(dist), self.temperature)


@register
class GumbelSoftmax(GumbelRelaxation):
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


STGumbelSoftmax = register(twin(
    GumbelSoftmax, "STGumbelSoftmax", name="st-gumbel-softmax",
    description="Straight-through Gumbel-softmax: hard sample forward, relaxed gradient.",
    references="Jang et al. 2017 (straight-through variant)",
))
