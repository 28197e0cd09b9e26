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
custom autograd function runs the k steps in place without a graph. Past a small size it keeps
only the keys at the start of every segment of s = ⌈√k⌉ steps; its backward recomputes one
segment at a time and applies each step's hand-derived backward (``_backward_step``), so it
holds O((k/s + s) n) memory instead of O(k n), for one extra forward pass of compute.

**Speed.** On the CPU, float32 and float64 rows go to a C kernel (``csrc/relaxed_topk.c``,
built on first use by :mod:`estimators.native`) that runs the same steps, the same segments
and the same backward one row at a time, so that the row stays in cache for all k steps. The
torch implementation below is the fallback (CUDA, other dtypes, no C compiler,
``ESTIBENCH_KERNELS=off``) and the specification the kernel is tested against.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import Distribution

from estimators import native
from estimators.base import Estimator, EstimatorInfo, register, sample_numel
from estimators.gumbel_softmax import TEMPERATURE
from estimators.relaxation import Relaxation, twin
from estimators.subset import Subset, topk_khot


_STORE_ALL_ELEMENTS = 2**18  # keep every step when k · numel(keys) is at most this (1 MiB f32)


def _log_rest(rest: Tensor, log_alpha: Tensor, top: Tensor) -> Tensor:
    """log(1 − α_top) = log Σ_{j≠top} α_j, from the sum ``rest`` when it is well above the
    underflow threshold, else exactly as a log-sum-exp of the others' log α."""
    log_rest = rest.log()
    small = rest < torch.finfo(rest.dtype).tiny * 2**20
    if bool(small.any()):  # every other α underflowed: recompute those rows in log space
        exact = torch.logsumexp(log_alpha.masked_fill(top, -math.inf), -1, keepdim=True)
        log_rest = torch.where(small, exact, log_rest)
    return log_rest


def _forward_step(
    r: Tensor, tau: float, total: Tensor | None, update: bool
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """One step, in place: ``total += α`` and, if ``update``, ``r += log(1 − α)``.

    Returns what the backward of the step needs: (log α, the mask of the item with α > 1/2,
    log(1 − α) of that item). At most one item per row has α > 1/2; for every other item
    ``log1p(−α)`` is accurate, and for that one ``log(1 − α) = log Σ_{j≠top} α_j``: never 1
    minus a number close to 1.
    """
    log_alpha = torch.log_softmax(r / tau, dim=-1)
    alpha = log_alpha.exp()
    if total is not None:
        total.add_(alpha)
    if not update:
        return log_alpha, None, None
    top = alpha > 0.5
    alpha.masked_fill_(top, 0.0)
    log_rest = _log_rest(alpha.sum(-1, keepdim=True), log_alpha, top)
    log1m = torch.log1p(alpha.neg_(), out=alpha)
    r.add_(torch.where(top, log_rest, log1m))
    return log_alpha, top, log_rest


def _backward_step(
    log_alpha: Tensor, top: Tensor | None, log_rest: Tensor | None,
    grad_total: Tensor, grad_next: Tensor | None, tau: float,
) -> Tensor:
    """∂/∂r of ⟨grad_total, α⟩ + ⟨grad_next, r + log(1 − α)⟩ (no update if grad_next is None).

    Softmax part: α ⊙ (g − ⟨α, g⟩). Update part, with u = grad_next, β_i = α_i/(1 − α_i),
    W = Σ_{i≠top} u_i β_i (bounded: α_i ≤ 1/2 off the top) and u_top = α_top = 0 in a row
    where no item has α > 1/2:
        l ≠ top: α_l W − u_l β_l + u_top α_top · α_l/(1 − α_top)
        l = top: α_top (W − u_top)
    where α_l/(1 − α_top) = exp(log α_l − log(1 − α_top)) ∈ [0, 1] never overflows.
    """
    alpha = log_alpha.exp()
    grad_x = torch._softmax_backward_data(grad_total, alpha, -1, alpha.dtype)
    if grad_next is None:
        return grad_x.div_(tau)
    u = grad_next
    alpha_top = (alpha * top).sum(-1, keepdim=True)
    u_top = (u * top).sum(-1, keepdim=True)
    u_beta = (alpha / (1 - alpha)).masked_fill_(top, 0.0).mul_(u)
    w = u_beta.sum(-1, keepdim=True)
    update = (log_alpha - log_rest).exp_().mul_(u_top * alpha_top)  # u_top α_top · ratio
    update.addcmul_(alpha, w.expand_as(alpha)).sub_(u_beta)
    update = torch.where(top, alpha_top * (w - u_top), update)
    return torch.add(u, grad_x.add_(update), alpha=1 / tau)


class _RelaxedTopK(torch.autograd.Function):
    """Forward without a graph; backward by hand, from kept or recomputed steps.

    Small problems (k · numel ≤ 2^18) keep every step's (log α, top, log(1 − α_top)) from the
    forward. Larger ones keep only the keys at the start of each segment of ``segment`` steps
    and, in the backward, recompute one segment at a time.
    """

    @staticmethod
    def forward(ctx, keys: Tensor, k: int, tau: float, segment: int | None) -> Tensor:
        store_all = segment is None and k * keys.numel() <= _STORE_ALL_ELEMENTS
        segment = segment or math.ceil(math.sqrt(k))
        r = keys.detach().clone()
        total = torch.zeros_like(r)
        checkpoints, records = [], []
        for j in range(k):
            if not store_all and j % segment == 0:
                checkpoints.append(r.clone())
            record = _forward_step(r, tau, total, update=j < k - 1)
            if store_all:
                records.append(record)
        ctx.k, ctx.tau, ctx.segment, ctx.records = k, tau, segment, records
        ctx.save_for_backward(*checkpoints)
        return total

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_total: Tensor):
        k, tau, segment = ctx.k, ctx.tau, ctx.segment
        grad = None  # gradient with respect to the keys after the current step
        if ctx.records:
            for record in reversed(ctx.records):
                grad = _backward_step(*record, grad_total, grad, tau)
            return grad, None, None, None  # records kept: a retained graph may run backward again
        checkpoints = ctx.saved_tensors
        for start in reversed(range(0, k, segment)):
            r = checkpoints[start // segment].clone()
            records = [
                _forward_step(r, tau, None, update=j < k - 1)
                for j in range(start, min(start + segment, k))
            ]
            while records:
                grad = _backward_step(*records.pop(), grad_total, grad, tau)
        return grad, None, None, None


class _NativeRelaxedTopK(torch.autograd.Function):
    """The C kernel: forward keeps the row at the start of every segment (but the first, which
    is the keys), backward recomputes one segment at a time. Rows are split over threads."""

    @staticmethod
    def forward(ctx, keys: Tensor, k: int, tau: float, segment: int, keep: bool) -> Tensor:
        library, n = native.library(), keys.shape[-1]
        x = keys.detach().reshape(-1, n).contiguous()
        rows = x.shape[0]
        total = torch.empty_like(x)
        segments = -(-k // segment)
        kept = x.new_empty((rows, segments - 1, n)) if keep else None
        threads = native.threads_for(rows, rows * n * k)
        scratch = x.new_empty((threads, 2 * n))
        kernel = getattr(library, f"estibench_relaxed_topk_forward_{native.suffix(x)}")
        native.over_rows(rows, threads, lambda slot, lo, hi: kernel(
            x.data_ptr(), total.data_ptr(), None if kept is None else kept.data_ptr(),
            lo, hi, n, k, tau, segment, scratch[slot].data_ptr()))
        ctx.k, ctx.tau, ctx.segment, ctx.library = k, tau, segment, library
        if kept is not None:
            ctx.save_for_backward(x, kept)
        return total.view(keys.shape)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_total: Tensor):
        k, tau, segment = ctx.k, ctx.tau, ctx.segment
        x, kept = ctx.saved_tensors
        rows, n = x.shape
        grad = grad_total.reshape(rows, n).to(x.dtype).contiguous()
        grad_keys = torch.empty_like(x)
        threads = native.threads_for(rows, 2 * rows * n * k)
        scratch = x.new_empty((threads, (segment + 2) * n))
        library, suffix = ctx.library, native.suffix(x)
        record_bytes = getattr(library, f"estibench_relaxed_topk_record_bytes_{suffix}")()
        records = torch.empty((threads, segment * record_bytes), dtype=torch.uint8)
        kernel = getattr(library, f"estibench_relaxed_topk_backward_{suffix}")
        native.over_rows(rows, threads, lambda slot, lo, hi: kernel(
            x.data_ptr(), kept.data_ptr(), grad.data_ptr(), grad_keys.data_ptr(), lo, hi, n, k,
            tau, segment, scratch[slot].data_ptr(), records[slot].data_ptr()))
        return grad_keys.view(grad_total.shape), None, None, None, None


BACKENDS = ("auto", "native", "torch")


def relaxed_topk(
    keys: Tensor, k: int, tau: float, *, segment: int | None = None, backend: str = "auto"
) -> Tensor:
    """The relaxed k-hot Σ_j α^j of ``keys`` ``[*, n]`` at temperature ``tau``.

    Args:
        keys: Gumbel-perturbed logits, ``[*, n]``.
        k: subset size, 1 <= k <= n.
        tau: temperature > 0.
        segment: steps per segment: the forward keeps k/segment keys, the backward
            recomputes and holds one segment's steps at a time. By default every step is
            kept when k · numel(keys) <= 2^18 (torch path), else segments of ⌈√k⌉ steps.
        backend: ``"native"``: the C kernel (CPU, float32/float64; raises if it cannot be
            used); ``"torch"``: the torch implementation; ``"auto"``: the kernel where it
            can be used, else torch.

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
    if not 1 / tau <= torch.finfo(keys.dtype).max:  # keys / τ must be representable
        raise ValueError(f"relaxed_topk: temperature {tau} is too small for {keys.dtype} "
                         f"(1/τ overflows)")
    if segment is not None and not (isinstance(segment, int) and segment >= 1):
        raise ValueError(f"relaxed_topk needs segment >= 1, got {segment!r}")
    segment = None if segment is None else min(segment, k)
    if backend not in BACKENDS:
        raise ValueError(f"relaxed_topk backend must be one of {BACKENDS}, got {backend!r}")
    if not bool(torch.isfinite(keys).all()):
        raise ValueError("relaxed_topk needs finite keys (logits plus Gumbel noise); got NaN or ±inf")
    if backend != "torch" and keys.numel() > 0:
        why = _why_not_native(keys)
        if why is None:
            keep = torch.is_grad_enabled() and keys.requires_grad  # checkpoints for a backward
            return _NativeRelaxedTopK.apply(keys, k, float(tau),
                                            segment or math.ceil(math.sqrt(k)), keep)
        if backend == "native":
            raise RuntimeError(f"relaxed_topk backend 'native' cannot be used: {why}")
    return _RelaxedTopK.apply(keys, k, float(tau), segment)


def _why_not_native(keys: Tensor) -> str | None:
    """Why the C kernel cannot take keys like these, or None when it can."""
    if not native.supports(keys):
        return f"{keys.dtype} on {keys.device.type}"
    if native.library() is None:
        return native.status()
    return None


def implementation(like: Tensor) -> str:
    """Which implementation ``relaxed_topk`` (backend "auto") runs for keys like ``like``."""
    why = _why_not_native(like)
    return "C kernel" if why is None else f"torch ({why})"


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


def _relaxed_topk_elements(self: Estimator, dist: Distribution, num_samples: int) -> int:
    """The samples' copies plus the relaxation's checkpoints: ⌈√k⌉ segments of n numbers per
    sample, and as many again for the torch path's recomputation in the backward pass, with
    the same margin (see ``Estimator.pass_elements``)."""
    steps = 3 * math.isqrt(dist.k - 1) + 3
    return Estimator.pass_elements(self, dist, num_samples) + (
        num_samples * sample_numel(dist) * steps)


class _RelaxedTopKBase(Relaxation):
    """Gumbel-perturbed logits, their top-k, and the relaxed top-k of them."""

    def noisy_keys(self, dist: Distribution, num_samples: int,
                   generator: torch.Generator) -> Tensor:
        if not isinstance(dist, Subset):
            raise TypeError(f"{self.info.name} needs a Subset distribution, got "
                            f"{type(dist).__name__}")
        return dist.keys((num_samples,), generator)  # [S, *batch, n]

    def harden(self, dist: Distribution, keys: Tensor) -> Tensor:
        return topk_khot(keys, dist.k)

    def soften(self, dist: Distribution, keys: Tensor) -> Tensor:
        return relaxed_topk(keys, dist.k, self.temperature)

    def diagnostics(self, dist: Distribution) -> dict:
        return {"kernel": implementation(dist.logits)}

    pass_elements = _relaxed_topk_elements


@register
class RelaxedTopK(_RelaxedTopKBase):
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


STRelaxedTopK = register(twin(
    RelaxedTopK, "STRelaxedTopK", name="st-relaxed-topk",
    description="Straight-through relaxed top-k: exact top-k forward, relaxed gradient.",
    references="Xie & Ermon 2019 (straight-through variant)",
))
