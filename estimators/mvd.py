"""Measure-valued derivatives (Pflug 1989; Mohamed et al. 2020, section 6) for factorised
Bernoulli and count variables: unbiased, coupled, one extra evaluation of f per coordinate.

The derivative of a distribution with respect to its parameter is written as a difference of
two distributions, c (p⁺ − p⁻), and the gradient as c (E_{p⁺} f − E_{p⁻} f). With z the
sample and z^{i←v} the sample with coordinate i set to v (every other coordinate held: the
coupling that keeps the variance low):

| variable | parameter | ∂/∂param E f |
|---|---|---|
| Bernoulli(p) | p | f(z^{i←1}) − f(z^{i←0}) |
| Poisson(λ) | λ | f(z^{i←z_i+1}) − f(z) |
| Binomial(n, p) | p | n [f(Z'+1) − f(Z')], Z' ~ Bin(n−1, p): z = Z' + B, B | z ~ Bernoulli(z/n) |
| NegativeBinomial(r, p) | p | r/(1−p) [f(z^{i←z_i+G+1}) − f(z)], G ~ NB(1, p) |
| Geometric(p) | p | −(1/p) [f(z^{i←z_i+G+1}) − f(z)], G ~ Geometric(p) |

(torch's parameterisations: NegativeBinomial counts successes of probability p before r
failures, Geometric failures before the first success.) The NegativeBinomial line follows from
k·C(k+r−1, k) = r·C(k+r−1, k−1): k p_r(k)/p = r/(1−p) p_{r+1}(k−1), and NB(r+1) = NB(r) + NB(1);
the Geometric is NB(1) with p and 1 − p exchanged. One of the two values of each difference is
f(z) itself, so each sample costs 1 + d evaluations of f for d coordinates
(``objective_evaluations``). The gradient reaches the problem's unconstrained θ by autograd
through the parameter (probs or rate).

Draws: Bernoulli and Poisson draw z as ``draw`` does; the others draw z and the coupling
variable by inversion from one call to the generator (two uniforms per coordinate, laid out per
replicate), so a batch of replicates reads the stream as a loop would.

Example:
    >>> import torch
    >>> from torch.distributions import Independent, Poisson
    >>> log_rate = torch.log(torch.tensor([2.0, 3.0])).requires_grad_(True)
    >>> dist = Independent(Poisson(log_rate.exp()), 1)
    >>> loss = MeasureValued().surrogate(dist, lambda z: z.sum(-1), num_samples=4,
    ...                                  generator=torch.Generator().manual_seed(0))
    >>> torch.autograd.grad(loss, log_rate)[0].tolist()  # f linear: exactly ∂E f/∂θ = λ
    [2.0, 3.0]
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import (Bernoulli, Binomial, Distribution, Geometric, NegativeBinomial,
                                 Poisson)

from estimators import noise
from estimators.base import Estimator, EstimatorInfo, Objective, register
from estimators.counts import geometric_of, invert_cdf
from estimators.errors import IncompatibleError
from estimators.families import base_distribution, draw


def coordinates(dist: Distribution) -> int:
    """d: the coordinates of one sample (the event's numbers; 1 for a scalar variable)."""
    return math.prod(dist.event_shape)


@register
class MeasureValued(Estimator):
    info = EstimatorInfo(
        name="mvd",
        description="Measure-valued derivative: per coordinate, f at the sample with that "
        "coordinate moved (coupled), weighted by the weak derivative's constant.",
        families=("bernoulli", "count"),
        unbiased=True,
        pathwise=False,
        references="Pflug 1989; Mohamed et al. 2020",
        evaluations_per_sample=None,
        evaluations="1 + one per coordinate of the sample",
    )

    def objective_evaluations(self, dist: Distribution, num_samples: int) -> int:
        return num_samples * (1 + coordinates(dist))

    def pass_elements(self, dist: Distribution, num_samples: int) -> int:
        return super().pass_elements(dist, num_samples * (1 + coordinates(dist)))

    def pairs(self, dist: Distribution, num_samples: int, generator: torch.Generator
              ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(z, the moved values, the weight of f(moved) − f(z), the parameter): the first
        three ``[S, *batch, *event]``, the parameter ``[*batch, *event]`` with its graph."""
        base = base_distribution(dist)
        if isinstance(base, Bernoulli):
            z = draw(dist, num_samples, generator)
            return z, 1 - z, 1 - 2 * z, base.probs
        if isinstance(base, Poisson):
            z = draw(dist, num_samples, generator)
            return z, z + 1, torch.ones_like(z), base.rate
        if not isinstance(base, (Binomial, NegativeBinomial, Geometric)):
            raise IncompatibleError(f"mvd has no weak derivative for {type(base).__name__}")
        probs = base.probs
        shape = (2, num_samples) + tuple(probs.shape)
        u = noise.per_replicate_uniforms(dist, num_samples, 2, generator,
                                         like=probs.detach().double()).reshape(shape)
        p = probs.detach()
        if isinstance(base, Binomial):
            n = base.total_count.detach().to(p.dtype)
            z = invert_cdf(base, u[0]).to(p.dtype)
            b = (u[1] < z.double() / n.double()).to(p.dtype)  # a uniformly chosen trial
            return z, z + 1 - 2 * b, n * (1 - 2 * b), probs
        if isinstance(base, NegativeBinomial):
            z = invert_cdf(base, u[0]).to(p.dtype)
            g = geometric_of(-base.logits, u[1])  # NB(1, p): Geometric with success 1 − p
            return z, z + g + 1, (base.total_count / (1 - p)).expand_as(z), probs
        z, g = geometric_of(base.logits, u[0]), geometric_of(base.logits, u[1])
        return z, z + g + 1, (-1 / p).expand_as(z), probs

    def surrogate(
        self, dist: Distribution, f: Objective, *, num_samples: int, generator: torch.Generator
    ) -> Tensor:
        self.check_inputs(dist, num_samples)
        z, moved, weight, parameter = self.pairs(dist, num_samples, generator)
        d, outer = coordinates(dist), (num_samples,) + tuple(dist.batch_shape)
        flat_z, flat_moved = z.reshape(outer + (d,)), moved.reshape(outer + (d,))
        one = torch.eye(d, dtype=torch.bool, device=z.device).reshape((d,) + (1,) * len(outer)
                                                                       + (d,))
        each = torch.where(one, flat_moved.unsqueeze(0), flat_z.unsqueeze(0))  # [d, S, *b, d]
        values = f(torch.cat([z, each.reshape((d * num_samples,) + tuple(z.shape[1:]))]))
        f_z, f_moved = values[:num_samples], values[num_samples:].reshape((d,) + outer)
        difference = (f_moved - f_z.detach().unsqueeze(0)).detach().movedim(0, -1)  # [S, *b, d]
        gradient = (weight.reshape(outer + (d,)) * difference).reshape(z.shape)
        attached = gradient * (parameter - parameter.detach())
        events = len(dist.event_shape)
        if events:
            attached = attached.sum(tuple(range(-events, 0)))
        return (f_z + attached).mean(0)
