"""The score-function estimator (REINFORCE; Williams 1992), with an optional baseline.

    ĝ = (1/S) Σ_s (f(z_s) − b_s) ∇_θ log p_θ(z_s),    z_s ~ p_θ

``baseline=none``: b_s = 0. ``baseline=loo``: the leave-one-out mean of the other samples of
the same estimate, b_s = (1/(S−1)) Σ_{j≠s} f(z_j) (Kool et al. 2019); b_s does not depend on
z_s, so the estimator stays unbiased. If f also depends on θ directly, its pathwise gradient
is added (the surrogate keeps f attached).

On subsets, log p is either the exact probability of the drawn set (``Subset.log_prob``, a
programme over its 2^k subsets) or the probability of the order in which Gumbel-top-k drew it
(``Subset.log_prob_ordered``, O(n + k)): f depends on the set alone and the set is a function of
the order, so E[f ∇ log p(order)] = ∇ E[f] too; the set probability averages the order out
(lower variance, cost 2^k). ``set_probability=auto`` picks by cost (``unordered_is_cheaper``).

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
from estimators.errors import UserError
from estimators.subset import MAX_LOG_PROB_K, Subset, topk_khot, unordered_is_cheaper


@register
class Reinforce(Estimator):
    info = EstimatorInfo(
        name="reinforce",
        description="Score-function estimator, optionally with a leave-one-out baseline.",
        families=("bernoulli", "categorical", "subset", "permutation", "count", "exactk"),
        unbiased=True,
        pathwise=False,
        options=(
            Option(
                "baseline",
                "none",
                doc="none, or loo: leave-one-out mean of the other samples (Kool et al. 2019)",
                choices=("none", "loo"),
            ),
            Option(
                "set_probability",
                "auto",
                doc="subsets only: unordered (the exact probability of the drawn set, a 2^k "
                "programme, k <= 16), ordered (the probability of the draw's order, O(n + k)), "
                "or auto (unordered while its programme costs at most 4 times the ordered pass: "
                "2^k k <= 4n)",
                choices=("auto", "unordered", "ordered"),
            ),
        ),
        log_prob=(
            "dist.log_prob(z) of the hard sample: for independent coordinates their sum; for "
            "subsets the exact probability of the unordered set (Subset.log_prob) or, with "
            "set_probability=ordered, of the order of the Gumbel-top-k draw "
            "(Subset.log_prob_ordered); for "
            "permutations the Plackett-Luce probability of the ranking; for counts torch's log_prob"
        ),
        references="Williams 1992; Kool et al. 2019",
    )

    def min_samples(self) -> int:
        return 2 if self.baseline == "loo" else 1

    def ordered(self, dist: Subset) -> bool:
        """Whether subsets are scored by the probability of the draw's order (see the option)."""
        if self.set_probability == "unordered" and dist.k > MAX_LOG_PROB_K:
            raise UserError(
                f"{self.spec}: the set probability is a programme over the 2^k subsets of the "
                f"drawn set, for k <= {MAX_LOG_PROB_K}; got k={dist.k}. Use "
                "set_probability=ordered (or auto)"
            )
        if self.set_probability != "auto":
            return self.set_probability == "ordered"
        return not unordered_is_cheaper(dist.n, dist.k)

    def pass_elements(self, dist: Distribution, num_samples: int) -> int:
        extra = 0
        if isinstance(dist, Subset) and not self.ordered(dist):
            extra = num_samples * dist.log_prob_elements()
        return super().pass_elements(dist, num_samples) + extra

    def diagnostics(self, dist: Distribution) -> dict:
        if isinstance(dist, Subset):
            return {"set_probability": "ordered" if self.ordered(dist) else "unordered"}
        return {}

    def surrogate(
        self, dist: Distribution, f: Objective, *, num_samples: int, generator: torch.Generator
    ) -> Tensor:
        loo = self.baseline == "loo"
        self.check_inputs(dist, num_samples)
        if isinstance(dist, Subset) and self.ordered(dist):
            # The ordered draw: the same Gumbel-top-k sample, scored by the probability of its
            # order (unbiased for any f of the set, since the set is a function of the order).
            with torch.no_grad():
                z, order = topk_khot(dist.keys((num_samples,), generator), dist.k, ordered=True)
            log_p = dist.log_prob_ordered(order)  # [S, *batch]
        else:
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
