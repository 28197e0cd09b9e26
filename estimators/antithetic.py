"""Antithetic estimators for Bernoulli variables: ARM (Yin & Zhou 2019) and DisARM (Dong,
Mnih & Tucker 2020).

With b ~ Bernoulli(σ(θ)) per coordinate and one uniform vector u ~ U(0, 1)^d per sample, the
pair

    b = 1[u < σ(θ)],    b̃ = 1[1 − u < σ(θ)] = 1[u > σ(−θ)]

are both exact samples and antithetic (they agree on a coordinate unless u falls between σ(θ)
and σ(−θ) there). Each sample evaluates f twice, on b and on b̃.

ARM:     ĝ_i = (f(b̃) − f(b)) (u_i − ½)
DisARM:  ĝ_i = ½ (f(b) − f(b̃)) (−1)^{b̃_i} 1[b_i ≠ b̃_i] σ(|θ_i|)

DisARM is ARM with u integrated out given the pair (b, b̃), so its variance never exceeds
ARM's. Both are unbiased. The comparisons are made in logit space, ε = log u − log(1 − u)
against ±θ, so they stay exact at logits where σ(θ) rounds to 1; u − ½ = tanh(ε/2)/2.

The surrogate's forward value is the mean of (f(b) + f(b̃))/2, an unbiased estimate of E[f];
its gradient is the mean of ĝ (plus the pathwise gradient where f depends on θ directly).
``num_samples`` counts pairs, as the papers do; ``objective_evaluations`` is 2 per pair.

Example:
    >>> import torch
    >>> from torch.distributions import Bernoulli, Independent
    >>> theta = torch.zeros(1, requires_grad=True)
    >>> dist = Independent(Bernoulli(logits=theta), 1)
    >>> loss = DisARM().surrogate(dist, lambda z: z.sum(-1), num_samples=4,
    ...                           generator=torch.Generator().manual_seed(0))
    >>> torch.autograd.grad(loss, theta)[0].tolist()  # one variable, f(b) = b: always σ'(0)
    [0.25]
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Distribution

from estimators import noise
from estimators.base import Estimator, EstimatorInfo, Objective, register
from estimators.families import base_distribution


class _Antithetic(Estimator):
    """The shared pair (b, b̃) and surrogate; subclasses give the per-coordinate weight."""

    def weight(self, difference: Tensor, eps: Tensor, theta: Tensor, b: Tensor,
               b_tilde: Tensor) -> Tensor:
        """ĝ ``[S, *batch, *event]`` from f(b) − f(b̃) (broadcast over the event) and the pair."""
        raise NotImplementedError

    def pass_elements(self, dist: Distribution, num_samples: int) -> int:
        return super().pass_elements(dist, 2 * num_samples)  # both members of every pair

    def surrogate(
        self, dist: Distribution, f: Objective, *, num_samples: int, generator: torch.Generator
    ) -> Tensor:
        self.check_inputs(dist, num_samples)
        logits = base_distribution(dist).logits  # [*batch, *event]
        eps = noise.logistic((num_samples,) + logits.shape, generator, like=logits)  # logit(u)
        theta = logits.detach()
        b = (eps < theta).to(logits.dtype)
        b_tilde = (eps > -theta).to(logits.dtype)
        values = f(torch.cat([b, b_tilde]))  # [2S, *batch]
        f_b, f_b_tilde = values[:num_samples], values[num_samples:]
        event_dims = len(dist.event_shape)
        difference = (f_b - f_b_tilde).detach()
        difference = difference.reshape(difference.shape + (1,) * event_dims)
        g = self.weight(difference, eps, theta, b, b_tilde)  # [S, *batch, *event]
        attached = (g * (logits - theta)).sum(tuple(range(-event_dims, 0))) if event_dims \
            else g * (logits - theta)
        return ((f_b + f_b_tilde) / 2 + attached).mean(0)


@register
class ARM(_Antithetic):
    """ĝ_i = (f(b̃) − f(b)) (u_i − ½) (Yin & Zhou 2019); see the module docstring."""

    info = EstimatorInfo(
        name="arm",
        description="Augment-REINFORCE-merge: f on an antithetic pair of Bernoulli vectors, "
        "weighted by u − 1/2.",
        families=("bernoulli",),
        unbiased=True,
        pathwise=False,
        references="Yin & Zhou 2019",
        evaluations_per_sample=2,
    )

    def weight(self, difference: Tensor, eps: Tensor, theta: Tensor, b: Tensor,
               b_tilde: Tensor) -> Tensor:
        return -difference * torch.tanh(eps / 2) / 2  # (f(b̃) − f(b)) (u − ½)


@register
class DisARM(_Antithetic):
    """ĝ_i = ½ (f(b) − f(b̃)) (−1)^{b̃_i} 1[b_i ≠ b̃_i] σ(|θ_i|) (Dong, Mnih & Tucker 2020); see
    the module docstring."""

    info = EstimatorInfo(
        name="disarm",
        description="ARM with the uniform noise integrated out given the antithetic pair: "
        "never more variance than ARM.",
        families=("bernoulli",),
        unbiased=True,
        pathwise=False,
        references="Dong, Mnih & Tucker 2020",
        evaluations_per_sample=2,
    )

    def weight(self, difference: Tensor, eps: Tensor, theta: Tensor, b: Tensor,
               b_tilde: Tensor) -> Tensor:
        sign = 1 - 2 * b_tilde  # (−1)^{b̃}
        return difference / 2 * sign * (b != b_tilde) * torch.sigmoid(theta.abs())
