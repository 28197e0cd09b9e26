"""The unordered-set estimator with its built-in baseline (Kool, van Hoof & Welling 2020).

One estimate draws S = ``num_samples`` distinct categories of one categorical variable without
replacement (Gumbel-top-k: the S largest of log p + g) and evaluates f once on each. With
p(S) the probability of the unordered set, P1(s) = p^{D∖s}(S ∖ s) and
P2(s, s') = p^{D∖{s,s'}}(S ∖ {s, s'}) (``subset.leave_out_log_probs``):

    ĝ = Σ_{s ∈ S} p(s) R(S, s) ∇log p(s) [f(s) − b(S, s)],    R(S, s) = P1(s) / p(S),
    b(S, s) = Σ_{s' ∈ S} p(s') R^{D∖s}(S, s') f(s'),   R^{D∖s}(S, s') = P2(s, s') / P1(s),
                                                           R^{D∖s}(S, s) = 1.

The weights p(s) R(S, s) sum to 1, and Σ_s p(s) R(S, s) f(s) is the surrogate's forward value,
an unbiased estimate of E[f]. Given that s is drawn first, b(S, s) is an unbiased estimate of
E[f] whatever s is, so the baseline subtracts nothing in expectation: the estimator is unbiased.
It needs S >= 2 (with one category b would be p(s) f(s), which depends on s) and S <= the
number of categories; with S equal to it the estimate is the exact gradient.

The weights come from a programme over the 2^S subsets of the drawn set (S <= 16), without
gradient; only log p(s) is differentiated. A factorised problem of several categorical
variables has a product domain that this estimator would have to sample without replacement
jointly: it is incompatible (``EstimatorInfo.needs_single_variable``).

Example:
    >>> import torch
    >>> from torch.distributions import OneHotCategorical
    >>> theta = torch.tensor([0.5, -1.0, 0.2, 1.0], requires_grad=True)
    >>> costs = torch.tensor([1.0, 2.0, 3.0, 4.0])
    >>> loss = UnorderedSet().surrogate(OneHotCategorical(logits=theta), lambda z: z @ costs,
    ...                                 num_samples=4, generator=torch.Generator().manual_seed(0))
    >>> exact = torch.autograd.grad((theta.softmax(-1) * costs).sum(), theta)[0]
    >>> torch.allclose(torch.autograd.grad(loss, theta)[0], exact)  # every category drawn
    True
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import Distribution

from estimators import noise
from estimators.base import Estimator, EstimatorInfo, Objective, register
from estimators.families import base_distribution
from estimators.subset import MAX_LOG_PROB_K, leave_out_log_probs


@register
class UnorderedSet(Estimator):
    """Σ_{s ∈ S} p(s) R(S, s) ∇log p(s) [f(s) − b(S, s)] over S distinct categories drawn
    without replacement (Kool, van Hoof & Welling 2020); see the module docstring."""

    info = EstimatorInfo(
        name="unordered-set",
        description="num_samples distinct categories without replacement, weighted by the "
        "unordered set's probability, with a built-in baseline.",
        families=("categorical",),
        unbiased=True,
        pathwise=False,
        needs_single_variable=True,
        log_prob="log softmax(logits) of each drawn category, weighted by p(s) P1(s) / p(S)",
        references="Kool, van Hoof & Welling 2020",
    )

    def min_samples(self) -> int:
        return 2

    def max_samples(self, dist: Distribution) -> int:
        return min(base_distribution(dist).logits.shape[-1], MAX_LOG_PROB_K)

    def pass_elements(self, dist: Distribution, num_samples: int) -> int:
        """The samples' copies plus the programme's 2^S-wide tables (about 8 of them) per batch
        element and its 2^S × S mask table; too many samples are refused first, by name."""
        self.check_inputs(dist, num_samples)
        batch = math.prod(dist.batch_shape)
        return super().pass_elements(dist, num_samples) + (
            (batch * (num_samples + 8) + num_samples) * 2**num_samples)

    def surrogate(
        self, dist: Distribution, f: Objective, *, num_samples: int, generator: torch.Generator
    ) -> Tensor:
        self.check_inputs(dist, num_samples)
        logits = base_distribution(dist).logits  # [*batch, C]
        with torch.no_grad():
            keys = logits + noise.gumbel(logits.shape, generator, like=logits)
            positions = keys.topk(num_samples, dim=-1).indices  # [*batch, S], distinct
            z = torch.zeros(positions.shape + logits.shape[-1:], dtype=logits.dtype,
                            device=logits.device).scatter_(-1, positions.unsqueeze(-1), 1.0)
        return self.set_surrogate(logits, positions, z, f)

    @staticmethod
    def set_surrogate(logits: Tensor, positions: Tensor, z: Tensor, f: Objective) -> Tensor:
        """The surrogate for the drawn set ``positions`` ``[*batch, S]`` (one-hots ``z``
        ``[*batch, S, C]``): forward Σ_s w_s f(s), gradient ĝ."""
        log_p = torch.log_softmax(logits, dim=-1)
        values = f(z.movedim(-2, 0)).movedim(0, -1)  # [*batch, S]
        chosen = log_p.gather(-1, positions)  # [*batch, S], differentiable
        with torch.no_grad():
            log_set, log_p1, log_p2 = leave_out_log_probs(logits.detach(), positions)
            fixed = chosen.detach()
            weights = (fixed + log_p1 - log_set.unsqueeze(-1)).exp()  # p(s) R(S, s)
            # b(S, s) = Σ_s' p(s') P2(s, s') / P1(s) f(s'), the s' = s term with ratio 1.
            ratios = (fixed.unsqueeze(-2) + log_p2 - log_p1.unsqueeze(-1)).exp()
            baseline = (ratios * values.detach().unsqueeze(-2)).sum(-1)
            advantage = values.detach() - baseline
        return (weights * values + weights * advantage * (chosen - fixed)).sum(-1)
