"""asv suite: relaxed top-k forward + backward, estibench's kernel against the reference port.

Kernels: ``estibench`` is ``relaxed_topk`` as the estimators call it (on the CPU the C kernel
of ``estimators.native`` when it could be built); ``estibench-torch`` its torch
implementation (what CUDA runs); ``reference-port`` the port of the reference code.

The grid is n ∈ {100, 1000, 10000} × k ∈ {1, 10, 100} × batch ∈ {1, 64} on each device.
Parameters are the same whatever is installed; combinations that cannot run here are skipped
in ``setup`` by raising ``NotImplementedError``: k > n and CUDA without a GPU. The largest
case, n = 10000, k = 100, batch 64, is the speed and memory target (the reference port holds
about 735 MB there and takes about a second on two cores). asv starts each case from its fork
server, so a small case costs CI little. ``python benchmarks/relaxed_topk_vs_reference.py``
prints the same comparison as one table from one process.

- ``time_forward_backward``: one forward and backward, device synchronised.
- ``track_peak_tensor_bytes``: peak tensor memory of one forward + backward (CPU: the
  profiler's allocation events, as in the harness; CUDA: the allocator's peak), unit bytes.
- ``peakmem_forward_backward``: asv's host peak RSS of the process (coarse; includes torch).
"""

import functools

import torch

from estimators import native
from estimators.relaxed_topk import reference_port_relaxed_topk, relaxed_topk
from harness.memory import peak_memory

from .devices import device_or_skip, sync

KERNELS = {
    "estibench": relaxed_topk,
    "estibench-torch": functools.partial(relaxed_topk, backend="torch"),
    "reference-port": reference_port_relaxed_topk,
}


class RelaxedTopK:
    params = (list(KERNELS), [100, 1000, 10000], [1, 10, 100], [1, 64], ["cpu", "cuda"])
    param_names = ["kernel", "n", "k", "batch", "device"]
    timeout = 300

    def setup(self, kernel, n, k, batch, device):
        if k > n:
            raise NotImplementedError("k > n")
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
