"""Measuring one cell: R independent gradient estimates at the same θ, and what they say.

``measure`` replicates the problem's parameters R times along a new leading dimension
(``[R, *θ.shape]``), builds one batched distribution, calls the estimator's surrogate once and
differentiates the sum of its R outputs once: since replicate r's surrogate depends only on
replicate r's parameters, row r of the gradient is the estimate ĝ_r. There is no Python loop
over replicates (large R is split into a few chunks to bound memory, drawn from the same
generator, so chunking never changes the numbers).

The true gradient is computed in float64 from ``expected_objective``; problems without one get
an unbiased reference: the mean of many estimates of an unbiased estimator, with its standard
error, drawn with a generator independent of the estimates'.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
from torch import Tensor

from estimators import ESTIMATORS, Estimator
from estimators.errors import IncompatibleError, UserError
from estimators.registry import format_spec
from harness import budget as budget_module
from harness import memory, provenance
from harness.compat import incompatibility
from harness.progress import progress
from harness.adapt import adapt
from harness.record import FIELDS
from harness.stats import summarise
from problems import PROBLEMS, Problem

DTYPES = {"float32": torch.float32, "float64": torch.float64}
REFERENCE_ESTIMATOR = "reinforce:baseline=loo"


def resolve_device(device: str | torch.device) -> torch.device:
    """A torch device that exists here, or a ``UserError`` that says why not."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"unknown device {device!r}: expected cpu, cuda or cuda:N") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(
                f"device {device!r} requested, but CUDA is not available "
                f"(torch {torch.__version__})"
            )
        index = resolved.index or 0
        if index >= torch.cuda.device_count():
            raise UserError(
                f"device {device!r} requested, but only {torch.cuda.device_count()} CUDA "
                "device(s) exist"
            )
        return torch.device("cuda", index)
    if resolved.type != "cpu":
        raise UserError(f"unsupported device {device!r}: expected cpu, cuda or cuda:N")
    return resolved


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if dtype in DTYPES:
        return DTYPES[dtype]
    raise UserError(f"unsupported dtype {dtype!r}: expected {' or '.join(DTYPES)}")


def _check_count(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _flatten(tensors: Sequence[Tensor | None], like: Sequence[Tensor], leading: int) -> Tensor:
    """Concatenate per-parameter gradients ``[leading, *θ_i.shape]`` into ``[leading, D]``."""
    return torch.cat(
        [
            (g if g is not None else torch.zeros_like(p)).reshape(leading, -1)
            for g, p in zip(tensors, like)
        ],
        dim=1,
    )


PASS_BYTES = 2**28  # most bytes one batched pass creates (256 MiB): larger passes are no faster
STATISTICS_COPIES = 4  # float64 copies of the [R, D] estimates that summarise holds at once


def replicate_bytes(problem: Problem, estimator: Estimator, num_samples: int) -> int:
    """Estimated bytes that one replicate adds to a batched pass (forward and backward): the
    estimator's ``pass_elements`` and the problem's ``sample_elements`` for each sample the
    objective sees, at the problem's dtype (index tensors are counted in the estimator's
    constant)."""
    dist = problem.distribution()
    numbers = estimator.pass_elements(dist, num_samples)
    numbers += estimator.objective_evaluations(dist, num_samples) * (problem.sample_elements() or 0)
    itemsize = torch.empty((), dtype=problem.parameters()[0].dtype).element_size()
    return int(numbers) * itemsize


def replicates_per_pass(
    problem: Problem, estimator: Estimator, num_samples: int, *,
    budget: int, budget_source: str = "the memory budget", most: int = 65536,
) -> int:
    """How many replicates one batched pass draws: as many as fit in min(budget, PASS_BYTES),
    at most ``most``; ``MemoryBudgetError`` when not even one fits in ``budget``."""
    per_replicate = replicate_bytes(problem, estimator, num_samples)
    budget_module.require(per_replicate, f"{estimator.spec} on {problem.spec} with "
                          f"num_samples={num_samples}", "for one estimate", budget,
                          budget_source, "lower num_samples")
    return max(1, min(most, min(budget, PASS_BYTES) // max(per_replicate, 1)))


def batched_estimates(problem: Problem, estimator: Estimator, **options) -> Tensor:
    """R independent estimates ``[R, D]``: the blocks of ``estimate_chunks`` (same arguments)
    joined."""
    return torch.cat(list(estimate_chunks(problem, estimator, **options)))


def estimate_chunks(
    problem: Problem,
    estimator: Estimator,
    *,
    num_samples: int,
    replicates: int,
    generator: torch.Generator,
    chunk_size: int = 65536,
    show_progress: bool = False,
    description: str = "replicates",
    memory_budget: int | None = None,
) -> Iterator[Tensor]:
    """R independent estimates in ``ceil(R / per_pass)`` batched passes, one ``[n, D]`` block
    per pass (``streamed_moments`` reduces them without holding all R rows).

    ``per_pass`` is ``chunk_size`` or fewer: as many replicates as fit in the memory budget
    (``memory_budget`` bytes, else ``harness.budget``'s default) and in ``PASS_BYTES``, by the
    estimate of ``replicate_bytes``. A cell whose one replicate does not fit raises
    ``MemoryBudgetError`` before anything is drawn.
    """
    budget, source = budget_module.resolve(problem.parameters()[0].device, memory_budget)
    chunk_size = replicates_per_pass(problem, estimator, num_samples, budget=budget,
                                     budget_source=source, most=chunk_size)
    bounds = range(0, replicates, chunk_size)
    for start in progress(bounds, description=description, enabled=show_progress):
        n = min(chunk_size, replicates - start)
        work, theta = replicated(problem, n)
        surrogate = estimator.surrogate(
            work.distribution(),
            work.objective,
            num_samples=num_samples,
            generator=generator,
        )
        if surrogate.shape != (n,):
            raise RuntimeError(
                f"{estimator.spec} returned a surrogate of shape {tuple(surrogate.shape)} for "
                f"{n} replicates; expected ({n},)"
            )
        grads = torch.autograd.grad(surrogate.sum(), theta, allow_unused=True)
        yield _flatten(grads, theta, n).detach()


def replicated(problem: Problem, n: int) -> tuple[Problem, list[Tensor]]:
    """(the problem with its θ repeated along a new leading dimension of ``n`` independent
    copies, those copies): one surrogate call on it gives ``n`` estimates."""
    theta = [p.detach().expand(n, *p.shape).clone().requires_grad_(True)
             for p in problem.parameters()]
    return problem.with_parameters(theta), theta


def streamed_moments(chunks: Iterable[Tensor]) -> tuple[Tensor, Tensor, int]:
    """(mean [D], variance [D] with ddof 1, R) of the rows of ``chunks``, in float64, one
    block at a time (Chan et al. 1979's pairwise update of mean and sum of squares), so R rows
    of D numbers never have to be held at once."""
    count, mean, squares = 0, None, None
    for block in chunks:
        block = block.double()
        n = block.shape[0]
        block_mean = block.mean(0)
        block_squares = ((block - block_mean) ** 2).sum(0)
        if mean is None:
            count, mean, squares = n, block_mean, block_squares
            continue
        delta = block_mean - mean
        total = count + n
        mean = mean + delta * (n / total)
        squares = squares + block_squares + delta**2 * (count * n / total)
        count = total
    return mean, squares / (count - 1), count


def _roundoff(
    problem: Problem, estimator: Estimator, num_samples: int, seed: int,
    device: torch.device, dtype: torch.dtype, memory_budget: int | str | None = None,
) -> Tensor:
    """|ĝ − ĝ_float64| for one estimate with the same noise (noise is drawn in float64)."""
    results = []
    for kind in (dtype, torch.float64):
        generator = torch.Generator(device).manual_seed(derived_seed(seed, "roundoff"))
        results.append(
            batched_estimates(problem.to(device, kind), estimator, num_samples=num_samples,
                              replicates=1, generator=generator,
                              memory_budget=memory_budget)[0].double()
        )
    return (results[0] - results[1]).abs()


def derived_seed(seed: int, purpose: str) -> int:
    """A seed for a second, independent stream (e.g. the reference gradient's)."""
    value = seed
    for char in purpose:
        value = (value * 1_000_003 + ord(char)) % (2**63 - 1)
    return value


@dataclasses.dataclass(frozen=True)
class TrueGradient:
    """The gradient the estimates are compared with: exact, or an unbiased reference."""

    gradient: Tensor  # [D], float64
    stderr: Tensor | None  # [D] for a reference, None when exact
    source: str  # "exact", or "reference:SPEC (replicates=..., num_samples=...)"
    objective_scale: float = 0.0  # |E f| when exact (the scale of its round-off), else 0

    def to_json(self) -> dict:
        return {"gradient": self.gradient.tolist(), "source": self.source,
                "stderr": None if self.stderr is None else self.stderr.tolist(),
                "objective_scale": self.objective_scale}

    @classmethod
    def from_json(cls, data: dict) -> TrueGradient:
        stderr = data.get("stderr")
        return cls(torch.tensor(data["gradient"], dtype=torch.float64),
                   None if stderr is None else torch.tensor(stderr, dtype=torch.float64),
                   data["source"], float(data.get("objective_scale", 0.0)))


def reference_estimator(problem: Problem, spec: str = REFERENCE_ESTIMATOR) -> Estimator:
    """The unbiased estimator that stands in for a missing exact gradient, with every choice it
    makes at θ spelled out in its spec (e.g. ``set_probability=ordered`` on a subset problem
    whose 2^k set probability is too costly), or ``IncompatibleError``."""
    reference = ESTIMATORS.make(spec)
    reason = incompatibility(problem, reference)
    if reason is not None or not reference.info.unbiased:
        raise IncompatibleError(
            f"{problem.spec} has no exact gradient and the reference estimator "
            f"{reference.spec!r} cannot stand in: {reason or 'it is not unbiased'}"
        )
    chosen = {name: value for name, value in reference.diagnostics(problem.distribution()).items()
              if name in reference.options and value != reference.options[name]}
    if chosen:
        reference = ESTIMATORS.make(format_spec(reference.info.name,
                                                {**reference.options, **chosen}))
    return reference


def true_gradient(
    problem: Problem,
    *,
    device: torch.device,
    seed: int,
    reference_estimator_spec: str = REFERENCE_ESTIMATOR,
    reference_replicates: int = 10_000,
    reference_num_samples: int = 16,
    show_progress: bool = False,
    memory_budget: int | str | None = None,
) -> TrueGradient:
    """The exact gradient (float64 autograd of ``expected_objective``) or, where there is
    none, the mean of ``reference_replicates`` estimates of ``reference_num_samples`` samples
    of an unbiased estimator with its standard error, drawn from a stream derived from
    ``seed`` ("reference")."""
    exact_problem = problem.to(device, torch.float64)
    params = exact_problem.parameters()
    try:
        value = exact_problem.expected_objective()
    except NotImplementedError:
        pass
    else:
        grads = torch.autograd.grad(value, params, allow_unused=True)
        return TrueGradient(_flatten(grads, params, 1)[0], None, "exact",
                            float(value.detach().abs()))
    reference = reference_estimator(exact_problem, reference_estimator_spec)
    generator = torch.Generator(device).manual_seed(derived_seed(seed, "reference"))
    mean, variance, _ = streamed_moments(estimate_chunks(
        exact_problem, reference,
        num_samples=reference_num_samples, replicates=reference_replicates, generator=generator,
        show_progress=show_progress, description="reference gradient",
        memory_budget=memory_budget,
    ))
    if not bool(torch.isfinite(mean).all() and torch.isfinite(variance).all()):
        raise UserError(
            f"the reference estimator {reference.spec} gave non-finite estimates on "
            f"{problem.spec}; its gradient cannot stand in for the exact one here"
        )
    stderr = (variance / reference_replicates).sqrt()
    source = (
        f"reference:{reference.spec} (replicates={reference_replicates}, "
        f"num_samples={reference_num_samples}, seed={seed})"
    )
    return TrueGradient(mean, stderr, source)


def _estimator_config(estimator: Estimator, problem: Problem) -> dict:
    """The estimator's settings, plus its diagnostics at θ when it reports any."""
    config = estimator.config()
    diagnostics = estimator.diagnostics(problem.distribution())
    if diagnostics:
        config["diagnostics"] = diagnostics
    return config


def compatible_pair(problem: str | Problem, estimator: str | Estimator
                    ) -> tuple[Problem, Estimator]:
    """Build both from their specs (or take them built); ``IncompatibleError`` if they don't
    go together."""
    problem, estimator = PROBLEMS.make(problem), ESTIMATORS.make(estimator)
    reason = incompatibility(problem, estimator)
    if reason is not None:
        raise IncompatibleError(reason)
    return problem, estimator


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously), so timers see all of it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(
    fn: Callable[[], object],
    device: torch.device,
    *,
    min_repeats: int = 5,
    max_repeats: int = 200,
    budget_s: float = 0.5,
    times_out: list[float] | None = None,
) -> float:
    """Median wall time of ``fn`` (device synchronised), after one warm-up call.

    Repeats at least ``min_repeats`` times and stops at ``max_repeats`` or when ``budget_s``
    seconds have been spent, whichever comes first; ``times_out`` receives every repeat's time.
    """
    fn()
    synchronize(device)
    times: list[float] = []
    spent = 0.0
    while len(times) < min_repeats or (len(times) < max_repeats and spent < budget_s):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        elapsed = time.perf_counter() - start
        times.append(elapsed)
        spent += elapsed
    if times_out is not None:
        times_out.extend(times)
    return statistics.median(times)


def measure(
    problem: str | Problem,
    estimator: str | Estimator,
    num_samples: int = 1,
    replicates: int = 1000,
    seed: int = 0,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float32",
    *,
    timing: bool = True,
    memory_profile: bool = True,
    chunk_size: int = 65536,
    show_progress: bool = False,
    samples: dict | None = None,
    reference_replicates: int = 10_000,
    memory_budget: int | str | None = None,
    reference: TrueGradient | None = None,
    reference_seed: int | None = None,
) -> dict:
    """Measure one (problem, estimator) cell; return the record (see ``harness.record``).

    Args:
        problem, estimator: spec strings or built instances.
        num_samples: samples averaged in one estimate.
        replicates: R >= 2 independent estimates at the same θ.
        seed: seed of the estimates' generator (the problem's own seed is in its spec).
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        dtype: ``float32`` or ``float64`` for the estimates (the true gradient is float64).
        timing, memory_profile: measure time and peak memory of one estimate (else ``None``).
        chunk_size: most replicates drawn in one batched pass.
        memory_budget: bytes (or a size such as ``"4GB"``) that one batched pass may use; by
            default ``$ESTIBENCH_MEMORY_BUDGET`` or half the memory available
            (``harness.budget``). A cell whose one estimate would not fit stops before drawing.
        reference: the true gradient, when already computed (a study computes each problem's
            reference once and hands it to every cell on that problem).
        reference_seed: the seed of a reference gradient's stream (default: ``seed``); it is
            in ``true_gradient_source``, so a study's reference can be drawn again alone.
        samples: a dict to receive what a comparison of two measurements tests with
            (``reports.compare``): ``squared_deviations``, the R values ‖ĝ_r − ḡ‖² whose sum
            over R − 1 is the variance, and ``times``, every timed repeat (s).

    Example:
        >>> record = measure("bernoulli-toy", "reinforce", replicates=100, timing=False,
        ...                  memory_profile=False)
        >>> round(record["true_gradient"][0], 4)
        0.025
    """
    problem, estimator = compatible_pair(problem, estimator)
    _check_count("num_samples", num_samples, 1)
    _check_count("replicates", replicates, 2)
    _check_count("reference_replicates", reference_replicates, 2)
    _check_count("seed", seed, 0)
    if reference_seed is not None:
        _check_count("reference_seed", reference_seed, 0)
    _check_count("chunk_size", chunk_size, 1)
    device = resolve_device(device)
    dtype = resolve_dtype(dtype)

    work = problem.to(device, dtype)
    # Refuse a cell that cannot fit before anything is drawn (the reference is checked too).
    budget, source = budget_module.resolve(device, memory_budget)
    replicates_per_pass(work, estimator, num_samples, budget=budget, budget_source=source)
    dims = sum(p.numel() for p in work.parameters())
    budget_module.require(replicates * dims * 8 * STATISTICS_COPIES,
                          f"keeping {replicates} estimates of {dims} coordinates",
                          "for their statistics", budget, source, "lower --replicates")
    # An estimator that learns: φ adapted at θ from derived seeds, then frozen (harness.adapt).
    estimator = adapt(work, estimator, num_samples=num_samples, seed=seed)
    if reference is None:
        reference = true_gradient(problem, device=device,
                                  seed=seed if reference_seed is None else reference_seed,
                                  reference_replicates=reference_replicates,
                                  show_progress=show_progress, memory_budget=memory_budget)
    true, true_stderr = reference.gradient.to(device), reference.stderr
    source, objective_scale = reference.source, reference.objective_scale
    if true_stderr is not None:
        true_stderr = true_stderr.to(device)
    generator = torch.Generator(device).manual_seed(seed)
    estimates = batched_estimates(
        work, estimator,
        num_samples=num_samples, replicates=replicates, generator=generator,
        chunk_size=chunk_size, show_progress=show_progress, memory_budget=memory_budget,
    )
    bad = int((~torch.isfinite(estimates)).any(1).sum())
    if bad:
        raise UserError(
            f"{estimator.spec} gave non-finite gradient estimates in {bad} of {replicates} "
            f"replicates on {problem.spec} ({dtype}); the settings are numerically unusable"
        )
    record = {
        "problem": problem.spec,
        "estimator": estimator.spec,
        "num_samples": num_samples,
        "objective_evaluations": estimator.objective_evaluations(work.distribution(),
                                                                 num_samples),
        "replicates": replicates,
        "seed": seed,
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "true_gradient": true.tolist(),
        "true_gradient_source": source,
        "true_gradient_stderr": None if true_stderr is None else true_stderr.tolist(),
    }
    roundoff = None if dtype == torch.float64 else (  # summarise calls it at round-off scale
        lambda: _roundoff(problem, estimator, num_samples, seed, device, dtype, memory_budget))
    record.update(
        summarise(estimates, true, true_stderr, eps=torch.finfo(dtype).eps, roundoff=roundoff,
                  objective_scale=objective_scale, samples=samples)
    )

    params = work.parameters()
    side_generator = torch.Generator(device).manual_seed(derived_seed(seed, "timing"))

    def one_estimate() -> tuple[Tensor, ...]:
        value = estimator.surrogate(
            work.distribution(), work.objective, num_samples=num_samples, generator=side_generator
        )
        return torch.autograd.grad(value, params, allow_unused=True)

    times: list[float] = []
    record["time_per_estimate_s"] = median_time(one_estimate, device, times_out=times) \
        if timing else None
    if samples is not None:  # squared deviations from summarise; the comparison's times
        samples["times"] = times
    if memory_profile:
        record["peak_memory_bytes"], record["peak_memory_method"] = memory.peak_memory(
            one_estimate, device
        )
    else:
        record["peak_memory_bytes"], record["peak_memory_method"] = None, None
    record.update(
        {
            "parameters": _flatten([p.detach().double() for p in params], params, 1)[0].tolist(),
            "problem_config": problem.config(),
            "estimator_config": _estimator_config(estimator, work),
            "torch_version": torch.__version__,
            "versions": provenance.versions(),
            "git_commit": provenance.git_commit(),
        }
    )
    return {field: record[field] for field in FIELDS}
