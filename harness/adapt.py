"""Training an estimator's own parameters φ (``EstimatorInfo.learns``), by the harness.

An estimator that learns (RELAX's control variate) keeps φ in its surrogate's graph and never
trains it. The harness minimises the variance of the estimate: for an unbiased estimator E[ĝ]
does not depend on φ, so ∂/∂φ Var ĝ = ∂/∂φ E[‖ĝ‖²], a double backward through the surrogate
(``variance_objective``: ĝ with ``create_graph``, then ‖ĝ‖² averaged over replicates).

- ``adapt``: before a measurement cell draws its replicates, φ starts fresh (from a seed
  derived from the cell's) and takes ``adapt_steps`` Adam steps at the cell's θ, on
  ``ADAPT_REPLICATES`` replicates per step from another derived seed; then φ is frozen, so the
  R replicates are independent and the cell reproducible.
- ``StateTrainer``: in a training run, φ is first adapted as above at the initial θ (so that
  the θ optimiser's first steps do not see the untrained control variate's variance), then
  takes one step per θ step, on the same estimate the θ step uses (its ĝ, taken with
  ``create_graph``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from estimators.base import Estimator
from problems.base import Problem

ADAPT_REPLICATES = 32


def variance_objective(problem: Problem, estimator: Estimator, *, num_samples: int,
                       replicates: int, generator: torch.Generator) -> Tensor:
    """(1/R) Σ_r ‖ĝ_r‖² over R replicates at the problem's θ, differentiable in φ."""
    from harness.measure import replicated

    work, theta = replicated(problem, replicates)
    surrogate = estimator.surrogate(work.distribution(), work.objective,
                                    num_samples=num_samples, generator=generator)
    grads = torch.autograd.grad(surrogate.sum(), theta, create_graph=True, allow_unused=True)
    return squared_norm(grads) / replicates


def squared_norm(grads) -> Tensor:
    """Σ ‖g‖² over the gradients that exist."""
    return sum(g.pow(2).sum() for g in grads if g is not None)


def adapt(problem: Problem, estimator: Estimator, *, num_samples: int, seed: int,
          freeze: bool = True) -> Estimator:
    """A copy of ``estimator`` whose φ starts from ``derived_seed(seed, "state")``, takes its
    ``adapt_steps`` at the problem's θ (noise from ``derived_seed(seed, "adapt")``) and is then
    (with ``freeze``) frozen; an estimator that does not learn is returned as it is."""
    if not estimator.info.learns:
        return estimator
    from harness.measure import derived_seed

    device = problem.parameters()[0].device
    adapted = estimator.with_fresh_state(
        problem.distribution(), torch.Generator(device).manual_seed(derived_seed(seed, "state")))
    trainer = StateTrainer(adapted)
    generator = torch.Generator(device).manual_seed(derived_seed(seed, "adapt"))
    for _ in range(adapted.adapt_steps):
        trainer.descend(variance_objective(problem, adapted, num_samples=num_samples,
                                           replicates=ADAPT_REPLICATES, generator=generator))
    if freeze:
        for p in trainer.phi:
            p.requires_grad_(False)
    return adapted


class StateTrainer:
    """φ's optimiser: ``descend(loss)`` takes one Adam step down ∂loss/∂φ; ``step(grads)``, in
    a training run, one step down ∂‖ĝ‖²/∂φ from the θ gradients of the step's estimate
    (computed with ``create_graph=True``)."""

    def __init__(self, estimator: Estimator) -> None:
        self.phi = estimator.state_parameters()
        self.optimiser = (torch.optim.Adam(self.phi, lr=estimator.state_learning_rate)
                          if self.phi else None)

    @property
    def active(self) -> bool:
        return self.optimiser is not None

    def descend(self, loss: Tensor) -> None:
        self.optimiser.zero_grad(set_to_none=True)
        for p, g in zip(self.phi, torch.autograd.grad(loss, self.phi, allow_unused=True)):
            p.grad = g
        self.optimiser.step()

    def step(self, grads: list[Tensor]) -> None:
        self.descend(squared_norm(grads))
