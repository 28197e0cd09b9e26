"""One mechanism for relaxations and the straight-through estimators built on them.

A relaxation is three pieces, defined once per family:

- ``noisy_keys(dist, S, generator)``: the noise of S draws, perturbing the parameters
  (Gumbel-perturbed logits, Gumbel-perturbed scores, ...); differentiable in θ;
- ``harden(dist, keys)``: the exact sample those keys select (argmax, top-k, sort): it has
  exactly the distribution of z;
- ``soften(dist, keys)``: the relaxed, differentiable sample (softmax, relaxed top-k,
  NeuralSort, ...) that tends to ``harden`` as τ → 0.

Two estimators come from it. The *pathwise* estimator evaluates f on the relaxed sample,
``f(soften(keys))``. Its *straight-through twin* evaluates f on the hard sample and lets the
gradient flow through a *carrier*, ``f(hard + (c − c.detach()))``, whose value is the hard
sample exactly and whose gradient is that of c. The carrier is the relaxed sample by default;
estimators that change only the backward pass override ``carrier``: straight-through on the
probabilities (Bengio et al. 2013), Gumbel-Rao (Paulus et al. 2021: the relaxed sample averaged
over noise drawn given the hard sample), ReinMax (Liu et al. 2023), GST (Fan et al. 2022).

:func:`twin` makes the straight-through twin of a relaxation class, with the same options,
noise and relaxation, so a relaxation is written once and registered twice.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import Tensor
from torch.distributions import Distribution

from estimators.base import Estimator, Objective


def straight_through(hard: Tensor, carrier: Tensor) -> Tensor:
    """``hard`` in the forward pass, the gradient of ``carrier`` in the backward pass."""
    return hard.detach() + (carrier - carrier.detach())


class Relaxation(Estimator):
    """Base of the relaxation estimators: subclasses define ``noisy_keys``, ``harden`` and
    ``soften``; ``straight_through`` (a class attribute) selects the twin."""

    straight_through: ClassVar[bool] = False

    def noisy_keys(self, dist: Distribution, num_samples: int,
                   generator: torch.Generator) -> Tensor:
        """The perturbed parameters of ``num_samples`` draws, differentiable in θ."""
        raise NotImplementedError

    def harden(self, dist: Distribution, keys: Tensor) -> Tensor:
        """The exact samples ``[S, *batch, *event]`` that ``keys`` select (no gradient)."""
        raise NotImplementedError

    def soften(self, dist: Distribution, keys: Tensor) -> Tensor:
        """The relaxed samples ``[S, *batch, *event]`` of ``keys``, differentiable."""
        raise NotImplementedError

    def carrier(self, dist: Distribution, keys: Tensor, hard: Tensor,
                generator: torch.Generator) -> Tensor:
        """What the straight-through gradient flows through: the relaxed sample."""
        return self.soften(dist, keys)

    def relaxed(self, dist: Distribution, num_samples: int,
                generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(relaxed samples, the hard samples of the same noise), checked inputs."""
        self.check_inputs(dist, num_samples)
        keys = self.noisy_keys(dist, num_samples, generator)
        with torch.no_grad():
            hard = self.harden(dist, keys.detach())
        return self.soften(dist, keys), hard

    def surrogate(
        self, dist: Distribution, f: Objective, *, num_samples: int, generator: torch.Generator
    ) -> Tensor:
        self.check_inputs(dist, num_samples)
        keys = self.noisy_keys(dist, num_samples, generator)
        if not self.straight_through:
            return f(self.soften(dist, keys)).mean(0)
        with torch.no_grad():
            hard = self.harden(dist, keys.detach())
        return f(straight_through(hard, self.carrier(dist, keys, hard, generator))).mean(0)


def twin(cls: type[Relaxation], class_name: str, *, name: str, description: str,
         references: str) -> type[Relaxation]:
    """The straight-through twin of the relaxation ``cls``: its options, noise and relaxation,
    the hard sample forward. Assign the result to ``class_name`` in ``cls``'s module (so that
    it pickles) and register it."""
    info = dataclasses.replace(cls.info, name=name, description=description,
                               references=references)
    doc = (f"Straight-through twin of :class:`{cls.__name__}`: f sees the hard sample, the "
           "gradient flows through the relaxed one.")
    return type(class_name, (cls,), {"info": info, "straight_through": True,
                                     "__module__": cls.__module__, "__qualname__": class_name,
                                     "__doc__": doc})
