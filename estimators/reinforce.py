"""The score-function estimator (REINFORCE; Williams 1992), with an optional baseline.

    ĝ = (1/S) Σ_s (f(z_s) − b_s) ∇_θ log p_θ(z_s),    z_s ~ p_θ

``baseline=none``: b_s = 0. ``baseline=loo``: the leave-one-out mean of the other samples of
the same estimate, b_s = (1/(S−1)) Σ_{j≠s} f(z_j) (Kool et al. 2019); b_s does not depend on
z_s, so the estimator stays unbiased. If f also depends on θ directly, its pathwise gradient
is added (the surrogate keeps f attached).

Example:
    >>> import torch
    >>> from torch.distributions import Bernoulli, Independent
    >>> theta = torch.zeros(3, requires_grad=True)
    >>> dist = Independent(Bernoulli(logits=theta), 1)
    >>> loss = Reinforce(baseline="loo").surrogate(
    ...     dist, lambda z: z.sum(-1), num_samples=4, generator=torch.Generator().manual_seed(0))
    >>> torch.autograd.grad(loss, theta)[0].shape
    torch.Size([3])
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Distribution

from estimators.base import Estimator, EstimatorInfo, Objective, register
from estimators.families import draw
from estimators.registry import Option


@register
class Reinforce(Estimator):
    info = EstimatorInfo(
        name="reinforce",
        description="Score-function estimator, optionally with a leave-one-out baseline.",
        families=("bernoulli", "categorical", "subset", "permutation", "count"),
        unbiased=True,
        pathwise=False,
        options=(
            Option(
                "baseline",
                "none",
                doc="none, or loo: leave-one-out mean of the other samples (Kool et al. 2019)",
                choices=("none", "loo"),
            ),
        ),
        log_prob=(
            "dist.log_prob(z) of the hard sample: for independent coordinates their sum; for "
            "subsets the exact probability of the unordered set (Subset.log_prob); for "
            "permutations the Plackett-Luce probability of the ranking; for counts torch's log_prob"
        ),
        references="Williams 1992; Kool et al. 2019",
    )

    def min_samples(self) -> int:
        return 2 if self.baseline == "loo" else 1

    def surrogate(
        self, dist: Distribution, f: Objective, *, num_samples: int, generator: torch.Generator
    ) -> Tensor:
        loo = self.baseline == "loo"
        self.check_inputs(dist, num_samples)
        z = draw(dist, num_samples, generator)  # [S, *batch, *event]
        log_p = dist.log_prob(z)  # [S, *batch]
        values = f(z)  # [S, *batch]
        if loo:
            baseline = (values.sum(0, keepdim=True) - values) / (num_samples - 1)
            weight = (values - baseline).detach()
        else:
            weight = values.detach()
        # Forward: mean f. Backward: mean (f − b) ∇ log p (+ ∇f where f depends on θ directly).
        return (values + weight * (log_p - log_p.detach())).mean(0)
