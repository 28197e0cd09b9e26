"""asv suite: relaxed top-k forward + backward, estibench's kernel against the reference port.

Kernels: ``estibench`` is ``relaxed_topk`` as the estimators call it (on the CPU the C kernel
of ``estimators.native`` when it could be built); ``estibench-torch`` its torch
implementation (what CUDA runs; skipped for commits that predate the backend choice);
``reference-port`` the port of the reference code.

Parameters are the same whatever is installed; combinations that cannot run here are skipped
in ``setup`` by raising ``NotImplementedError``: k > n, CUDA without a GPU, and on the CPU
n · k · batch > 2^23 (the reference port then holds k copies of the keys and one forward and
backward take tens of seconds on two cores). The grid keeps the sizes where the two kernels
differ (n ∈ {1000, 10000}, k ∈ {10, 100}): below them both are dominated by per-call overhead,
and every case costs asv a process, which CI pays on two cores.
``python benchmarks/relaxed_topk_vs_reference.py`` covers a wider range in one process.

- ``time_forward_backward``: one forward and backward, device synchronised.
- ``track_peak_tensor_bytes``: peak tensor memory of one forward + backward (CPU: the
  profiler's allocation events, as in the harness; CUDA: the allocator's peak), unit bytes.
- ``peakmem_forward_backward``: asv's host peak RSS of the process (coarse; includes torch).
"""

import inspect

import torch

from estimators import native
from estimators.relaxed_topk import reference_port_relaxed_topk, relaxed_topk
from harness.memory import peak_memory

from .devices import device_or_skip, sync

CPU_MAX_STEP_ELEMENTS = 2**23
KERNELS = {
    "estibench": relaxed_topk,
    "estibench-torch": lambda keys, k, tau: relaxed_topk(keys, k, tau, backend="torch"),
    "reference-port": reference_port_relaxed_topk,
}


class RelaxedTopK:
    params = (list(KERNELS), [1000, 10000], [10, 100], [1, 64], ["cpu", "cuda"])
    param_names = ["kernel", "n", "k", "batch", "device"]
    timeout = 300

    def setup(self, kernel, n, k, batch, device):
        if k > n:
            raise NotImplementedError("k > n")
        if device == "cpu" and n * k * batch > CPU_MAX_STEP_ELEMENTS:
            raise NotImplementedError("n · k · batch beyond the CPU budget")
        if kernel == "estibench-torch" and "backend" not in inspect.signature(relaxed_topk).parameters:
            raise NotImplementedError("this commit's relaxed_topk has no backend choice")
        self.device = device_or_skip(device)
        native.library()  # load (or build) the C kernel outside the timed call
        generator = torch.Generator(self.device).manual_seed(0)
        self.keys = torch.randn(batch, n, generator=generator, device=self.device)
        self.weights = torch.randn(batch, n, generator=generator, device=self.device)
        self.fn = KERNELS[kernel]
        self.k = k

    def _run(self):
        x = self.keys.detach().requires_grad_(True)
        (self.fn(x, self.k, 0.5) * self.weights).sum().backward()

    def time_forward_backward(self, *args):
        self._run()
        sync(self.device)

    def track_peak_tensor_bytes(self, *args):
        return peak_memory(self._run, self.device)[0]

    track_peak_tensor_bytes.unit = "bytes"

    def peakmem_forward_backward(self, *args):
        self._run()
