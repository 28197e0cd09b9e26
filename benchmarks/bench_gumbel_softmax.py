"""asv suite: the Gumbel-softmax kernel (``estimators.gumbel_softmax.relaxed_sample``), forward
and backward: y = softmax((logits + g) / τ) for categorical, the binary Concrete
sigmoid((logits + logistic noise) / τ) for Bernoulli, then the gradient of ⟨y, w⟩ to the logits.

Over family × size (categories, or Bernoulli variables) ∈ {16, 4096} × batch ∈ {1, 256} ×
device; CUDA is skipped in ``setup`` where there is no GPU.

- ``time_forward_backward``: one forward and backward, device synchronised.
- ``peakmem_forward_backward``: asv's host peak RSS of the process (coarse; includes torch).
- ``track_peak_tensor_bytes``: peak tensor memory of one forward + backward (CPU: the
  profiler's allocation events, as in the harness; CUDA: the allocator's peak), unit bytes.
"""

import torch
from torch.distributions import Bernoulli, Independent, OneHotCategorical

from estimators.gumbel_softmax import relaxed_sample
from harness.memory import peak_memory

from .devices import device_or_skip, sync


class GumbelSoftmax:
    params = (["bernoulli", "categorical"], [16, 4096], [1, 256], ["cpu", "cuda"])
    param_names = ["family", "size", "batch", "device"]
    timeout = 120

    def setup(self, family, size, batch, device):
        self.device = device_or_skip(device)
        generator = torch.Generator(self.device).manual_seed(0)
        self.logits = torch.randn(batch, size, generator=generator, device=self.device)
        self.weights = torch.randn(batch, size, generator=generator, device=self.device)
        self.family = family
        self.generator = generator

    def _run(self):
        logits = self.logits.detach().requires_grad_(True)
        if self.family == "bernoulli":
            dist = Independent(Bernoulli(logits=logits), 1)
        else:
            dist = OneHotCategorical(logits=logits)
        y, _ = relaxed_sample(dist, self.family, 1, self.generator, 0.5)  # [1, batch, size]
        (y * self.weights).sum().backward()

    def time_forward_backward(self, *args):
        self._run()
        sync(self.device)

    def peakmem_forward_backward(self, *args):
        self._run()

    def track_peak_tensor_bytes(self, *args):
        return peak_memory(self._run, self.device)[0]

    track_peak_tensor_bytes.unit = "bytes"
