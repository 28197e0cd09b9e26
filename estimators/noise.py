"""Shared noise: uniform, Gumbel and logistic variates drawn from an explicit generator.

Uniforms are drawn in float64 and kept inside the open interval (0, 1), then the transformed
noise is rounded to the working dtype. Two known failures of Gumbel samplers motivate this
(see the Gumbel-softmax notes in the references): ``u == 0`` gives ``-log(-log u) = -inf`` and
a NaN sample downstream, and a float32 uniform has a resolution of 2^-24, which truncates and
coarsens the Gumbel tail beyond about 16.6 (a float64 uniform reaches about 36.7).

Every function takes ``like``, a tensor whose device and dtype the noise takes, and returns
noise of exactly ``shape``.
"""

from __future__ import annotations

import torch
from torch import Tensor

_TINY = torch.finfo(torch.float64).tiny


def uniform(shape: tuple[int, ...], generator: torch.Generator, *, like: Tensor) -> Tensor:
    """U(0, 1) in float64, strictly inside (0, 1), on ``like.device``."""
    u = torch.rand(shape, generator=generator, device=like.device, dtype=torch.float64)
    return u.clamp_(min=_TINY)  # torch.rand is in [0, 1): only 0 needs moving


def gumbel(shape: tuple[int, ...], generator: torch.Generator, *, like: Tensor) -> Tensor:
    """Standard Gumbel noise g = -log(-log u), finite, in ``like.dtype``."""
    return gumbel_of(uniform(shape, generator, like=like), like=like)


def gumbel_of(u: Tensor, *, like: Tensor) -> Tensor:
    """The Gumbel variates −log(−log u) of float64 uniforms ``u``, in ``like.dtype``."""
    return torch.log(u).neg_().log_().neg_().to(like.dtype)  # one float64 buffer, in place


def log_exponential_of(u: Tensor, *, like: Tensor) -> Tensor:
    """log E for the Exp(1) variates E = −log u of float64 uniforms ``u`` (the negated Gumbel
    variates of ``gumbel_of``), in ``like.dtype``."""
    return torch.log(u).neg_().log_().to(like.dtype)


def logistic(shape: tuple[int, ...], generator: torch.Generator, *, like: Tensor) -> Tensor:
    """Standard logistic noise log u - log(1 - u), finite, in ``like.dtype``.

    The difference of two independent Gumbel variates, and the noise of the binary Concrete
    relaxation (Maddison et al. 2017).
    """
    return logistic_of(uniform(shape, generator, like=like), like=like)


def logistic_of(u: Tensor, *, like: Tensor) -> Tensor:
    """The logistic variates log u − log(1 − u) of float64 uniforms ``u``, in ``like.dtype``."""
    return (torch.log(u) - torch.log1p(-u)).to(like.dtype)


def per_replicate_uniforms(dist, num_samples: int, copies: int, generator: torch.Generator, *,
                           like: Tensor) -> Tensor:
    """``copies`` float64 uniforms per number of ``num_samples`` samples of ``dist``,
    ``[copies, S, *batch, *event]``, drawn in one call laid out sample by sample and batch
    element by batch element (all copies of one batch element together), so that a batch of
    replicates reads the generator's stream in the order a loop over them would."""
    batch, event = tuple(dist.batch_shape), tuple(dist.event_shape)
    u = uniform((num_samples,) + batch + (copies,) + event, generator, like=like)
    return u.movedim(1 + len(batch), 0)
