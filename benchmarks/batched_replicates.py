"""Batched replicates against a loop of per-replicate backward calls, side by side.

The harness draws R estimates in one batched pass (parameters replicated along a leading
dimension, one surrogate call, one backward). The naive alternative is R Python-level passes,
each building the distribution, calling the surrogate and its own backward. This script times
both on the same problem in one run, interleaving the repetitions so that machine noise hits
both alike, and prints the median times and their ratio.

    python benchmarks/batched_replicates.py                       # categorical-linear:k=100, R=1000
    python benchmarks/batched_replicates.py --estimator gumbel-softmax --replicates 5000

A second line reports estimates per second of the batched pass.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from estimators import ESTIMATORS
from harness.measure import batched_estimates
from problems import PROBLEMS


def loop_estimates(problem, estimator, num_samples, replicates, generator):
    params = problem.parameters()
    rows = []
    for _ in range(replicates):
        value = estimator.surrogate(problem.distribution(), problem.objective,
                                    num_samples=num_samples, generator=generator)
        grads = torch.autograd.grad(value, params)
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", default="categorical-linear:k=100")
    parser.add_argument("--estimator", default="reinforce")
    parser.add_argument("--num-samples", type=int, default=1)
    parser.add_argument("--replicates", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    problem = PROBLEMS.make(args.problem).to("cpu", dtype)
    estimator = ESTIMATORS.make(args.estimator)

    def batched():
        return batched_estimates(problem, estimator, num_samples=args.num_samples,
                                 replicates=args.replicates,
                                 generator=torch.Generator().manual_seed(0))

    def loop():
        return loop_estimates(problem, estimator, args.num_samples, args.replicates,
                              torch.Generator().manual_seed(0))

    if args.num_samples == 1:  # same noise stream: the two must agree
        torch.testing.assert_close(batched(), loop(), rtol=1e-5, atol=1e-6)
    times = {"batched": [], "loop": []}
    for _ in range(args.repeats):
        for name, fn in (("batched", batched), ("loop", loop)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    batched_s = statistics.median(times["batched"])
    loop_s = statistics.median(times["loop"])
    print(f"{estimator.spec} on {problem.spec}, R={args.replicates}, "
          f"num_samples={args.num_samples}, {args.dtype}, torch threads={torch.get_num_threads()}")
    print(f"batched: {batched_s * 1e3:.2f} ms   loop: {loop_s * 1e3:.1f} ms   "
          f"ratio loop/batched: {loop_s / batched_s:.1f}x")
    print(f"batched: {args.replicates / batched_s:.3g} estimates/s")


if __name__ == "__main__":
    main()
