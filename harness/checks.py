"""Conformance checks: one estimator or problem against every compatible registered partner.

One implementation serves three users: ``estibench check SPEC`` (a plug-in's author runs it on
an entry registered through an entry point), a plug-in's own pytest suite, and
``tests/conformance`` (every registered pair). Like scikit-learn's common checks, each check is
a plain function of the two specs that returns ``None`` or raises :class:`CheckFailed` with the
reason; :class:`CheckSkipped` (a ``unittest.SkipTest``, so pytest reports a skip) says why a
check does not apply.

=====================  ==============================================================  ========
check                  what must hold                                                  variants
=====================  ==============================================================  ========
info                   the spec round-trips, ``info`` is complete and consistent, each  --
                       declared expected failure names a check (no partner)
shapes                 surrogate ``[R]``; gradients shaped like θ, in its dtype and on  dtype,
                       its device, finite (at the problem's θ)                          device
finite_gradients       finite gradients at extreme logits (θ moved by ±50)              float32
determinism            the same generator seed gives the same estimate, bit for bit    --
objective_evaluations  f sees ``objective_evaluations(dist, S)`` samples in all         --
independence           replicate 0's surrogate does not depend on other replicates' θ  --
batched_loop           one sample per estimate: the batched pass equals a loop          --
global_rng             torch's, numpy's and Python's global generators are untouched   --
unbiased               when ``info.unbiased``: a test of "no bias" at false-alarm       --
                       rate ``ALPHA`` (statistical, 20,000 replicates)
=====================  ==============================================================  ========

Variants: dtype ``float32`` and ``float64``; device ``cpu`` and ``cuda`` (skipped, saying why,
where no CUDA device is present). ``finite_gradients`` runs in float32 only: what overflows or
underflows in float64 at these logits does so in float32 first. An estimator declares a check it is known to fail in
``info.expected_failures`` (``ExpectedFailure(check=..., reason=..., families=...)``); the
command line reports it as XFAIL, pytest as a strict xfail (:func:`pytest_params`), and a
declared failure that does not happen is itself a failure.

Statistical policy (as ``tests/statistical.py``): the unbiasedness check runs with a fixed seed
and rejects at a stated false-alarm rate ``ALPHA = 1e-4`` per check (``bias_pvalue`` of
``harness.measure``: a test per coordinate, Bonferroni-combined); over the 30 or
so partners one spec meets, a correct estimator fails any of them with probability below 0.3%.

Example, a plug-in's pytest suite (``my-estimator`` registered through an entry point)::

    import pytest
    from harness.checks import cases, pytest_params

    @pytest.mark.parametrize("case", pytest_params(cases("my-estimator")))
    def test_estibench_conformance(case):
        case.run()

One check, one pair:

    >>> from harness.checks import check_shapes
    >>> check_shapes("reinforce", "bernoulli-toy:dim=2", dtype="float32")  # None: it holds
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import random
import time
import unittest
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from estimators import ESTIMATORS, FAMILIES, Estimator, family_of
from estimators.errors import SpecError, UserError
from estimators.registry import split_spec
from harness.compat import incompatibility
from harness.examples import ESTIMATOR_EXAMPLES, PROBLEM_EXAMPLES
from harness.measure import measure, reference_estimator, replicated, resolve_dtype
from harness.progress import duration, progress
from problems import PROBLEMS, Problem

ALPHA = 1e-4
"""Per-check false-alarm rate of the unbiasedness check: the suite's (``tests/statistical.py``)."""
UNBIASED_REPLICATES = 20_000
UNBIASED_SEED = 2024
EXTREME_LOGIT = 50.0
"""How far ``finite_gradients`` moves each coordinate of θ: a Bernoulli probability of
σ(−50) ≈ 2e-22, past float32's resolution (σ(17) already rounds to 1), and categories e^-100
apart, below float32's smallest normal number, where log(1 − p), or log of a softmax, computed
outside log space gives ±inf or NaN. Every registered pair passes at 50 (at 100 the count
problems' rates leave float32's range)."""
DTYPES = ("float32", "float64")
DEVICES = ("cpu", "cuda")


class CheckFailed(AssertionError):
    """A check found the contract broken; the message says what and why."""


class CheckSkipped(unittest.SkipTest):
    """A check does not apply (incompatible pair, no CUDA device, a biased estimator's
    unbiasedness); pytest reports it as skipped, with the message as the reason."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def _pair(estimator: str | Estimator, problem: str | Problem) -> tuple[Estimator, Problem]:
    """Build both (specs or instances); an incompatible pair is a skip with the reason."""
    built_estimator, built_problem = ESTIMATORS.make(estimator), PROBLEMS.make(problem)
    reason = incompatibility(built_problem, built_estimator)
    if reason is not None:
        raise CheckSkipped(reason)
    return built_estimator, built_problem


def _device(device: str) -> torch.device:
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        why = "torch was built without CUDA" if torch.version.cuda is None else "none is visible"
        raise CheckSkipped(f"needs a CUDA device; none is available on this machine ({why})")
    return resolved


def _replicas(problem: Problem, replicates: int, device: str | torch.device,
              dtype: torch.dtype, parameters: Sequence[Tensor] | None = None
              ) -> tuple[Problem, list[Tensor]]:
    """The problem on ``device`` in ``dtype`` with θ (or ``parameters``) repeated along a new
    leading dimension ``[R, *θ.shape]``, and those leaves (``measure.replicated``)."""
    work = problem.to(device, dtype)
    if parameters is not None:
        work = work.with_parameters([p.detach().to(device, dtype) for p in parameters])
    return replicated(work, replicates)


def _gradients(loss: Tensor, theta: list[Tensor]) -> tuple[Tensor, ...]:
    """∂ loss.sum() / ∂θ; a θ the surrogate does not depend on is a failure, not a traceback."""
    grads = torch.autograd.grad(loss.sum(), theta, allow_unused=True)
    for index, grad in enumerate(grads):
        _require(grad is not None, f"the surrogate does not depend on parameter tensor {index} "
                 "of the problem: its gradient would be missing, not an estimate")
    return grads


def _samples(estimator: Estimator, least: int) -> int:
    return max(least, estimator.min_samples())


# -- the checks -------------------------------------------------------------------------------


def check_info(spec: str, *, kind: str | None = None) -> None:
    """The spec round-trips, ``info`` is complete, and each declared expected failure names a
    check; for a problem, its distribution is of the family it declares."""
    registry = _registry(spec, kind)
    entry = registry.make(spec)
    info = entry.info
    _require(registry.make(entry.spec).spec == entry.spec,
             f"the canonical spec {entry.spec!r} does not build the same spec again")
    _require(bool(info.description), f"{info.name} has no description (info.description)")
    for option in info.options:
        _require(bool(option.doc), f"option {option.name!r} of {info.name} has no doc")
    try:
        json.dumps(entry.config())
    except (TypeError, ValueError) as error:
        raise CheckFailed(f"config() of {entry.spec} is not JSON-serialisable: {error}") from None
    if registry is ESTIMATORS:
        unknown = sorted(set(info.families) - set(FAMILIES))
        _require(not unknown, f"info.families names unknown families {unknown}; "
                 f"families: {', '.join(FAMILIES)}")
        for failure in info.expected_failures:
            _require(failure.check in CHECKS, f"expected failure names the check "
                     f"{failure.check!r}, which does not exist; checks: {', '.join(CHECKS)}")
            _require(bool(failure.reason), f"expected failure of {failure.check!r} has no reason")
    else:
        _require(info.family in FAMILIES,
                 f"info.family {info.family!r} is not a family: {', '.join(FAMILIES)}")
        actual = family_of(entry.distribution())
        _require(actual == info.family, f"the distribution is of the {actual} family, and info "
                 f"declares {info.family}")
        for index, theta in enumerate(entry.parameters()):
            _require(theta.is_leaf and theta.requires_grad and theta.is_floating_point(),
                     f"parameter tensor {index} must be a floating leaf with requires_grad=True")


def check_shapes(estimator: str | Estimator, problem: str | Problem, *,
                 dtype: str = "float64", device: str = "cpu") -> None:
    """Surrogate ``[R]`` in ``dtype`` on ``device``; gradients shaped, typed and placed like θ,
    and finite, at the problem's θ (R = 7 replicates)."""
    built, task = _pair(estimator, problem)
    where, kind = _device(device), resolve_dtype(dtype)
    work, theta = _replicas(task, 7, where, kind)
    loss = built.surrogate(work.distribution(), work.objective,
                           num_samples=_samples(built, 3),
                           generator=torch.Generator(where).manual_seed(0))
    _require(loss.shape == (7,), f"the surrogate has shape {tuple(loss.shape)}; expected (7,): "
             "one value per element of the distribution's batch (7 replicates)")
    _require(loss.dtype == kind, f"the surrogate is {loss.dtype}; expected {kind}, the dtype of "
             "the parameters")
    _require(loss.device.type == where.type, f"the surrogate is on {loss.device}; expected "
             f"{where}, the parameters' device")
    for index, (grad, param) in enumerate(zip(_gradients(loss, theta), theta)):
        _require(grad.shape == param.shape, f"the gradient of parameter tensor {index} has shape "
                 f"{tuple(grad.shape)}; expected {tuple(param.shape)}")
        _require(grad.dtype == kind and grad.device.type == where.type,
                 f"the gradient of parameter tensor {index} is {grad.dtype} on {grad.device}; "
                 f"expected {kind} on {where}")
        _require(bool(torch.isfinite(grad).all()), f"the gradient of parameter tensor {index} "
                 f"has {_nonfinite(grad)} at the problem's θ")


def _nonfinite(grad: Tensor) -> str:
    bad = ~torch.isfinite(grad)
    return f"{int(bad.sum())} non-finite entries (NaN or ±inf) of {grad.numel()}"


def extreme_parameters(problem: Problem, magnitude: float = EXTREME_LOGIT) -> list[Tensor]:
    """θ moved by ``magnitude`` per coordinate, alternately up and down (θ_i ± 50): saturated
    probabilities, categories and scores e^-100 apart.

    Where the support is unbounded above (counts), each coordinate moves the way that shrinks
    the mean (a log-rate by −50, a Geometric's logit by +50): the other way has nothing to
    saturate, only counts of e^50 that no sampler should be asked to draw.

    Example:
        >>> from problems import PROBLEMS
        >>> [t.tolist() for t in extreme_parameters(PROBLEMS.make("bernoulli-toy:dim=3"))]
        [[50.0, -50.0, 50.0]]
        >>> [t.tolist() for t in extreme_parameters(PROBLEMS.make("geometric-quadratic:dim=2"))]
        [[50.0, 50.0]]
    """
    theta = [p.detach().double() for p in problem.parameters()]
    signs = []
    for p in theta:
        sign = torch.ones(p.numel(), dtype=p.dtype)
        sign[1::2] = -1
        signs.append(sign.reshape(p.shape))
    if _unbounded_above(problem.distribution()):
        leaves = [p.clone().requires_grad_(True) for p in theta]
        mean = problem.to("cpu", torch.float64).with_parameters(leaves).distribution().mean
        grads = torch.autograd.grad(mean.sum(), leaves, allow_unused=True)
        signs = [-torch.ones_like(p) if g is None else torch.where(g > 0, -1.0, 1.0)
                 for p, g in zip(theta, grads)]
    return [p + magnitude * s for p, s in zip(theta, signs)]


def _unbounded_above(dist) -> bool:
    constraint = dist.support
    while hasattr(constraint, "base_constraint"):
        constraint = constraint.base_constraint
    return hasattr(constraint, "lower_bound") and not hasattr(constraint, "upper_bound")


def check_finite_gradients(estimator: str | Estimator, problem: str | Problem, *,
                           dtype: str = "float32") -> None:
    """Finite surrogate and gradients at extreme logits (:func:`extreme_parameters`), on the
    CPU (R = 4 replicates)."""
    built, task = _pair(estimator, problem)
    kind = resolve_dtype(dtype)
    work, theta = _replicas(task, 4, "cpu", kind, extreme_parameters(task))
    loss = built.surrogate(work.distribution(), work.objective,
                           num_samples=_samples(built, 3),
                           generator=torch.Generator().manual_seed(1))
    _require(bool(torch.isfinite(loss).all()),
             f"the surrogate has {_nonfinite(loss)} at logits moved by ±{EXTREME_LOGIT:g}")
    for index, grad in enumerate(_gradients(loss, theta)):
        _require(bool(torch.isfinite(grad).all()), f"the gradient of parameter tensor {index} "
                 f"has {_nonfinite(grad)} at logits moved by ±{EXTREME_LOGIT:g}")


def check_determinism(estimator: str | Estimator, problem: str | Problem) -> None:
    """Two estimates from generators seeded alike are equal, bit for bit (float64, R = 5)."""
    built, task = _pair(estimator, problem)
    results = []
    for _ in range(2):
        work, theta = _replicas(task, 5, "cpu", torch.float64)
        loss = built.surrogate(work.distribution(), work.objective,
                               num_samples=_samples(built, 2),
                               generator=torch.Generator().manual_seed(123))
        results.append((loss.detach(), _gradients(loss, theta)))
    try:
        torch.testing.assert_close(results[0], results[1], rtol=0, atol=0)
    except AssertionError as error:
        raise CheckFailed("two estimates from generators with the same seed differ (randomness "
                          "that does not come from the generator argument?): "
                          + _first_line(error)) from None


def check_objective_evaluations(estimator: str | Estimator, problem: str | Problem) -> None:
    """f sees, summed over its calls, ``objective_evaluations(dist, S)`` samples (the record's
    cost, so that estimators compare at equal cost)."""
    built, task = _pair(estimator, problem)
    work, _ = _replicas(task, 3, "cpu", torch.float64)
    seen: list[int] = []

    def counted(z: Tensor) -> Tensor:
        seen.append(z.shape[0])
        return work.objective(z)

    num_samples = _samples(built, 3)
    dist = work.distribution()
    built.surrogate(dist, counted, num_samples=num_samples,
                    generator=torch.Generator().manual_seed(5))
    declared = built.objective_evaluations(dist, num_samples)
    _require(sum(seen) == declared, f"f was evaluated on {sum(seen)} samples "
             f"({' + '.join(map(str, seen)) or 'no calls'}) for num_samples={num_samples}; "
             f"objective_evaluations says {declared}")


def check_independence(estimator: str | Estimator, problem: str | Problem) -> None:
    """Replicate 0's surrogate does not depend on the other replicates' parameters (float64,
    R = 4): the batch dimensions are independent problems."""
    built, task = _pair(estimator, problem)
    work, theta = _replicas(task, 4, "cpu", torch.float64)
    loss = built.surrogate(work.distribution(), work.objective,
                           num_samples=_samples(built, 2),
                           generator=torch.Generator().manual_seed(7))
    _require(loss.dim() >= 1 and loss.shape[0] == 4,
             f"the surrogate has shape {tuple(loss.shape)}; expected (4,), one per replicate")
    grads = torch.autograd.grad(loss[0], theta, allow_unused=True)
    for index, grad in enumerate(grads):
        if grad is not None:
            leaked = int(torch.count_nonzero(grad[1:]))
            _require(leaked == 0, f"replicate 0's surrogate depends on the other replicates' "
                     f"parameter tensor {index} ({leaked} nonzero entries of its gradient): "
                     "estimates mix across the batch")


def check_batched_loop(estimator: str | Estimator, problem: str | Problem) -> None:
    """With one sample per estimate, the batched pass over R = 6 replicates equals a loop of 6
    single estimates drawing from one generator, in order (float64)."""
    built, task = _pair(estimator, problem)
    if built.min_samples() > 1:
        raise CheckSkipped("needs several samples per estimate: covered by independence")
    work, theta = _replicas(task, 6, "cpu", torch.float64)
    loss = built.surrogate(work.distribution(), work.objective, num_samples=1,
                           generator=torch.Generator().manual_seed(3))
    batched = _gradients(loss, theta)[0]
    single = task.to("cpu", torch.float64)
    generator = torch.Generator().manual_seed(3)
    loop = []
    for _ in range(6):
        value = built.surrogate(single.distribution(), single.objective, num_samples=1,
                                generator=generator)
        loop.append(torch.autograd.grad(value, single.parameters())[0])
    try:
        torch.testing.assert_close(batched, torch.stack(loop), rtol=1e-12, atol=1e-15)
    except AssertionError as error:
        raise CheckFailed("the batched pass differs from a loop of single estimates on the "
                          "same generator: " + _first_line(error)) from None


def _global_states() -> tuple:
    """The state of every global generator an estimator could draw from on the CPU."""
    return (torch.get_rng_state(), np.random.get_state(), random.getstate())


def _moved(before: tuple, after: tuple) -> list[str]:
    names = []
    if not torch.equal(before[0], after[0]):
        names.append("torch's global generator (torch.rand/randn/bernoulli/... without "
                     "generator=, or Distribution.sample)")
    numpy_before, numpy_after = before[1], after[1]
    if not (numpy_before[0] == numpy_after[0] and np.array_equal(numpy_before[1], numpy_after[1])
            and numpy_before[2:] == numpy_after[2:]):
        names.append("numpy's global generator (np.random.*)")
    if before[2] != after[2]:
        names.append("Python's global generator (random.*)")
    return names


def check_global_rng(estimator: str | Estimator, problem: str | Problem) -> None:
    """The estimate (surrogate and backward pass) leaves torch's, numpy's and Python's global
    generators as they were: all randomness comes from the ``generator`` argument. A draw by
    the problem's objective is told apart from one by the estimator."""
    built, task = _pair(estimator, problem)
    work, theta = _replicas(task, 3, "cpu", torch.float64)
    last = [_global_states()]
    by_estimator: list[str] = []
    by_objective: list[str] = []

    def watched(z: Tensor) -> Tensor:
        entry = _global_states()
        by_estimator.extend(_moved(last[0], entry))
        value = work.objective(z)
        last[0] = _global_states()
        by_objective.extend(_moved(entry, last[0]))
        return value

    loss = built.surrogate(work.distribution(), watched, num_samples=_samples(built, 2),
                           generator=torch.Generator().manual_seed(11))
    torch.autograd.grad(loss.sum(), theta, allow_unused=True)
    by_estimator.extend(_moved(last[0], _global_states()))
    _require(not by_estimator, "the estimator draws from "
             + " and ".join(dict.fromkeys(by_estimator))
             + "; all randomness must come from the generator argument")
    _require(not by_objective, "the problem's objective draws from "
             + " and ".join(dict.fromkeys(by_objective))
             + "; it must be a deterministic function of z")


def check_unbiased(estimator: str | Estimator, problem: str | Problem, *,
                   alpha: float = ALPHA, replicates: int = UNBIASED_REPLICATES,
                   seed: int = UNBIASED_SEED, show_progress: bool = False) -> None:
    """When ``info.unbiased``: ``measure``'s test of "no bias" (per coordinate, Bonferroni-
    combined, against the exact gradient, or an unbiased reference with its standard error) at a fixed
    seed does not reject at level ``alpha`` (statistical; see the module's policy)."""
    built, task = _pair(estimator, problem)
    if not built.info.unbiased:
        raise CheckSkipped(f"{built.info.name} does not claim to be unbiased")
    if not task.info.exact:
        try:
            reference_estimator(task)
        except UserError as error:
            raise CheckSkipped(str(error)) from None
    record = measure(task, built, num_samples=_samples(built, 2), replicates=replicates,
                     seed=seed, timing=False, memory_profile=False, show_progress=show_progress)
    pvalue = record["bias_pvalue"]
    if pvalue is None or not pvalue > alpha:
        bias, stderr = record["bias"], record["bias_stderr"]
        worst = max(range(len(bias)), key=lambda i: abs(bias[i]) / stderr[i] if stderr[i] > 0
                    else float("inf") if bias[i] else 0.0)
        raise CheckFailed(
            f"info says unbiased, and the test of no bias rejects: p = {pvalue:.3g} <= "
            f"alpha = {alpha:g} ({replicates} estimates of {record['num_samples']} samples, "
            f"seed {seed}; coordinate {worst}: bias {bias[worst]:.4g} ± "
            f"{stderr[worst]:.2g} s.e., true gradient "
            f"{record['true_gradient'][worst]:.4g} ({record['true_gradient_source']}))")


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return " ".join(lines[:3])


CHECKS: dict[str, Callable[..., None]] = {
    "info": check_info,
    "shapes": check_shapes,
    "finite_gradients": check_finite_gradients,
    "determinism": check_determinism,
    "objective_evaluations": check_objective_evaluations,
    "independence": check_independence,
    "batched_loop": check_batched_loop,
    "global_rng": check_global_rng,
    "unbiased": check_unbiased,
}
"""Every check by name: the names ``ExpectedFailure.check`` and ``--checks`` use."""
STATISTICAL = ("unbiased",)
"""Checks that are statistical tests (a fixed seed, a stated false-alarm rate)."""
VARIANTS: dict[str, list[dict[str, str]]] = {
    "shapes": [{"dtype": d, "device": v} for d in DTYPES for v in DEVICES],
    "finite_gradients": [{"dtype": "float32"}],  # float64's range and precision contain it
}
"""The keyword arguments each check runs with, one case each (others run once)."""


# -- cases: what to run, for pytest and the command line ----------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    """One check of one pair (or, for ``info``, of one entry), with its variant.

    ``estimator`` and ``problem`` are spec strings; ``info`` has only the one it checks.
    """

    check: str
    estimator: str = ""
    problem: str = ""
    variant: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        """The check with its variant: ``shapes[float32,cpu]``."""
        values = ",".join(value for _, value in self.variant)
        return f"{self.check}[{values}]" if values else self.check

    @property
    def pair(self) -> str:
        """``problem|estimator`` (only the one spec for ``info``)."""
        return "|".join(spec for spec in (self.problem, self.estimator) if spec)

    @property
    def id(self) -> str:
        """``problem|estimator``, then the variant's values: the conformance suite's ids."""
        return "-".join([self.pair, *(value for _, value in self.variant)])

    def run(self) -> None:
        """Run the check: ``None`` when it holds, else :class:`CheckFailed` (or the error the
        estimator raised); :class:`CheckSkipped` when it does not apply."""
        if self.check == "info":
            spec = self.estimator or self.problem
            check_info(spec, kind="estimator" if self.estimator else "problem")
            return
        if self.check == "partners":
            _no_partners(self)  # raises: fails, or skips with the reason it cannot run
        CHECKS[self.check](self.estimator, self.problem, **dict(self.variant))

    def expected_failure(self) -> str | None:
        """The reason, when the estimator's info declares this check failing on this family."""
        if not (self.estimator and self.problem):
            return None
        estimator = ESTIMATORS.make(self.estimator)
        family = PROBLEMS.make(self.problem).info.family
        for failure in estimator.info.expected_failures:
            if failure.check == self.check and (not failure.families or family in failure.families):
                return failure.reason
        return None


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What running a case gave: ``PASS``, ``FAIL``, ``SKIP`` or ``XFAIL`` (a declared expected
    failure that happened), with the reason (empty for PASS) and the time it took."""

    case: Case
    status: str
    reason: str = ""
    seconds: float = 0.0


def outcome(case: Case) -> Outcome:
    """Run ``case`` and classify it, honouring declared expected failures strictly: a check
    that fails as declared is XFAIL; one declared to fail that passes is a FAIL. An error the
    check raises (the estimator's traceback) is a FAIL with its type and message."""
    start = time.monotonic()
    expected = None
    try:
        expected = case.expected_failure()
        case.run()
    except CheckSkipped as skip:
        return Outcome(case, "SKIP", _one_line(str(skip)), time.monotonic() - start)
    except CheckFailed as failure:
        if expected is not None:
            return Outcome(case, "XFAIL", _one_line(expected), time.monotonic() - start)
        return Outcome(case, "FAIL", _one_line(str(failure)), time.monotonic() - start)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as error:  # the estimator's or the problem's bug: the check reports it
        return Outcome(case, "FAIL", _one_line(f"raised {type(error).__name__}: {error}"),
                       time.monotonic() - start)
    if expected is not None:
        return Outcome(case, "FAIL", _one_line(
            f"declared an expected failure ({expected}) and passed: remove it from "
            "info.expected_failures"), time.monotonic() - start)
    return Outcome(case, "PASS", "", time.monotonic() - start)


def _one_line(text: str, limit: int = 600) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _registry(spec: str, kind: str | None = None):
    """The registry that holds ``spec``'s name (``kind``: "estimator" or "problem" to choose);
    an unknown name is one sentence with the closest names of both registries."""
    name, _ = split_spec(spec)
    if kind is not None:
        if kind not in ("estimator", "problem"):
            raise UserError(f"unknown kind {kind!r}: expected estimator or problem")
        registry = ESTIMATORS if kind == "estimator" else PROBLEMS
        registry.get(name)  # an unknown name: the registry's message
        return registry
    holders = [registry for registry in (ESTIMATORS, PROBLEMS) if name in registry.names()]
    if len(holders) == 2:
        raise UserError(f"{name!r} names both an estimator and a problem; choose one with "
                        "--kind estimator or --kind problem")
    if not holders:
        known = ESTIMATORS.names() + PROBLEMS.names()
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise SpecError(f"unknown estimator or problem {name!r}{hint} "
                        "(estibench list shows every registered name)")
    return holders[0]


def partner_specs(kind: str) -> list[str]:
    """Every registered entry of ``kind`` ("estimator" or "problem") as partner specs: its
    examples (``harness.examples``), or its default spec where it has none (a plug-in's)."""
    registry, examples = ((ESTIMATORS, ESTIMATOR_EXAMPLES) if kind == "estimator"
                          else (PROBLEMS, PROBLEM_EXAMPLES))
    return [spec for name in registry.names() for spec in examples.get(name, [name])]


@dataclasses.dataclass(frozen=True)
class Plan:
    """What :func:`cases` decided for one spec: the cases, and the partners it left out."""

    spec: str
    kind: str
    cases: list[Case]
    compatible: list[str]
    incompatible: list[tuple[str, str]]  # (partner spec, reason)


def plan(spec: str, *, kind: str | None = None, partners: Sequence[str] | None = None,
         checks: Sequence[str] | None = None) -> Plan:
    """The cases for one estimator or problem spec against every compatible registered
    partner (or ``partners``), for the named ``checks`` (default all). A user's mistake (an
    unknown name, check or partner) raises ``UserError``."""
    registry = _registry(spec, kind)
    entry = registry.make(spec)
    kind = "estimator" if registry is ESTIMATORS else "problem"
    other = "problem" if kind == "estimator" else "estimator"
    other_registry = PROBLEMS if kind == "estimator" else ESTIMATORS
    names = list(CHECKS) if checks is None else list(checks)
    unknown = [name for name in names if name not in CHECKS]
    if unknown:
        raise UserError(f"unknown check {unknown[0]!r}; checks: {', '.join(CHECKS)}")
    chosen = partner_specs(other) if partners is None else list(partners)
    compatible, incompatible = [], []
    for partner_spec in chosen:
        try:
            partner = other_registry.make(partner_spec)
        except UserError as error:
            if partners is not None:
                raise
            incompatible.append((partner_spec, f"cannot be built here: {error}"))
            continue
        pair = (partner, entry) if kind == "estimator" else (entry, partner)
        reason = incompatibility(*pair)
        if reason is None:
            compatible.append(partner_spec)
        elif partners is not None:
            raise UserError(f"{other} {partner_spec!r} cannot meet {kind} {entry.spec!r}: {reason}")
        else:
            incompatible.append((partner_spec, reason))
    found: list[Case] = []
    if "info" in names:
        found.append(Case("info", **{kind: entry.spec}))
    paired = [name for name in names if name != "info"]
    if paired and not compatible:
        found.append(Case("partners", **{kind: entry.spec}))
    ordered = ([n for n in paired if n not in STATISTICAL], [n for n in paired if n in STATISTICAL])
    for group in ordered:  # the quick checks of every partner first, then the statistical ones
        for partner_spec in compatible:
            for name in group:
                for variant in VARIANTS.get(name, [{}]):
                    pair = ({"estimator": entry.spec, "problem": partner_spec} if kind == "estimator"
                            else {"estimator": partner_spec, "problem": entry.spec})
                    found.append(Case(name, **pair, variant=tuple(variant.items())))
    return Plan(entry.spec, kind, found, compatible, incompatible)


def cases(spec: str, *, kind: str | None = None, partners: Sequence[str] | None = None,
          checks: Sequence[str] | None = None) -> list[Case]:
    """Every check of one estimator or problem spec against every compatible registered
    partner: the list to parametrise a plug-in's pytest suite with (:func:`pytest_params`).

    Example:
        >>> found = cases("reinforce", partners=["bernoulli-toy"], checks=["shapes", "unbiased"])
        >>> [case.label for case in found]  # doctest: +NORMALIZE_WHITESPACE
        ['shapes[float32,cpu]', 'shapes[float32,cuda]', 'shapes[float64,cpu]',
         'shapes[float64,cuda]', 'unbiased']
    """
    return plan(spec, kind=kind, partners=partners, checks=checks).cases


def suite_cases(check: str) -> list[Case]:
    """One check of every compatible pair of example specs (``harness.examples``): what
    ``tests/conformance`` runs, with its ids (``problem|estimator``)."""
    if check not in CHECKS or check == "info":
        raise ValueError(f"suite_cases takes a paired check: one of {', '.join(CHECKS)} but info")
    problems = [PROBLEMS.make(spec) for spec in partner_specs("problem")]
    estimators = [ESTIMATORS.make(spec) for spec in partner_specs("estimator")]
    found = []
    for problem_spec, problem in zip(partner_specs("problem"), problems):
        for estimator_spec, estimator in zip(partner_specs("estimator"), estimators):
            if incompatibility(problem, estimator) is None:
                for variant in VARIANTS.get(check, [{}]):
                    found.append(Case(check, estimator_spec, problem_spec, tuple(variant.items())))
    return found


def pytest_params(found: Sequence[Case]) -> list:
    """``pytest.param`` per case with a readable id, ``check[variant]:problem|estimator``
    (``problem|estimator-variant`` where every case is of one check, as in the conformance
    suite), and a strict ``xfail`` where the estimator declares the failure."""
    import pytest

    mixed = len({case.check for case in found}) > 1
    params = []
    for case in found:
        reason = case.expected_failure()
        marks = [] if reason is None else [pytest.mark.xfail(reason=reason, strict=True,
                                                             raises=CheckFailed)]
        ident = f"{case.label}:{case.pair}" if mixed else case.id
        params.append(pytest.param(case, id=ident, marks=marks))
    return params


def _no_partners(case: Case) -> None:
    """The case :func:`plan` adds for an entry that no registered partner can meet."""
    kind = "estimator" if case.estimator else "problem"
    spec = case.estimator or case.problem
    entry = (ESTIMATORS if case.estimator else PROBLEMS).make(spec)
    missing = entry.unavailable() if isinstance(entry, Estimator) else None
    if missing is not None:
        raise CheckSkipped(missing)
    other = "problem" if kind == "estimator" else "estimator"
    raise CheckFailed(f"no registered {other} is compatible with {kind} {spec!r}: the checks "
                      "would never exercise it (see info: families, needs_relaxable, ...)")


# -- the command line ---------------------------------------------------------------------------


def run_checks(spec: str, *, kind: str | None = None, partners: Sequence[str] | None = None,
               checks: Sequence[str] | None = None, write: Callable[[str], None] = print,
               show_progress: bool = True) -> int:
    """``estibench check SPEC``: run :func:`plan`'s cases, writing one line per case
    (``STATUS  check[variant]  partner: reason``) and a summary; return the exit status, 1
    when a check failed, else 0."""
    decided = plan(spec, kind=kind, partners=partners, checks=checks)
    other = "problem" if decided.kind == "estimator" else "estimator"
    met = len(decided.compatible)
    write(f"checking {decided.kind} {decided.spec}: {len(decided.cases)} checks against "
          f"{met} compatible {other}{'' if met == 1 else 's'}"
          + (f" ({len(decided.incompatible)} incompatible ones not run)"
             if decided.incompatible else ""))
    width = max((len(case.label) for case in decided.cases), default=0)
    counts = dict.fromkeys(("PASS", "FAIL", "SKIP", "XFAIL"), 0)
    failures: list[str] = []
    start = time.monotonic()
    for case in progress(decided.cases, description=f"checking {decided.spec}", unit="checks",
                         enabled=show_progress, status=lambda: f"{counts['FAIL']} failed"):
        result = outcome(case)
        counts[result.status] += 1
        partner = (case.problem if decided.kind == "estimator" else case.estimator) or "-"
        line = f"{result.status:<5}  {case.label:<{width}}  {partner}"
        if result.reason:
            line += f": {result.reason}"
        write(line)
        if result.status == "FAIL":
            failures.append(line)
    xfails = f"expected failure{'' if counts['XFAIL'] == 1 else 's'}"
    summary = ", ".join(f"{n} {word}" for word, n in (("passed", counts["PASS"]),
                        ("failed", counts["FAIL"]), ("skipped", counts["SKIP"]),
                        (xfails, counts["XFAIL"])) if n or word == "failed")
    write(f"{decided.spec}: {summary} in {duration(time.monotonic() - start)}")
    if failures:
        write("failures:")
        for line in failures:
            write("  " + line)
    return 1 if failures else 0
