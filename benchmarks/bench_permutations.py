"""asv suites: NeuralSort (full P̂ and the lean P̂ V path), SoftSort, Plackett-Luce sampling
and log_prob, over n ∈ {256, 4096} and batch ∈ {1, 32} (at n = 16 every kernel is per-call
overhead, and every case costs asv a process, which CI pays on two cores;
``python benchmarks/neuralsort_vs_reference.py`` covers more sizes in one process).

Unavailable combinations are skipped in ``setup``: CUDA without a GPU, and on the CPU the
n = 4096, batch = 32 cases (2^29 matrix entries: the full matrix does not fit the budget, and
the lean path, which never holds it, takes about half a minute on two cores).
``track_peak_tensor_bytes`` records the peak tensor memory of one forward + backward (CPU:
the profiler's allocation events, as in the harness; CUDA: the allocator's peak).
"""

import torch

from estimators import PlackettLuce, draw
from estimators.neuralsort import neuralsort, neuralsort_apply, softsort
from harness.memory import peak_memory

from .devices import device_or_skip, sync

SIZES = [256, 4096]
BATCHES = [1, 32]
DEVICES = ["cpu", "cuda"]


class SortRelaxations:
    params = (["neuralsort", "neuralsort-lean", "softsort"], SIZES, BATCHES, DEVICES)
    param_names = ["relaxation", "n", "batch", "device"]
    timeout = 600

    def setup(self, relaxation, n, batch, device):
        self.device = device_or_skip(device)
        if self.device.type == "cpu" and n * n * batch > 2**27:
            raise NotImplementedError(
                "too large for the CPU budget: the full n × n matrices do not fit, and the lean "
                "path takes about half a minute"
            )
        generator = torch.Generator(self.device).manual_seed(0)
        self.s = torch.randn(batch, n, generator=generator, device=self.device)
        self.v = torch.randn(batch, n, 1, generator=generator, device=self.device)
        kernels = {
            "neuralsort": lambda x: neuralsort(x, 1.0) @ self.v,
            "neuralsort-lean": lambda x: neuralsort_apply(x, self.v, 1.0),
            "softsort": lambda x: softsort(x, 1.0) @ self.v,
        }
        self.kernel = kernels[relaxation]

    def _run(self):
        x = self.s.detach().requires_grad_(True)
        self.kernel(x).sum().backward()

    def time_forward_backward(self, *args):
        self._run()
        sync(self.device)

    def track_peak_tensor_bytes(self, *args):
        return peak_memory(self._run, self.device)[0]

    track_peak_tensor_bytes.unit = "bytes"


class PlackettLuceKernels:
    params = (SIZES, BATCHES, DEVICES)
    param_names = ["n", "batch", "device"]

    def setup(self, n, batch, device):
        self.device = device_or_skip(device)
        if self.device.type == "cpu" and n * n * batch > 2**27:
            raise NotImplementedError("samples are n × n matrices: too large for the CPU budget")
        generator = torch.Generator(self.device).manual_seed(0)
        self.dist = PlackettLuce(torch.randn(batch, n, generator=generator, device=self.device))
        self.generator = generator
        self.samples = draw(self.dist, 1, generator)

    def time_sample(self, *args):
        draw(self.dist, 1, self.generator)
        sync(self.device)

    def time_log_prob(self, *args):
        self.dist.log_prob(self.samples)
        sync(self.device)
