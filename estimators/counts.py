"""Count distributions (torch's Poisson, Binomial, NegativeBinomial, Geometric): the count
family, samplers that take a generator, and the support evaluation GenGS truncates.

Samplers: Poisson and Binomial use torch's generator-aware samplers; Geometric inverts its CDF,
z = ⌊log u / log(1 − p)⌋; any other count distribution (NegativeBinomial) inverts its CDF on
the support 0..⌈μ + 40σ + 40⌉, beyond which these distributions keep less than 1e-15 of their
mass (Chebyshev alone bounds it by 1/1600; their tails decay geometrically or faster).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import Binomial, Distribution, Geometric, NegativeBinomial, Poisson

from estimators import noise
from estimators.families import register_family

COUNT_TYPES = (Poisson, Binomial, NegativeBinomial, Geometric)


def support_bound(dist: Distribution) -> float | None:
    """The largest value in the support, where the support is bounded (Binomial), else None."""
    bound = getattr(dist.support, "upper_bound", None)
    if bound is None:
        return None
    return float(torch.as_tensor(bound).max())


def support_log_probs(
    dist: Distribution, largest: int, dtype: torch.dtype | None = None
) -> tuple[Tensor, Tensor]:
    """(values 0..largest ``[K]``, log p(value) ``[*batch, K]``), differentiable in the
    parameters; values outside an element's support get −inf.

    ``dtype`` (default: the distribution's) is that of the values; float64 values make torch's
    count ``log_prob`` compute in float64 by type promotion, even for float32 parameters.
    """
    mean = dist.mean
    values = torch.arange(largest + 1, device=mean.device, dtype=dtype or mean.dtype)
    shaped = values.reshape((-1,) + (1,) * len(dist.batch_shape))
    validate, dist._validate_args = dist._validate_args, False  # values past a bound: −inf
    try:
        log_p = dist.log_prob(shaped)  # [K, *batch]
    finally:
        dist._validate_args = validate
    log_p = torch.nan_to_num(log_p, nan=-math.inf)
    return values, log_p.movedim(0, -1)


def generic_cap(dist: Distribution) -> int:
    """⌈max(μ + 40σ + 40)⌉, capped by the support's bound: where inversion sampling stops."""
    cap = float((dist.mean + 40 * dist.stddev).detach().max()) + 40
    bound = support_bound(dist)
    return int(min(math.ceil(cap), bound) if bound is not None else math.ceil(cap))


def _sample_by_inversion(dist: Distribution, shape: tuple[int, ...], generator) -> Tensor:
    like = dist.mean.detach().double()
    return invert_cdf(dist, noise.uniform(shape + tuple(dist.batch_shape), generator, like=like))


def invert_cdf(dist: Distribution, u: Tensor) -> Tensor:
    """Counts ``[S, *batch]`` from float64 uniforms ``u`` ``[S, *batch]`` by inverting the CDF
    on the support 0..``generic_cap``, in the distribution's dtype."""
    values, log_p = support_log_probs(dist, generic_cap(dist))
    cdf = log_p.detach().double().exp().cumsum(-1)  # [*batch, K]
    # The number of CDF values below u, by binary search: O(log K) per sample, no [S, *batch, K]
    # comparison tensor. Samples go last so each batch element searches its own CDF.
    index = torch.searchsorted(cdf, u.movedim(0, -1).contiguous()).movedim(-1, 0)
    return values[index.clamp_(max=len(values) - 1)]


def _sample_poisson(dist: Poisson, shape: tuple[int, ...], generator) -> Tensor:
    rate = dist.rate.detach().expand(shape + tuple(dist.batch_shape))
    return torch.poisson(rate, generator=generator)


def _sample_binomial(dist: Binomial, shape: tuple[int, ...], generator) -> Tensor:
    full = shape + tuple(dist.batch_shape)
    count = dist.total_count.detach().expand(full).to(dist.probs.dtype)
    return torch.binomial(count, dist.probs.detach().expand(full), generator=generator)


def _sample_geometric(dist: Geometric, shape: tuple[int, ...], generator) -> Tensor:
    logits = dist.logits.detach()
    return geometric_of(logits, noise.uniform(shape + tuple(dist.batch_shape), generator,
                                              like=logits))


def geometric_of(logits: Tensor, u: Tensor) -> Tensor:
    """Geometric(σ(logits)) counts (failures before the first success) from float64 uniforms
    ``u`` by inversion, ⌊log u / log(1 − p)⌋, in the logits' dtype."""
    log1m_p = -torch.nn.functional.softplus(logits.detach().double())  # log(1 − p), stable
    return torch.floor(torch.log(u) / log1m_p).to(logits.dtype)


register_family(Poisson, "count", _sample_poisson)
register_family(Binomial, "count", _sample_binomial)
register_family(Geometric, "count", _sample_geometric)
def _inversion_elements(dist: Distribution) -> int:
    """The CDF table of inversion sampling and its intermediates: 8 numbers per support point
    up to ``generic_cap`` per batch element."""
    return 8 * math.prod(dist.batch_shape) * (generic_cap(dist) + 1)


register_family(NegativeBinomial, "count", _sample_by_inversion, _inversion_elements)
