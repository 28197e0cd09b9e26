"""Differentiable sorting side by side: NeuralSort, SoftSort, Sinkhorn (20 iterations),
diffsort's odd-even network and torchsort's soft_sort, forward + backward, in one run.

Each kernel relaxes the sort of scores ``[batch, n]`` (float32, τ = 1 or steepness 10) and is
differentiated through ⟨relaxed, W⟩: the four permutation relaxations produce an n × n matrix;
torchsort's ``soft_sort`` is a different relaxation (a projection onto the permutahedron,
Blondel et al. 2020) that produces the sorted *values*, not a matrix, and is labelled so. Times
are medians of interleaved calls (``devices.interleaved_medians``); peak tensor memory is the
profiler's on the CPU and the allocator's on CUDA. A kernel whose package is missing
(``estibench[sorting]`` for diffsort; ``torchsort`` itself, built as docs/benchmarks.md says) is
reported as such; diffsort's odd-even network has n layers of n × n matrices, so it stops at
``--diffsort-max-n``.

    python benchmarks/sorting_relaxations.py [--sizes 16,256,1024] [--batch 8] [--device cuda]
"""

from __future__ import annotations

import argparse

import torch

from estimators.errors import UserError
from estimators.neuralsort import neuralsort, softsort
from estimators.sinkhorn import sinkhorn, sorting_network_matrix
from harness.memory import peak_memory

if __package__:  # imported as benchmarks.sorting_relaxations (asv discovery, python -m)
    from .devices import interleaved_medians
else:  # run as a script
    from devices import interleaved_medians


def kernels(n: int, diffsort_max_n: int) -> dict:
    chosen = {
        "neuralsort": lambda s: neuralsort(s, 1.0),
        "softsort": lambda s: softsort(s, 1.0),
        "sinkhorn-20": lambda s: sinkhorn(s, 1.0, 20),
    }
    if n <= diffsort_max_n:
        chosen["diffsort-odd-even"] = lambda s: sorting_network_matrix(s, "odd_even", 10.0)
    try:
        import torchsort

        chosen["torchsort.soft_sort (values)"] = lambda s: torchsort.soft_sort(
            s, regularization_strength=1.0)
    except ImportError:
        pass
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="16,256,1024")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--diffsort-max-n", type=int, default=256)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device={device}, torch threads={torch.get_num_threads()}, float32, batch={args.batch}")
    try:
        import torchsort  # noqa: F401
    except ImportError:
        print("torchsort: not installed (pip install --no-build-isolation torchsort, see docs/benchmarks.md); "
              "left out")
    for n in [int(v) for v in args.sizes.split(",")]:
        generator = torch.Generator(device).manual_seed(0)
        scores = torch.randn(args.batch, n, generator=generator, device=device)
        calls, outputs = {}, {}
        for name, kernel in kernels(n, args.diffsort_max_n).items():
            try:
                outputs[name] = kernel(scores)
            except UserError as error:
                print(f"n={n} {name}: {error}")
                continue
            weights = torch.randn(outputs[name].shape, generator=generator, device=device)

            def run(kernel=kernel, weights=weights):
                x = scores.detach().requires_grad_(True)
                (kernel(x) * weights).sum().backward()

            calls[name] = run
        median = interleaved_medians(calls, device, budget=args.budget)
        for name, run in calls.items():
            memory = peak_memory(run, device)[0]
            print(f"n={n:>5} {name:30s} {median[name] * 1e3:>9.2f} ms  {memory / 2**20:>9.2f} MB",
                  flush=True)


if __name__ == "__main__":
    main()
