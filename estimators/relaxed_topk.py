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

**Memory.** Autograd through k steps would keep k sets of full-size intermediates alive. A
custom autograd function runs the k steps without a graph, keeping only the keys at the start
of every segment of s = ⌈√k⌉ steps; its backward recomputes one segment's keys at a time and
applies each step's hand-derived backward (below), so it holds O((k/s + s) n) memory instead of
O(k n), for one extra forward pass of compute.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import Distribution

from estimators.base import Estimator, EstimatorInfo, Objective, register
from estimators.registry import Option, positive
from estimators.subset import Subset, topk_khot


class _Step:
    """One softmax step at keys r, with what its backward needs, computed stably.

    x = r/τ, z = x − max x, e = exp z, s = Σ e; α = e/s (a softmax: sums to 1 to round-off).
    log(1 − α_i) is log1p(−α_i) for every item but the largest (α_i ≤ 1/2 there), and
    logsumexp_{j≠top} z_j − log s for the largest.
    """

    def __init__(self, r: Tensor, tau: float) -> None:
        z = r / tau
        z = z - z.amax(-1, keepdim=True)
        e = torch.exp(z)
        s = e.sum(-1, keepdim=True)
        self.log_s = torch.log(s)
        self.alpha = e / s
        self.z = z
        self.top = torch.zeros_like(z, dtype=torch.bool).scatter_(
            -1, z.argmax(-1, keepdim=True), True
        )
        # log Σ_{j≠top} e^{z_j}, without underflow: [*, 1]
        self.log_rest = torch.logsumexp(z.masked_fill(self.top, -math.inf), -1, keepdim=True)

    def log1m_alpha(self) -> Tensor:
        others = torch.log1p(-self.alpha.masked_fill(self.top, 0.0))
        return torch.where(self.top, self.log_rest - self.log_s, others)

    def backward(self, grad_alpha: Tensor, grad_next: Tensor | None, tau: float) -> Tensor:
        """∂/∂r of ⟨grad_alpha, α⟩ + ⟨grad_next, r + log(1 − α)⟩ (grad_next None: no update).

        Softmax part: α ⊙ (g − ⟨α, g⟩). Update part, with u = grad_next, β_i = α_i/(1 − α_i)
        and W = Σ_{i≠top} u_i β_i (every term bounded, since α_i ≤ 1/2 off the top):
            l ≠ top: α_l (W − u_l β_l − u_l) + u_top α_top · α_l/(1 − α_top)
            l = top: α_top (W − u_top)
        where α_l/(1 − α_top) = exp(z_l − log Σ_{j≠top} e^{z_j}) ∈ [0, 1] never overflows.
        """
        alpha, top = self.alpha, self.top
        grad_x = alpha * (grad_alpha - (alpha * grad_alpha).sum(-1, keepdim=True))
        if grad_next is None:
            return grad_x / tau
        u = grad_next
        beta = (alpha / (1 - alpha)).masked_fill(top, 0.0)
        w = (u * beta).sum(-1, keepdim=True)
        u_top = (u * top).sum(-1, keepdim=True)
        alpha_top = (alpha * top).sum(-1, keepdim=True)
        ratio = torch.exp(self.z - self.log_rest).masked_fill(top, 0.0)
        off_top = alpha * (w - u * beta - u) + u_top * alpha_top * ratio
        on_top = alpha_top * (w - u_top)
        grad_x = grad_x + torch.where(top, on_top, off_top)
        return grad_next + grad_x / tau


class _RelaxedTopK(torch.autograd.Function):
    """Forward: k steps, keeping only every ``segment``-th keys. Backward: per segment, in
    reverse, recompute its keys, then apply each step's hand-derived backward."""

    @staticmethod
    def forward(ctx, keys: Tensor, k: int, tau: float, segment: int) -> Tensor:
        checkpoints = []
        total = torch.zeros_like(keys)
        r = keys
        for j in range(k):
            if j % segment == 0:
                checkpoints.append(r)
            step = _Step(r, tau)
            total += step.alpha
            if j < k - 1:
                r = r + step.log1m_alpha()
        ctx.save_for_backward(*checkpoints)
        ctx.k, ctx.tau, ctx.segment = k, tau, segment
        return total

    @staticmethod
    def backward(ctx, grad_total: Tensor):
        k, tau, segment = ctx.k, ctx.tau, ctx.segment
        checkpoints = ctx.saved_tensors
        grad_r = None  # gradient with respect to the keys after the current step
        for start in reversed(range(0, k, segment)):
            states = [checkpoints[start // segment]]
            for _ in range(start + 1, min(start + segment, k)):
                states.append(states[-1] + _Step(states[-1], tau).log1m_alpha())
            while states:
                grad_r = _Step(states.pop(), tau).backward(grad_total, grad_r, tau)
        return grad_r, None, None, None


def relaxed_topk(keys: Tensor, k: int, tau: float, *, segment: int | None = None) -> Tensor:
    """The relaxed k-hot Σ_j α^j of ``keys`` ``[*, n]`` at temperature ``tau``.

    Args:
        keys: Gumbel-perturbed logits, ``[*, n]``.
        k: subset size, 1 <= k <= n.
        tau: temperature > 0.
        segment: steps per segment (default ⌈√k⌉): the forward keeps k/segment keys, the
            backward recomputes and holds one segment's keys at a time.

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
    return _RelaxedTopK.apply(keys, k, float(tau), segment)


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
