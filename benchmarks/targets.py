"""The harness's performance targets, measured and checked in one run.

1. Batched replicates at least 20x faster than a loop of per-replicate backward calls:
   ``reinforce`` on ``categorical-linear:k=100``, R = 1000, one sample per estimate (the
   comparison of ``batched_replicates.py``), on ``--threads`` torch threads (default 1: on a
   shared two-core machine two OpenMP threads wait on each other whenever another process
   holds a core, and the batched pass, a few short parallel regions, then swings from 7 ms
   to 400 ms between runs; one thread gives a figure that can be reproduced).
2. At least 1e5 estimates per second for ``gumbel-softmax`` on ``categorical-linear:k=10`` on one
   CPU core (``torch.set_num_threads(1)``): R = 10,000 estimates in one batched pass, median of
   the repetitions.
3. Relaxed top-k forward + backward at n = 10,000, k = 100, batch 1 and 64 (float32, τ = 0.5):
   at least 2x faster and at least 5x less peak tensor memory than the port of the reference
   code (the comparison of ``relaxed_topk_vs_reference.py``), interleaved in one process, on
   the same ``--threads``.

    python benchmarks/targets.py [--repeats 5] [--threads 1]

Prints each figure with PASS or FAIL; exits 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from estimators import ESTIMATORS
from estimators.relaxed_topk import implementation, reference_port_relaxed_topk, relaxed_topk
from harness.measure import batched_estimates
from problems import PROBLEMS

if __package__:  # imported as benchmarks.targets (asv discovery, python -m)
    from .batched_replicates import loop_estimates
    from .relaxed_topk_vs_reference import compare
else:  # run as a script: python benchmarks/targets.py
    from batched_replicates import loop_estimates
    from relaxed_topk_vs_reference import compare

SPEEDUP_TARGET = 20.0
THROUGHPUT_TARGET = 1e5
TOPK_SPEED_TARGET = 2.0
TOPK_MEMORY_TARGET = 5.0


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def batched_speedup(repeats: int, replicates: int = 1000) -> tuple[float, float, float]:
    """(batched s, loop s, loop / batched) for reinforce on categorical-linear:k=100."""
    problem = PROBLEMS.make("categorical-linear:k=100").to("cpu", torch.float32)
    estimator = ESTIMATORS.make("reinforce")

    def batched():
        batched_estimates(problem, estimator, num_samples=1, replicates=replicates,
                          generator=torch.Generator().manual_seed(0))

    def loop():
        loop_estimates(problem, estimator, 1, replicates, torch.Generator().manual_seed(0))

    batched()
    loop()
    times: dict[str, list[float]] = {"batched": [], "loop": []}
    for _ in range(repeats):
        times["batched"].append(_seconds(batched))
        times["loop"].append(_seconds(loop))
    batched_s = statistics.median(times["batched"])
    loop_s = statistics.median(times["loop"])
    return batched_s, loop_s, loop_s / batched_s


def single_core_throughput(repeats: int, replicates: int = 10_000) -> float:
    """Estimates per second of gumbel-softmax on categorical-linear:k=10, one torch thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        problem = PROBLEMS.make("categorical-linear:k=10").to("cpu", torch.float32)
        estimator = ESTIMATORS.make("gumbel-softmax")
        generator = torch.Generator().manual_seed(0)

        def batched():
            batched_estimates(problem, estimator, num_samples=1, replicates=replicates,
                              generator=generator)

        batched()
        seconds = statistics.median(_seconds(batched) for _ in range(repeats))
    finally:
        torch.set_num_threads(threads)
    return replicates / seconds


def relaxed_topk_against_reference(repeats: int, batch: int, n: int = 10_000, k: int = 100,
                                   tau: float = 0.5) -> dict[str, float]:
    """Median seconds and peak tensor bytes of forward + backward, ours and the reference port."""
    generator = torch.Generator().manual_seed(0)
    keys = torch.randn(batch, n, generator=generator)
    weights = torch.randn(batch, n, generator=generator)
    kernels = {"ours": relaxed_topk, "ref": reference_port_relaxed_topk}
    times, memory = compare(kernels, keys, weights, k, tau, torch.device("cpu"), budget=0.0,
                            rounds=repeats)
    return {**{f"{name}_s": value for name, value in times.items()},
            **{f"{name}_bytes": value for name, value in memory.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for the batched-vs-loop comparison (0: leave as is)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads available, float32")
    if args.threads:
        torch.set_num_threads(args.threads)
    batched_s, loop_s, ratio = batched_speedup(args.repeats)
    ok_ratio = ratio >= SPEEDUP_TARGET
    print(f"batched replicates (reinforce, categorical-linear:k=100, R=1000, "
          f"{torch.get_num_threads()} thread(s)): batched "
          f"{batched_s * 1e3:.1f} ms, loop {loop_s * 1e3:.0f} ms, {ratio:.1f}x "
          f"(target >= {SPEEDUP_TARGET:g}x): {'PASS' if ok_ratio else 'FAIL'}")
    rate = single_core_throughput(args.repeats)
    ok_rate = rate >= THROUGHPUT_TARGET
    print(f"gumbel-softmax on categorical-linear:k=10, one thread, R=10000: {rate:.3g} "
          f"estimates/s (target >= {THROUGHPUT_TARGET:.0e}): {'PASS' if ok_rate else 'FAIL'}")
    ok_topk = True
    for batch in (1, 64):
        m = relaxed_topk_against_reference(args.repeats, batch)
        speed, memory = m["ref_s"] / m["ours_s"], m["ref_bytes"] / max(m["ours_bytes"], 1)
        ok = speed >= TOPK_SPEED_TARGET and memory >= TOPK_MEMORY_TARGET
        ok_topk = ok_topk and ok
        print(f"relaxed-topk n=10000 k=100 batch={batch} ({implementation(torch.zeros(1))}, "
              f"{torch.get_num_threads()} thread(s)): {m['ours_s'] * 1e3:.1f} ms vs reference "
              f"port {m['ref_s'] * 1e3:.1f} ms, {speed:.2f}x (target >= {TOPK_SPEED_TARGET:g}x); "
              f"peak {m['ours_bytes'] / 2**20:.1f} MB vs {m['ref_bytes'] / 2**20:.1f} MB, "
              f"{memory:.1f}x (target >= {TOPK_MEMORY_TARGET:g}x): {'PASS' if ok else 'FAIL'}")
    sys.exit(0 if ok_ratio and ok_rate and ok_topk else 1)


if __name__ == "__main__":
    main()
