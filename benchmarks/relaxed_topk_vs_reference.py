"""relaxed-topk against a straightforward port of the reference algorithm, side by side.

For each (n, k, batch): the median time of forward + backward and the peak memory of one
forward + backward (CPU: the profiler's tensor-allocation peak, as in the harness; CUDA: the
allocator's peak), for

- ``ours``: ``relaxed_topk`` as the estimators call it (log-space steps, hand-derived backward,
  keys kept every ⌈√k⌉ steps): on the CPU the C kernel (``estimators.native``) when it could
  be built, else the torch implementation;
- ``torch``: ``relaxed_topk(..., backend="torch")``, the torch implementation of the same
  algorithm (what CUDA runs, and the CPU fallback);
- ``ref``: the reference port (every step under autograd, ``log(max(1 − α, ε))``).

All run in the same process, interleaved, on the same keys; speed-ups are ref / ours and
ref / torch, memory ratios ref / ours.

    python benchmarks/relaxed_topk_vs_reference.py [--device cuda] [--sizes 100,1000,10000]
"""

from __future__ import annotations

import argparse
import functools
import itertools

import torch

from estimators import native
from estimators.relaxed_topk import reference_port_relaxed_topk, relaxed_topk
from harness.memory import peak_memory

if __package__:  # imported as benchmarks.relaxed_topk_vs_reference (asv discovery, python -m)
    from .devices import interleaved_medians
else:  # run as a script: python benchmarks/relaxed_topk_vs_reference.py
    from devices import interleaved_medians

KERNELS = {
    "ours": relaxed_topk,
    "torch": functools.partial(relaxed_topk, backend="torch"),
    "ref": reference_port_relaxed_topk,
}


def run_once(kernel, keys: torch.Tensor, k: int, tau: float, weights: torch.Tensor) -> None:
    x = keys.detach().requires_grad_(True)
    (kernel(x, k, tau) * weights).sum().backward()


def compare(kernels: dict, keys: torch.Tensor, weights: torch.Tensor, k: int, tau: float,
            device: torch.device, *, budget: float, rounds: int = 3
            ) -> tuple[dict[str, float], dict[str, int]]:
    """Median seconds (``interleaved_medians``) and peak tensor bytes of one forward + backward
    for each kernel."""
    calls = {name: lambda kernel=kernel: run_once(kernel, keys, k, tau, weights)
             for name, kernel in kernels.items()}
    times = interleaved_medians(calls, device, budget=budget, rounds=rounds)
    return times, {name: peak_memory(call, device)[0] for name, call in calls.items()}


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
    if device.type == "cpu":
        print(f"C kernel: {native.status()}")
    header = (f"{'n':>6} {'k':>4} {'batch':>5} | {'ours':>9} {'torch':>9} {'ref':>9} "
              f"{'ref/ours':>8} {'ref/torch':>9} | {'mem ours':>9} {'mem torch':>9} "
              f"{'mem ref':>9} {'ref/ours':>8}")
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
        times, memory = compare(KERNELS, keys, weights, k, args.tau, device, budget=args.budget)
        ours, eager, ref = (times[name] for name in KERNELS)
        mb = {name: memory[name] / 2**20 for name in KERNELS}
        print(f"{n:>6} {k:>4} {batch:>5} | {ours * 1e3:>7.2f}ms {eager * 1e3:>7.2f}ms "
              f"{ref * 1e3:>7.2f}ms {ref / ours:>7.2f}x {ref / eager:>8.2f}x |"
              f" {mb['ours']:>7.2f}MB {mb['torch']:>7.2f}MB {mb['ref']:>7.2f}MB"
              f" {memory['ref'] / max(memory['ours'], 1):>7.1f}x", flush=True)


if __name__ == "__main__":
    main()
