"""Training runs: optimise a problem's parameters with one estimator's gradients.

Every ``eval_every`` steps (and after the last) the run records the objective E[f] at the
current θ (exact where the problem has ``expected_objective``, else a Monte Carlo mean of 4,096
samples with its standard error), the variance (trace of the covariance) of the estimator's
gradient there, from ``variance_replicates`` independent estimates drawn in one batched pass,
and the wall time spent optimising so far (evaluations excluded). Objectives are minimised.

A problem with a ``training_session(seed, device, dtype)`` method (the real tasks of
``problems.real``) trains networks rather than θ itself: the run optimises the session's
network weights from a fresh initialisation, the loss of a step is the estimator's surrogate
on a random training minibatch (``session.loss``), an evaluation records the task's metrics
(``session.evaluate()``: ``objective`` and its source, plus e.g. test accuracy) and the
gradient variance is taken at θ of the task bound to the current weights (``session.problem()``).
"""

from __future__ import annotations

import math
import time

import torch

from estimators.errors import UserError
from estimators.families import draw
from harness import provenance
from harness.adapt import StateTrainer, adapt
from harness.measure import (compatible_pair, derived_seed, estimate_chunks, resolve_device,
                             resolve_dtype, streamed_moments, synchronize)

OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}
MONTE_CARLO_SAMPLES = 4096


def _objective(problem, generator: torch.Generator) -> tuple[float, float | None, str]:
    """(E[f] at θ, its standard error or None if exact, 'exact' or 'monte-carlo')."""
    with torch.no_grad():
        try:
            return float(problem.expected_objective().sum()), None, "exact"
        except NotImplementedError:
            pass
        values = problem.objective(draw(problem.distribution(), MONTE_CARLO_SAMPLES, generator))
        values = values.reshape(MONTE_CARLO_SAMPLES, -1).sum(1).double()
        stderr = float(values.std() / math.sqrt(MONTE_CARLO_SAMPLES))
        return float(values.mean()), stderr, "monte-carlo"


def train(
    problem: str,
    estimator: str,
    *,
    num_samples: int = 1,
    optimizer: str = "adam",
    learning_rate: float = 0.05,
    steps: int = 100,
    eval_every: int = 10,
    variance_replicates: int = 100,
    seed: int = 0,
    device: str = "cpu",
    dtype: str = "float32",
    memory_budget: int | str | None = None,
) -> dict:
    """Run one training run and return its record (``curve``: one dict per evaluation).

    ``memory_budget`` bounds the passes of the gradient-variance evaluations as in ``measure``.

    Example:
        >>> record = train("bernoulli-toy", "reinforce:baseline=loo", num_samples=4, steps=20,
        ...                eval_every=10)
        >>> [point["step"] for point in record["curve"]]
        [0, 10, 20]
    """
    problem_obj, estimator_obj = compatible_pair(problem, estimator)
    if optimizer not in OPTIMIZERS:
        raise UserError(f"unknown optimizer {optimizer!r}: expected {' or '.join(OPTIMIZERS)}")
    torch_device, torch_dtype = resolve_device(device), resolve_dtype(dtype)
    session = None
    if hasattr(problem_obj, "training_session"):  # a real task: train its networks
        session = problem_obj.training_session(derived_seed(seed, "initialisation"),
                                               torch_device, torch_dtype)
        params = session.parameters()
    else:
        work = problem_obj.to(torch_device, torch_dtype)
        params = work.parameters()
    opt = OPTIMIZERS[optimizer](params, lr=learning_rate)
    # An estimator that learns: φ adapted at the initial θ, then one variance step per θ step.
    estimator_obj = adapt(session.problem() if session is not None else work, estimator_obj,
                          num_samples=num_samples, seed=seed, freeze=False)
    trainer = StateTrainer(estimator_obj)
    generator = torch.Generator(torch_device).manual_seed(seed)
    evaluation = torch.Generator(torch_device).manual_seed(derived_seed(seed, "evaluation"))

    curve, source, optimising = [], "exact", 0.0
    for step in range(steps + 1):
        if step % eval_every == 0 or step == steps:
            metrics = {}
            if session is not None:
                metrics = session.evaluate()
                objective, stderr = metrics.pop("objective"), None
                source = metrics.pop("objective_source")
                work = session.problem()
            else:
                objective, stderr, source = _objective(work, evaluation)
            # Streamed: variance_replicates rows of D numbers are never held at once.
            _, per_coordinate, _ = streamed_moments(estimate_chunks(
                work, estimator_obj, num_samples=num_samples, replicates=variance_replicates,
                generator=evaluation, memory_budget=memory_budget))
            variance = float(per_coordinate.sum())
            curve.append({"step": step, "objective": objective, "objective_stderr": stderr,
                          "gradient_variance": variance, "wall_time_s": optimising, **metrics})
        if step == steps:
            break
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        if session is not None:
            surrogate = session.loss(estimator_obj, num_samples, generator)
        else:
            surrogate = estimator_obj.surrogate(work.distribution(), work.objective,
                                                num_samples=num_samples, generator=generator)
        if trainer.active:  # ĝ with its graph, for φ's step on ‖ĝ‖²
            step_grads = torch.autograd.grad(surrogate.sum(), params, create_graph=True,
                                             allow_unused=True)
            for p, g in zip(params, step_grads):
                p.grad = None if g is None else g.detach()
            trainer.step(list(step_grads))
        else:
            surrogate.sum().backward()
        grads = [p.grad for p in params if p.grad is not None]
        if grads and not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()):
            raise UserError(f"{estimator_obj.spec} gave a non-finite gradient at step {step} on "
                            f"{problem_obj.spec}; lower the learning rate or change settings")
        opt.step()
        synchronize(torch_device)
        optimising += time.perf_counter() - start

    return {
        "problem": problem_obj.spec,
        "estimator": estimator_obj.spec,
        "num_samples": num_samples,
        "objective_evaluations": estimator_obj.objective_evaluations(work.distribution(),
                                                                     num_samples),
        "seed": seed,
        "device": str(torch_device),
        "dtype": dtype,
        "optimizer": optimizer,
        "learning_rate": learning_rate,
        "steps": steps,
        "objective_source": source,
        "final_objective": curve[-1]["objective"],
        "curve": curve,
        "wall_time_s": optimising,
        # For a real task: θ at its fixed inputs under the final weights, not every weight.
        "parameters": torch.cat([p.detach().double().reshape(-1) for p in
                                 (work.parameters() if session is not None else params)]).tolist(),
        "versions": provenance.versions(),
        "git_commit": provenance.git_commit(),
    }
