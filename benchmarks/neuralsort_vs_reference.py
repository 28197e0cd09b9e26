"""NeuralSort against a port of the reference code (n × n × n product), and the lean P̂ V
path against the full P̂, side by side in one run.

Rows: for each (n, batch), median time of forward + backward of
  - ``reference``: ``reference_port_neuralsort`` (A_s 1 through a batched n³ product),
  - ``full``: ``neuralsort`` (O(n log n) row sums, the n × n matrix),
  - ``lean``: ``neuralsort_apply`` (P̂ V a block of rows at a time, no n × n matrix kept),
and the peak tensor memory of one forward + backward of ``full`` and ``lean`` (CPU: profiler
allocation events; CUDA: allocator peak). The objective is ⟨P̂ V, W⟩ with V of one column.

    python benchmarks/neuralsort_vs_reference.py [--sizes 16,256,1024,4096] [--device cuda]
"""

from __future__ import annotations

import argparse

import torch

from estimators.neuralsort import neuralsort, neuralsort_apply, reference_port_neuralsort
from harness.memory import peak_memory

if __package__:  # imported as benchmarks.neuralsort_vs_reference (asv discovery, python -m)
    from .devices import interleaved_medians
else:  # run as a script: python benchmarks/neuralsort_vs_reference.py
    from devices import interleaved_medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="16,256,1024,4096")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--reference-max-n", type=int, default=1024,
                        help="largest n for the n³ reference (it grows as n³)")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device={device}, torch threads={torch.get_num_threads()}, float32, tau=1")
    print(f"{'n':>5} {'batch':>5} | {'reference':>10} {'full':>10} {'lean':>10} {'ref/full':>8} |"
          f" {'mem full':>10} {'mem lean':>10} {'full/lean':>9}")
    for n in [int(v) for v in args.sizes.split(",")]:
        for batch in [int(v) for v in args.batches.split(",")]:
            generator = torch.Generator(device).manual_seed(0)
            s = torch.randn(batch, n, generator=generator, device=device)
            v = torch.randn(batch, n, 1, generator=generator, device=device)
            w = torch.randn(batch, n, 1, generator=generator, device=device)
            kernels = {
                "full": lambda x: neuralsort(x, 1.0) @ v,
                "lean": lambda x: neuralsort_apply(x, v, 1.0),
            }
            if n <= args.reference_max_n:
                kernels["reference"] = lambda x: reference_port_neuralsort(x, 1.0) @ v

            def run(kernel):
                x = s.detach().requires_grad_(True)
                (kernel(x) * w).sum().backward()

            median = interleaved_medians({name: lambda k=kernel: run(k)
                                          for name, kernel in kernels.items()},
                                         device, budget=args.budget)
            memory = {name: peak_memory(lambda k=kernels[name]: run(k), device)[0]
                      for name in ("full", "lean")}
            ref = f"{median['reference'] * 1e3:>8.2f}ms" if "reference" in median else f"{'-':>10}"
            ratio = f"{median['reference'] / median['full']:>7.1f}x" if "reference" in median else f"{'-':>8}"
            print(f"{n:>5} {batch:>5} | {ref} {median['full'] * 1e3:>8.2f}ms {median['lean'] * 1e3:>8.2f}ms"
                  f" {ratio} | {memory['full'] / 2**20:>8.2f}MB {memory['lean'] / 2**20:>8.2f}MB"
                  f" {memory['full'] / max(memory['lean'], 1):>8.1f}x", flush=True)


if __name__ == "__main__":
    main()
