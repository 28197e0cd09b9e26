"""The estimator contract, stated once.

Every estimator has the same signature and returns a *surrogate loss*::

    estimator.surrogate(dist, f, *, num_samples, generator) -> Tensor[*batch]

- ``dist`` is a ``torch.distributions.Distribution`` built, differentiably, from the parameters
  θ under study. Its batch dimensions are independent problems (the harness uses them for R
  replicates in one pass); its event dimensions are one sample of the discrete variable, in the
  canonical encoding (0/1 for Bernoulli, one-hot for categorical, ...).
- ``f`` maps samples ``[S, *batch, *event]`` to objective values ``[S, *batch]``. Pathwise
  estimators call it on relaxed samples, so it must accept them (``ProblemInfo.relaxable``).
- The forward value of the surrogate is a Monte Carlo estimate of E[f(z)] averaged over
  ``num_samples`` samples, one per batch element; its gradient with respect to θ is the
  gradient estimate ("magic box", Foerster et al. 2018).
- An estimator never calls ``backward``, never holds an optimiser, never reads or seeds the
  global random number generator: all randomness comes from ``generator``.

What an estimator can do is data on its ``info`` (families, unbiased, pathwise, needs a
relaxable objective, expected failures), read by the harness and the tests; never a check of
its name.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor
from torch.distributions import Distribution

from estimators.errors import IncompatibleError, UserError
from estimators.families import base_distribution, family_of, sampler_elements
from estimators.registry import Configurable, Option, Registry

Objective = Callable[[Tensor], Tensor]


@dataclasses.dataclass(frozen=True)
class ExpectedFailure:
    """A conformance check this estimator is known to fail, and why.

    Args:
        check: the name of the check (e.g. ``"unbiased"``, ``"finite_gradients"``).
        reason: one sentence a reader of the test report understands.
        families: the families where it fails; empty means all.
    """

    check: str
    reason: str
    families: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class EstimatorInfo:
    """What an estimator is and can do, as data.

    ``unbiased`` and ``pathwise`` are separate facts: straight-through is pathwise and biased.
    ``needs_relaxable``: calls the objective on relaxed (non-discrete) samples.
    ``needs_enumerable``: enumerates the joint support (small problems only).
    ``needs_single_variable``: works on one variable of its family, not on a product of
    several (the unordered-set estimator samples one variable's categories without
    replacement).
    ``log_prob``: for score-function estimators, which log-probability they differentiate.
    ``learns``: owns parameters φ that the harness trains on the estimate's variance
    (``state_parameters``, ``with_fresh_state``; options ``adapt_steps`` and
    ``state_learning_rate``).
    ``evaluations_per_sample``: how many times one sample (as the estimator's paper counts
    samples: a DisARM antithetic pair is one) evaluates the objective f; ``None`` where it
    depends on the problem (the exact estimator evaluates the whole support), and then
    ``evaluations`` says how they are counted. Pathwise
    estimators also take one ∂f (a backward pass through f) per evaluation.
    """

    name: str
    description: str
    families: tuple[str, ...]
    unbiased: bool
    pathwise: bool
    needs_relaxable: bool = False
    needs_enumerable: bool = False
    needs_single_variable: bool = False
    learns: bool = False
    options: tuple[Option, ...] = ()
    expected_failures: tuple[ExpectedFailure, ...] = ()
    log_prob: str = ""
    references: str = ""
    evaluations_per_sample: int | None = 1
    evaluations: str = ""


class Estimator(Configurable):
    """Base class: option handling, the canonical spec, and input checks shared by all."""

    info: ClassVar[EstimatorInfo]

    def surrogate(
        self, dist: Distribution, f: Objective, *, num_samples: int, generator: torch.Generator
    ) -> Tensor:
        """Surrogate loss ``[*batch]``: forward is an estimate of E[f], gradient the estimate."""
        raise NotImplementedError

    def min_samples(self) -> int:
        """The fewest ``num_samples`` one estimate needs (a leave-one-out baseline needs 2)."""
        return 1

    # -- estimators that learn (info.learns) ----------------------------------------------------

    def state_parameters(self) -> list[Tensor]:
        """φ: the tensors the harness trains on the variance of the estimate (∂/∂φ E[‖ĝ‖²], a
        double backward through the surrogate); empty for an estimator that does not learn."""
        return []

    def with_fresh_state(self, dist: Distribution, generator: torch.Generator) -> Estimator:
        """A copy with φ freshly initialised from ``generator`` for distributions shaped like
        ``dist``; an estimator that does not learn returns itself."""
        return self

    def unavailable(self) -> str | None:
        """Why this estimator cannot run in this installation (a missing optional extra), or
        None; studies skip its cells with this reason."""
        return None

    def max_samples(self, dist: Distribution) -> int | None:
        """The most ``num_samples`` one estimate on ``dist`` can take (distinct categories drawn
        without replacement: their number), or None for no limit."""
        return None

    def objective_evaluations(self, dist: Distribution, num_samples: int) -> int:
        """How many times one estimate evaluates the objective f (the first dimension of what
        f sees, summed over its calls): ``num_samples · info.evaluations_per_sample``; the
        record's ``objective_evaluations``, so that estimators compare at equal cost."""
        return num_samples * self.info.evaluations_per_sample

    def pass_elements(self, dist: Distribution, num_samples: int) -> int:
        """An upper bound on the numbers (tensor elements) that one estimate on ``dist`` creates
        in its forward and backward pass, objective excluded (``Problem.sample_elements``).

        The harness divides its memory budget by it to bound how many replicates it draws in
        one batched pass, and refuses a cell whose one estimate would not fit. The default,
        ``SAMPLE_COPIES`` numbers per number of a sample, holds for estimators whose
        intermediates are shaped like their samples (noise, keys, relaxed and hard samples,
        their gradients); an estimator with larger intermediates (the steps of a relaxation, a
        2^k programme, an enumerated support) says so by overriding it.
        ``tests/harness/test_memory_budget.py`` checks the bound against the measured cost of
        a replicate for every registered estimator.
        """
        return num_samples * sample_numel(dist) * SAMPLE_COPIES + sampler_elements(dist)

    def diagnostics(self, dist: Distribution) -> dict:
        """What the estimator chose at these parameters (e.g. a truncation level), for the
        record; JSON-serialisable, empty by default."""
        return {}

    def config(self) -> dict:
        """Every setting that defines this estimator, JSON-serialisable."""
        return {"name": self.info.name, "spec": self.spec, **self.options}

    # -- checks shared by the implementations -------------------------------------------------

    def check_inputs(self, dist: Distribution, num_samples: int) -> str:
        """Check the family, the number of samples and the parameters; return the family."""
        family = family_of(dist)
        if family not in self.info.families:
            raise IncompatibleError(
                f"estimator {self.info.name!r} does not support the {family} family "
                f"(it supports: {', '.join(self.info.families)})"
            )
        if isinstance(num_samples, bool) or not isinstance(num_samples, int):
            raise UserError(f"num_samples must be an integer, got {num_samples!r}")
        if num_samples < self.min_samples():
            raise UserError(
                f"estimator {self.spec!r} needs num_samples >= {self.min_samples()}, "
                f"got {num_samples}"
            )
        if self.info.needs_single_variable and base_distribution(dist) is not dist:
            raise IncompatibleError(
                f"estimator {self.info.name!r} works on one {family} variable, and this "
                f"distribution is a product of several ({type(dist).__name__} over "
                f"{type(base_distribution(dist)).__name__}); its joint domain cannot be "
                "sampled without replacement"
            )
        most = self.max_samples(dist)
        if most is not None and num_samples > most:
            raise UserError(
                f"estimator {self.spec!r} takes at most num_samples={most} on this "
                f"distribution (it draws distinct outcomes without replacement); got {num_samples}"
            )
        if dist._validate_args:
            check_finite_parameters(dist)
        return family


SAMPLE_COPIES = 24


def sample_numel(dist: Distribution) -> int:
    """Numbers in one sample of ``dist``: ``prod(batch_shape) · prod(event_shape)``."""
    return math.prod(dist.batch_shape) * math.prod(dist.event_shape)


def check_finite_parameters(dist: Distribution) -> None:
    """Reject NaN or infinite logits/probabilities/rates: they would give a silent NaN later.

    Runs when the distribution validates its arguments (torch's default), like torch's own
    checks; ``validate_args=False`` skips it (one reduction and, on CUDA, one synchronisation).
    """
    base = base_distribution(dist)
    for name in base.arg_constraints:
        value = getattr(base, name, None)
        if isinstance(value, Tensor) and value.is_floating_point():
            if not bool(torch.isfinite(value).all()):
                raise UserError(
                    f"the {type(base).__name__} distribution has non-finite {name} "
                    "(NaN or ±inf); estimators need finite parameters"
                )


ESTIMATORS: Registry[Estimator] = Registry("estimator", "estibench.estimators")
register = ESTIMATORS.register
