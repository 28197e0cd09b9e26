"""Relaxed top-k subset sampling (Xie & Ermon 2019).

Keys r = logits + g, g ~ Gumbel(0, 1); their top-k is an exact sample of ``Subset``. The
relaxation softens "take the largest key, remove it, repeat" into k softmax steps:

    r¹ = r;   α^j = softmax(r^j / τ);   r^{j+1} = r^j + log(1 − α^j);   y = Σ_{j=1..k} α^j.

As τ → 0 each α^j tends to the one-hot of the j-th largest key and y to the k-hot sample.

**Numerics.** ``log(1 − α)`` is never formed by subtracting α from 1. With x = r/τ,

    log(1 − α_i) = log Σ_{l≠i} e^{x_l} − logsumexp(x),

which is ``log1p(−α_i)`` for every item except the largest (there α_i ≤ 1/2), and a
log-sum-exp over the other items for the largest. A naive ``log(max(1 − α, ε))`` (the
reference code) turns an α within ε of 1 into a key that is lowered by only −log ε, so the
same item wins the next step again and its entry of y approaches 2; here it is lowered by the
true, possibly huge, amount. ``y`` always sums to k. Note that the relaxation itself, computed
exactly, can put more than 1 on an item at moderate τ: with n = k = 2 and τ = 1 it gives
y = (a + 1/2, 3/2 − a), a = sigmoid(r_1 − r_2). That is the published relaxation, not a
numerical error.

**Memory.** Autograd through k steps keeps k sets of full-size intermediates alive. The k steps
run in segments of about √k steps under activation checkpointing: the forward keeps only each
segment's input keys, the backward recomputes one segment at a time, so the memory held is
O((k/s + s) n) instead of O(k n), for about one extra forward pass of compute.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import Distribution
from torch.utils.checkpoint import checkpoint

from estimators.base import Estimator, EstimatorInfo, Objective, register
from estimators.registry import Option, positive
from estimators.subset import Subset, topk_khot


def _step(r: Tensor, tau: float, update: bool) -> tuple[Tensor, Tensor]:
    """One softmax step: (α [*, n], next keys r + log(1 − α) or ``r`` if not ``update``)."""
    x = r / tau
    lse = torch.logsumexp(x, dim=-1, keepdim=True)
    alpha = torch.exp(x - lse)
    if not update:
        return alpha, r
    is_top = torch.zeros_like(x, dtype=torch.bool).scatter_(-1, x.argmax(-1, keepdim=True), True)
    rest_of_top = torch.logsumexp(x.masked_fill(is_top, -math.inf), dim=-1, keepdim=True) - lse
    # The masked_fill keeps the branch torch.where discards finite, so its gradient is too.
    log1m_alpha = torch.where(is_top, rest_of_top, torch.log1p(-alpha.masked_fill(is_top, 0.0)))
    return alpha, r + log1m_alpha


def _segment(r: Tensor, tau: float, steps: int, last: bool) -> tuple[Tensor, Tensor]:
    total = None
    for j in range(steps):
        alpha, r = _step(r, tau, update=not (last and j == steps - 1))
        total = alpha if total is None else total + alpha
    return total, r


def relaxed_topk(keys: Tensor, k: int, tau: float, *, segment: int | None = None) -> Tensor:
    """The relaxed k-hot Σ_j α^j of ``keys`` ``[*, n]`` at temperature ``tau``.

    Args:
        keys: Gumbel-perturbed logits, ``[*, n]``.
        k: subset size, 1 <= k <= n.
        tau: temperature > 0.
        segment: steps per checkpointed segment (default ⌈√k⌉); ``segment >= k`` disables
            checkpointing.

    Example:
        >>> y = relaxed_topk(torch.tensor([3.0, 1.0, 0.0, -2.0]), k=2, tau=0.1)
        >>> [round(v, 3) for v in y.tolist()]
        [1.0, 1.0, 0.0, 0.0]
    """
    n = keys.shape[-1]
    if not 1 <= k <= n:
        raise ValueError(f"relaxed_topk needs 1 <= k <= n = {n}, got k={k}")
    if not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"relaxed_topk needs a finite temperature > 0, got {tau}")
    segment = segment or math.ceil(math.sqrt(k))
    use_checkpoint = torch.is_grad_enabled() and keys.requires_grad and segment < k
    total, r = None, keys
    for start in range(0, k, segment):
        steps = min(segment, k - start)
        last = start + steps == k
        if use_checkpoint:
            part, r = checkpoint(
                _segment, r, tau, steps, last, use_reentrant=False, preserve_rng_state=False
            )
        else:
            part, r = _segment(r, tau, steps, last)
        total = part if total is None else total + part
    return total


def reference_port_relaxed_topk(keys: Tensor, k: int, tau: float) -> Tensor:
    """A straightforward port of the reference code, for comparison only (not registered).

    Every step is materialised under autograd and ``log(1 − α)`` is ``log(max(1 − α, ε))``
    with ε the smallest normal float32, as in the reference implementation; entries of the
    result can approach 2 when an α rounds to 1.
    """
    eps = torch.finfo(torch.float32).tiny
    onehot = torch.zeros_like(keys)
    khot = torch.zeros_like(keys)
    w = keys
    for _ in range(k):
        w = w + torch.log(torch.clamp(1.0 - onehot, min=eps))
        onehot = torch.softmax(w / tau, dim=-1)
        khot = khot + onehot
    return khot


TEMPERATURE = Option(
    "temperature", 0.5, doc="relaxation temperature τ > 0; bias falls and variance grows as τ → 0",
    check=positive,
)


def _subset_inputs(estimator: Estimator, dist: Distribution, num_samples: int,
                   generator: torch.Generator) -> tuple[Subset, Tensor]:
    estimator.check_inputs(dist, num_samples)
    if not isinstance(dist, Subset):
        raise TypeError(f"{estimator.info.name} needs a Subset distribution, got {type(dist).__name__}")
    return dist, dist.keys((num_samples,), generator)  # [S, *batch, n]


@register
class RelaxedTopK(Estimator):
    info = EstimatorInfo(
        name="relaxed-topk",
        description="Relaxed top-k: f on k successive softmaxes of Gumbel-perturbed logits.",
        families=("subset",),
        unbiased=False,
        pathwise=True,
        needs_relaxable=True,
        options=(TEMPERATURE,),
        references="Xie & Ermon 2019",
    )

    def surrogate(
        self, dist: Distribution, f: Objective, *, num_samples: int, generator: torch.Generator
    ) -> Tensor:
        dist, keys = _subset_inputs(self, dist, num_samples, generator)
        return f(relaxed_topk(keys, dist.k, self.temperature)).mean(0)


@register
class STRelaxedTopK(Estimator):
    info = EstimatorInfo(
        name="st-relaxed-topk",
        description="Straight-through relaxed top-k: exact top-k forward, relaxed gradient.",
        families=("subset",),
        unbiased=False,
        pathwise=True,
        needs_relaxable=True,
        options=(TEMPERATURE,),
        references="Xie & Ermon 2019 (straight-through variant)",
    )

    def surrogate(
        self, dist: Distribution, f: Objective, *, num_samples: int, generator: torch.Generator
    ) -> Tensor:
        dist, keys = _subset_inputs(self, dist, num_samples, generator)
        relaxed = relaxed_topk(keys, dist.k, self.temperature)
        hard = topk_khot(keys.detach(), dist.k)
        return f(hard + (relaxed - relaxed.detach())).mean(0)
