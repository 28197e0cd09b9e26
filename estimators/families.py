"""Which family a distribution belongs to, and how to draw from it with an explicit generator.

A *family* is the kind of discrete variable (bernoulli, categorical, subset, permutation,
count). Estimators declare the families they support; problems declare the family of the
distribution they hand out. ``Independent`` wrappers are looked through: a vector of
independent Bernoulli variables is of the bernoulli family.

torch's ``Distribution.sample`` takes no generator, and our contract says randomness is an
argument, so every family also registers a sampler here::

    draw(dist, num_samples, generator) -> Tensor[S, *batch, *event]   # no gradient
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.distributions import Bernoulli, Distribution, Independent, OneHotCategorical

from estimators import noise
from estimators.errors import IncompatibleError

FAMILIES = ("bernoulli", "categorical", "subset", "permutation", "count", "exactk")

Sampler = Callable[[Distribution, tuple[int, ...], torch.Generator], Tensor]
_FAMILY: dict[type, str] = {}
_SAMPLER: dict[type, Sampler] = {}
_SAMPLER_ELEMENTS: dict[type, Callable[[Distribution], int]] = {}


def register_family(dist_type: type, family: str, sampler: Sampler,
                    sampler_elements: Callable[[Distribution], int] | None = None) -> None:
    """Declare the family of a distribution type and how to sample it from a generator.

    ``sampler(base_dist, shape, generator)`` returns hard samples of shape
    ``shape + base_dist.batch_shape + base_dist.event_shape``. ``sampler_elements(base_dist)``,
    where given, bounds the numbers the sampler creates besides the samples (a table over the
    support, say), for the harness's memory estimate (``Estimator.pass_elements``).
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; families: {', '.join(FAMILIES)}")
    _FAMILY[dist_type] = family
    _SAMPLER[dist_type] = sampler
    if sampler_elements is not None:
        _SAMPLER_ELEMENTS[dist_type] = sampler_elements


def sampler_elements(dist: Distribution) -> int:
    """Numbers ``draw`` creates for ``dist`` besides the samples (0 unless registered)."""
    base, count = _lookup(_SAMPLER_ELEMENTS, dist, default=None)
    return 0 if count is None else int(count(base))


def base_distribution(dist: Distribution) -> Distribution:
    """``dist`` with any ``Independent`` wrappers removed."""
    while isinstance(dist, Independent):
        dist = dist.base_dist
    return dist


def _lookup(table: dict, dist: Distribution, **default):
    """(base distribution, the entry of ``table`` for its type or a base class of it); the
    ``default`` keyword's value when there is none, else ``IncompatibleError``."""
    base = base_distribution(dist)
    for cls in type(base).__mro__:
        if cls in table:
            return base, table[cls]
    if "default" in default:
        return base, default["default"]
    known = ", ".join(sorted(t.__name__ for t in table))
    raise IncompatibleError(
        f"no estimator family is registered for {type(base).__name__} (registered: {known})"
    )


def family_of(dist: Distribution) -> str:
    """The family name of ``dist`` (looking through ``Independent``)."""
    return _lookup(_FAMILY, dist)[1]


@torch.no_grad()
def draw(dist: Distribution, num_samples: int, generator: torch.Generator) -> Tensor:
    """``num_samples`` hard samples ``[S, *batch, *event]`` drawn with ``generator``."""
    base, sampler = _lookup(_SAMPLER, dist)
    return sampler(base, (num_samples,), generator)


def _sample_bernoulli(dist: Bernoulli, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    logits = dist.logits  # [*batch]
    # b = 1 exactly when logits + Logistic noise > 0, i.e. u < sigmoid(logits).
    eps = noise.logistic(shape + logits.shape, generator, like=logits)
    return (logits + eps > 0).to(logits.dtype)


def _sample_categorical(
    dist: OneHotCategorical, shape: tuple[int, ...], generator: torch.Generator
) -> Tensor:
    logits = dist.logits  # [*batch, K]
    keys = logits + noise.gumbel(shape + logits.shape, generator, like=logits)
    return one_hot_argmax(keys)


def one_hot_argmax(keys: Tensor) -> Tensor:
    """One-hot of the argmax over the last dimension, in the dtype of ``keys``."""
    index = keys.argmax(dim=-1, keepdim=True)
    return torch.zeros_like(keys).scatter_(-1, index, 1.0)


register_family(Bernoulli, "bernoulli", _sample_bernoulli)
register_family(OneHotCategorical, "categorical", _sample_categorical)
