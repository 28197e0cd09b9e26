"""Each kernel against this machine's memory bandwidth: achieved bytes/s as a fraction of it.

The bandwidth is measured once, as the best of several copies of a large tensor (read + write:
2 × its bytes per copy). Each kernel then runs forward and backward at the largest size its asv
suite runs on the CPU (on CUDA the same sizes; for relaxed-topk the largest n · k · batch under
the suite's CPU limit), with all torch threads unless ``--threads``, and its achieved
bandwidth is

    traffic / median time,    traffic = passes × (elements of its largest tensor) × 4 bytes,

where ``passes`` counts the reads and writes of that tensor an unfused forward + backward cannot
avoid (listed per kernel below). The traffic is a lower bound on what the kernel moves, so the
fraction is a lower bound on how close to the roofline it runs: near 1, the kernel is
memory-bound and already close to the machine's limit; well below 1, time goes to arithmetic
(exp, log, sorting), Python and dispatch overhead, or small tensors that live in cache.

| kernel | largest tensor | passes |
|---|---|---|
| gumbel-softmax (categorical, bernoulli) | y [B, k] | 5: read logits, write y; read y and ∂y, write ∂logits |
| relaxed-topk | α [B, n], k steps | 5k: per step, read the keys, write α; read α and ∂, write ∂ |
| neuralsort, softsort (full P̂) | P̂ [B, n, n] | 4: write P̂, read it in P̂ V; read it and ∂P̂ in the backward |
| neuralsort-lean (P̂ V in row blocks) | P̂ [B, n, n], never stored | 4, as full: an "effective" rate (blocks stay in cache) |
| plackett-luce sample | P [S, B, n, n] | 1: write the permutation matrix |
| plackett-luce log_prob | P [B, n, n] | 1: read the permutation matrix |
| gengs | weights [B, K+1] | 5, as gumbel-softmax, over the truncated support |

    python benchmarks/roofline.py [--device cuda] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch
from torch.distributions import Bernoulli, Independent, OneHotCategorical, Poisson

from estimators import ESTIMATORS, PlackettLuce, draw
from estimators.gumbel_softmax import relaxed_sample
from estimators.neuralsort import neuralsort, neuralsort_apply, softsort
from estimators.relaxed_topk import relaxed_topk

if __package__:  # imported as benchmarks.roofline (asv discovery, python -m)
    from .devices import sync
else:  # run as a script: python benchmarks/roofline.py
    from devices import sync

FLOAT32 = 4


def _median_seconds(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def copy_bandwidth(device: torch.device, megabytes: int = 512, repeats: int = 5) -> float:
    """Best bytes/s of ``dst.copy_(src)`` for a float32 tensor of ``megabytes`` (read + write)."""
    n = megabytes * 2**20 // FLOAT32
    src = torch.rand(n, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    sync(device)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n * FLOAT32 / best


def _relaxed(family: str, batch: int, size: int, device: torch.device):
    generator = torch.Generator(device).manual_seed(0)
    logits = torch.randn(batch, size, generator=generator, device=device)
    weights = torch.randn(batch, size, generator=generator, device=device)

    def run():
        x = logits.detach().requires_grad_(True)
        dist = (Independent(Bernoulli(logits=x), 1) if family == "bernoulli"
                else OneHotCategorical(logits=x))
        y, _ = relaxed_sample(dist, family, 1, generator, 0.5)
        (y * weights).sum().backward()

    return run, 5 * batch * size


def _relaxed_topk(batch: int, n: int, k: int, device: torch.device):
    generator = torch.Generator(device).manual_seed(0)
    keys = torch.randn(batch, n, generator=generator, device=device)
    weights = torch.randn(batch, n, generator=generator, device=device)

    def run():
        x = keys.detach().requires_grad_(True)
        (relaxed_topk(x, k, 0.5) * weights).sum().backward()

    return run, 5 * k * batch * n


def _sort_relaxation(kind: str, batch: int, n: int, device: torch.device):
    generator = torch.Generator(device).manual_seed(0)
    s = torch.randn(batch, n, generator=generator, device=device)
    v = torch.randn(batch, n, 1, generator=generator, device=device)
    kernel = {
        "neuralsort": lambda x: neuralsort(x, 1.0) @ v,
        "neuralsort-lean": lambda x: neuralsort_apply(x, v, 1.0),
        "softsort": lambda x: softsort(x, 1.0) @ v,
    }[kind]

    def run():
        kernel(s.detach().requires_grad_(True)).sum().backward()

    return run, 4 * batch * n * n


def _plackett_luce(what: str, batch: int, n: int, device: torch.device):
    generator = torch.Generator(device).manual_seed(0)
    dist = PlackettLuce(torch.randn(batch, n, generator=generator, device=device))
    if what == "sample":
        return (lambda: draw(dist, 1, generator)), batch * n * n
    samples = draw(dist, 1, generator)
    return (lambda: dist.log_prob(samples)), batch * n * n


def _gengs(batch: int, rate: float, device: torch.device):
    estimator = ESTIMATORS.make("gengs")
    generator = torch.Generator(device).manual_seed(0)
    theta = torch.full((batch,), math.log(rate), device=device)
    support = len(estimator.truncated_log_probs(Poisson(theta.exp()))[0])

    def run():
        x = theta.detach().requires_grad_(True)
        surrogate = estimator.surrogate(Poisson(x.exp()), lambda z: ((z - rate) ** 2).sum(-1),
                                        num_samples=1, generator=generator)
        surrogate.backward()

    return run, 5 * batch * support


def kernels(device: torch.device) -> dict[str, tuple[str, tuple[Callable[[], object], int]]]:
    """name -> (size label, (forward + backward callable, elements × passes))."""
    return {
        "gumbel-softmax categorical": ("B=256, k=4096", _relaxed("categorical", 256, 4096, device)),
        "gumbel-softmax bernoulli": ("B=256, d=4096", _relaxed("bernoulli", 256, 4096, device)),
        "relaxed-topk": ("B=64, n=10000, k=10", _relaxed_topk(64, 10000, 10, device)),
        "neuralsort": ("B=1, n=4096", _sort_relaxation("neuralsort", 1, 4096, device)),
        "neuralsort-lean": ("B=1, n=4096", _sort_relaxation("neuralsort-lean", 1, 4096, device)),
        "softsort": ("B=1, n=4096", _sort_relaxation("softsort", 1, 4096, device)),
        "plackett-luce sample": ("B=1, n=4096", _plackett_luce("sample", 1, 4096, device)),
        "plackett-luce log_prob": ("B=1, n=4096", _plackett_luce("log_prob", 1, 4096, device)),
        "gengs": ("B=1024, Poisson rate 100", _gengs(1024, 100.0, device)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    bandwidth = copy_bandwidth(device)
    print(f"device={device}, torch {torch.__version__}, threads={torch.get_num_threads()}, "
          "float32")
    print(f"copy bandwidth (512 MiB tensor, read + write): {bandwidth / 1e9:.2f} GB/s")
    print()
    print("| kernel | size | time (ms) | traffic (MB) | achieved (GB/s) | fraction |")
    print("|---|---|---:|---:|---:|---:|")
    for name, (size, (run, elements)) in kernels(device).items():
        seconds = _median_seconds(run, device, args.repeats)
        traffic = elements * FLOAT32
        achieved = traffic / seconds
        print(f"| {name} | {size} | {seconds * 1e3:.2f} | {traffic / 1e6:.1f} | "
              f"{achieved / 1e9:.2f} | {achieved / bandwidth:.3f} |")


if __name__ == "__main__":
    main()
