"""relaxed-topk against a straightforward port of the reference algorithm, side by side.

For each (n, k, batch): the median time of forward + backward and the peak memory of one
forward + backward (CPU: the profiler's tensor-allocation peak, as in the harness; CUDA: the
allocator's peak), for estibench's kernel (``relaxed_topk``: log-space steps, hand-derived
backward, keys kept every ⌈√k⌉ steps) and for the reference port (every step under autograd,
``log(max(1 − α, ε))``). Both run in the same process, interleaved, on the same keys.

    python benchmarks/relaxed_topk_vs_reference.py [--device cuda] [--sizes 100,1000,10000]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch

from estimators.relaxed_topk import reference_port_relaxed_topk, relaxed_topk
from harness.memory import peak_memory

if __package__:  # imported as benchmarks.relaxed_topk_vs_reference (asv discovery, python -m)
    from .devices import sync
else:  # run as a script: python benchmarks/relaxed_topk_vs_reference.py
    from devices import sync

KERNELS = {"estibench": relaxed_topk, "reference-port": reference_port_relaxed_topk}


def run_once(kernel, keys: torch.Tensor, k: int, tau: float, weights: torch.Tensor) -> None:
    x = keys.detach().requires_grad_(True)
    (kernel(x, k, tau) * weights).sum().backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--ks", default="1,10,100")
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--tau", type=float, default=0.5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--budget", type=float, default=0.5, help="seconds of timing per case")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device={device}, torch threads={torch.get_num_threads()}, tau={args.tau}, float32")
    header = f"{'n':>6} {'k':>4} {'batch':>5} | {'time ours':>10} {'time ref':>10} {'speed-up':>8} | {'mem ours':>10} {'mem ref':>10} {'mem ratio':>9}"
    print(header)
    print("-" * len(header))
    for n, k, batch in itertools.product(
        [int(v) for v in args.sizes.split(",")],
        [int(v) for v in args.ks.split(",")],
        [int(v) for v in args.batches.split(",")],
    ):
        if k > n:
            continue
        generator = torch.Generator(device).manual_seed(0)
        keys = torch.randn(batch, n, generator=generator, device=device)
        weights = torch.randn(batch, n, generator=generator, device=device)
        times = {name: [] for name in KERNELS}
        for name, kernel in KERNELS.items():  # warm up
            run_once(kernel, keys, k, args.tau, weights)
        spent = 0.0
        while spent < 2 * args.budget or len(times["estibench"]) < 3:
            for name, kernel in KERNELS.items():
                sync(device)
                start = time.perf_counter()
                run_once(kernel, keys, k, args.tau, weights)
                sync(device)
                elapsed = time.perf_counter() - start
                times[name].append(elapsed)
                spent += elapsed
        memory = {name: peak_memory(lambda: run_once(kernel, keys, k, args.tau, weights), device)[0]
                  for name, kernel in KERNELS.items()}
        ours, ref = statistics.median(times["estibench"]), statistics.median(times["reference-port"])
        print(f"{n:>6} {k:>4} {batch:>5} | {ours * 1e3:>8.3f}ms {ref * 1e3:>8.3f}ms {ref / ours:>7.2f}x |"
              f" {memory['estibench'] / 2**20:>8.2f}MB {memory['reference-port'] / 2**20:>8.2f}MB"
              f" {memory['reference-port'] / max(memory['estibench'], 1):>8.1f}x", flush=True)


if __name__ == "__main__":
    main()
