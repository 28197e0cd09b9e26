"""asv suite: GenGS (Joo et al. 2020) sampling + backward on Poisson counts.

One relaxed sample per element of a batch of Poisson(λ) variables, λ = exp θ, at the default
settings (τ = 0.5, tail 1e-4, lump), f(z) = Σ (z − λ)², then the backward pass to θ. The
truncation search (the per-element level K) is part of what is timed: it runs on every call.
Rates {1, 10, 100} (K = 6, 24, 139) and batch {1, 1024}; CUDA is skipped in ``setup`` where
there is no GPU.

- ``time_sample_backward``: one forward and backward, device synchronised.
- ``peakmem_sample_backward``: asv's host peak RSS of the process (coarse; includes torch).
- ``track_peak_tensor_bytes``: peak tensor memory of one forward + backward (CPU: the
  profiler's allocation events, as in the harness; CUDA: the allocator's peak), unit bytes.
- ``track_support_points``: K + 1, the columns one relaxed sample holds (max over the batch).
"""

import math

import torch
from torch.distributions import Poisson

from estimators import ESTIMATORS
from harness.memory import peak_memory

if __package__:  # imported as benchmarks.bench_gengs (asv discovery, python -m)
    from .devices import device_or_skip, sync
else:  # imported by benchmarks/gengs_figures.py run as a script
    from devices import device_or_skip, sync

RATES = [1, 10, 100]
BATCHES = [1, 1024]
DEVICES = ["cpu", "cuda"]


class GenGS:
    params = (RATES, BATCHES, DEVICES)
    param_names = ["rate", "batch", "device"]
    timeout = 120

    def setup(self, rate, batch, device):
        self.device = device_or_skip(device)
        self.theta = torch.full((batch,), math.log(rate), device=self.device)
        self.target = float(rate)
        self.estimator = ESTIMATORS.make("gengs")
        self.generator = torch.Generator(self.device).manual_seed(0)

    def _objective(self, z):
        return ((z - self.target) ** 2).sum(-1)  # [S, batch] -> [S]

    def _run(self):
        theta = self.theta.detach().requires_grad_(True)
        dist = Poisson(theta.exp())
        surrogate = self.estimator.surrogate(dist, self._objective, num_samples=1,
                                             generator=self.generator)
        surrogate.backward()

    def time_sample_backward(self, *args):
        self._run()
        sync(self.device)

    def peakmem_sample_backward(self, *args):
        self._run()

    def track_peak_tensor_bytes(self, *args):
        return peak_memory(self._run, self.device)[0]

    track_peak_tensor_bytes.unit = "bytes"

    def track_support_points(self, *args):
        values, _, _ = self.estimator.truncated_log_probs(Poisson(self.theta.exp()))
        return len(values)

    track_support_points.unit = "points"
