"""The generalized Gumbel-softmax (GenGS) for count variables (Joo et al. 2020).

Truncate the support of a count distribution to c = 0..K, relax the truncated categorical with
Gumbel-softmax, and map back to a count by the linear transformation with the support values:

    w = softmax((log π + g) / τ),   z = Σ_k w_k c_k,   g ~ Gumbel(0, 1) i.i.d.

π_k = p(c_k) for k < K; what lies beyond K either joins the last category
(``remainder=lump``: π_K = 1 − P(X < K)) or is dropped and the kept masses renormalised
(``remainder=renormalize``: π_k = p(c_k) / P(X ≤ K)). The two choices bias the estimate
differently; the relaxation adds a bias that vanishes as τ → 0. Gradients reach the
distribution's parameters through ``log_prob``, so any torch count distribution whose
``log_prob`` is defined on 0..K works, with no per-family code.

The truncation level K is chosen per element: the smallest K with P(X ≤ K) ≥ 1 − ``tail``,
evaluated in float64 whatever the working dtype. It lies in 0..⌈μ + σ √(1/tail − 1)⌉ by
Cantelli's inequality, but that window is loose (Poisson(5) at tail 1e-4: 229 points for
K = 15), so the search starts on 0..⌈μ + 8σ⌉ + 8 and doubles until every element's K is
inside, up to Cantelli's window. It never goes past ``max_support`` support points: an element
whose K lies beyond gets a message naming the limit instead of an unbounded allocation. Only
0..max K (over the batch) is kept for the noise and the softmax: Poisson rate 1000 at tail
1e-4 has K = 1,120, so one relaxed sample costs 1,121 columns.
``diagnostics(dist)`` reports K and the mass beyond it for every element.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import Distribution

from estimators import noise
from estimators.base import SAMPLE_COPIES, EstimatorInfo, register, sample_numel
from estimators.counts import support_bound, support_log_probs
from estimators.errors import UserError
from estimators.families import base_distribution
from estimators.registry import Option, at_least, positive
from estimators.relaxation import Relaxation, twin


def _tail(value: float) -> str | None:
    return None if 0 < value < 1 else "a probability strictly between 0 and 1"


OPTIONS = (
    Option("temperature", 0.5, doc="relaxation temperature τ > 0", check=positive),
    Option("tail", 1e-4, doc="probability mass allowed beyond the truncation level K",
           check=_tail),
    Option("remainder", "lump", choices=("lump", "renormalize"),
           doc="lump: the mass beyond K joins category K; renormalize: it is dropped"),
    Option("max_support", 10000, doc="most support points (K + 1) the truncation may use",
           check=at_least(2)),
)


class _GenGSBase(Relaxation):
    def truncated_log_probs(self, dist: Distribution) -> tuple[Tensor, Tensor, Tensor]:
        """(support values ``[K+1]``, log π ``[*batch, K+1]`` (−inf past each element's K),
        per-element K ``[*batch]``)."""
        base = base_distribution(dist)
        dtype = base.mean.dtype
        spread = math.sqrt(1 / self.tail - 1)
        mean, std = base.mean.detach().double(), base.stddev.detach().double()
        cantelli = float((mean + spread * std).max())
        if not math.isfinite(cantelli):
            raise UserError(
                f"{self.spec}: the {type(base).__name__} distribution has a non-finite mean or "
                "standard deviation (NaN or ±inf parameters); GenGS needs finite ones"
            )
        bound = support_bound(base)
        guaranteed = math.ceil(cantelli) if bound is None else int(min(math.ceil(cantelli), bound))
        largest = min(guaranteed, math.ceil(float((mean + 8 * std).max())) + 8)
        with torch.no_grad():  # the search: no graph over its (longer) window
            while True:
                largest = min(largest, self.max_support - 1)  # never allocate past the limit
                # float64 values make log_prob compute in float64 (type promotion): in float32
                # the CDF of Poisson(1000) drifts by ~1e-4 (log p(k) = k log λ − λ − log k!
                # cancels terms of ~7000), which would put K 6 too low at tail 1e-4.
                _, log_p = support_log_probs(base, largest, torch.float64)  # [*batch, W+1]
                cdf = log_p.exp().cumsum(-1)
                if largest >= guaranteed or bool((cdf[..., -1] >= 1 - self.tail).all()):
                    break
                if largest >= self.max_support - 1:
                    raise UserError(
                        f"{self.spec}: truncating {type(base).__name__} at tail={self.tail} "
                        f"needs more than max_support={self.max_support} support points (at "
                        f"most {guaranteed + 1} by Cantelli's inequality); raise max_support "
                        "or tail"
                    )
                largest = 2 * largest + 1
            level = (cdf < 1 - self.tail).sum(-1).clamp(max=largest)  # [*batch]
        # Differentiable, on 0..max K only: the noise and the softmax cost what K needs.
        top = int(level.max()) + 1 if level.numel() else 1
        values, log_p = support_log_probs(base, top - 1, torch.float64)  # [K+1], [*batch, K+1]
        cdf = log_p.exp().cumsum(-1)
        index = torch.arange(top, device=values.device)
        beyond = index > level.unsqueeze(-1)
        if self.remainder == "lump":
            # P(X < K) = P(X <= K) − p(K), gathered at K only: < 1 − tail, so the log is finite.
            at_level = level.unsqueeze(-1)
            below = cdf.gather(-1, at_level) - log_p.gather(-1, at_level).exp()
            log_pi = log_p.scatter(-1, at_level, torch.log1p(-below))
        else:
            kept = cdf.gather(-1, level.unsqueeze(-1))  # P(X <= K)
            log_pi = log_p - kept.log()
        log_pi = log_pi.masked_fill(beyond, -math.inf).to(dtype)
        return values.to(dtype), log_pi, level

    def noisy_keys(self, dist: Distribution, num_samples: int,
                   generator: torch.Generator) -> Tensor:
        """log π + Gumbel noise over the truncated support 0..K, ``[S, *batch, K+1]``."""
        _, log_pi, _ = self.truncated_log_probs(dist)
        return log_pi + noise.gumbel((num_samples,) + tuple(log_pi.shape), generator,
                                     like=log_pi)

    def harden(self, dist: Distribution, keys: Tensor) -> Tensor:
        return keys.argmax(-1).to(keys.dtype)  # the support values are 0..K

    def soften(self, dist: Distribution, keys: Tensor) -> Tensor:
        """The relaxed count: the support values weighted by softmax(keys / τ)."""
        weights = torch.softmax(keys / self.temperature, dim=-1)  # [S, *batch, K+1]
        values = torch.arange(keys.shape[-1], device=keys.device, dtype=keys.dtype)
        return (weights * values).sum(-1)

    def pass_elements(self, dist: Distribution, num_samples: int) -> int:
        """Per sample and element, the K + 1 keys, weights and their gradients (the samples'
        copies of ``Estimator.pass_elements``, K + 1 wide), plus the truncation's tables."""
        with torch.no_grad():
            width = self.truncated_log_probs(dist)[1].shape[-1]
        return (num_samples * SAMPLE_COPIES + 16) * sample_numel(dist) * width

    def diagnostics(self, dist: Distribution) -> dict:
        """Per element: the truncation level K and the mass beyond it, P(X > K)."""
        with torch.no_grad():
            values, _, level = self.truncated_log_probs(dist)
            _, log_p = support_log_probs(base_distribution(dist), len(values) - 1,
                                         torch.float64)
            cdf = log_p.exp().cumsum(-1).gather(-1, level.unsqueeze(-1)).squeeze(-1)
        return {"truncation_K": level.reshape(-1).tolist(),
                "mass_beyond_K": (1 - cdf).clamp(min=0).reshape(-1).tolist()}


@register
class GenGS(_GenGSBase):
    info = EstimatorInfo(
        name="gengs",
        description="Generalized Gumbel-softmax: truncate the count support, relax, map back "
        "to a count linearly.",
        families=("count",),
        unbiased=False,
        pathwise=True,
        needs_relaxable=True,
        options=OPTIONS,
        references="Joo et al. 2020",
    )


STGenGS = register(twin(
    GenGS, "STGenGS", name="st-gengs",
    description="Straight-through GenGS: the hard (truncated) count forward, the relaxed "
    "count backward.",
    references="Joo et al. 2020 (straight-through variant)",
))
