"""asv suites: the harness's batched replicates (``harness.measure.batched_estimates``).

``BatchedReplicates``: R estimates of ``categorical-linear:k=100`` in one batched pass (θ
replicated R times, one surrogate call, one backward), against a Python loop of R
per-replicate backward calls (``benchmarks/batched_replicates.py``; only at R = 100, where it
takes a fraction of a second). The ratio of the two is the harness's ≥ 20x target.

``SingleCoreThroughput``: 10,000 ``gumbel-softmax`` estimates of ``categorical-linear:k=10`` in
one batched pass on one CPU thread; 0.1 s or less is the target of 1e5 estimates per second.

CUDA is skipped in ``setup`` where there is no GPU.
"""

import torch

from estimators import ESTIMATORS
from harness.measure import batched_estimates
from problems import PROBLEMS

from .batched_replicates import loop_estimates

from .devices import device_or_skip, sync


def _small_loop_only(estimator, replicates, device):
    if replicates > 100:
        raise NotImplementedError("the per-replicate loop runs at R = 100 only")


class BatchedReplicates:
    params = (["reinforce", "gumbel-softmax"], [100, 10000], ["cpu", "cuda"])
    param_names = ["estimator", "replicates", "device"]
    timeout = 120

    def setup(self, estimator, replicates, device):
        self.device = device_or_skip(device)
        self.problem = PROBLEMS.make("categorical-linear:k=100").to(self.device, torch.float32)
        self.estimator = ESTIMATORS.make(estimator)
        self.replicates = replicates
        self.generator = torch.Generator(self.device).manual_seed(0)

    def time_batched(self, *args):
        batched_estimates(self.problem, self.estimator, num_samples=1,
                          replicates=self.replicates, generator=self.generator)
        sync(self.device)

    def time_loop(self, *args):
        loop_estimates(self.problem, self.estimator, 1, self.replicates, self.generator)
        sync(self.device)

    time_loop.setup = _small_loop_only

    def peakmem_batched(self, *args):
        batched_estimates(self.problem, self.estimator, num_samples=1,
                          replicates=self.replicates, generator=self.generator)


class SingleCoreThroughput:
    replicates = 10_000
    timeout = 60

    def setup(self):
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)
        self.problem = PROBLEMS.make("categorical-linear:k=10").to("cpu", torch.float32)
        self.estimator = ESTIMATORS.make("gumbel-softmax")
        self.generator = torch.Generator().manual_seed(0)

    def teardown(self):
        torch.set_num_threads(self.threads)

    def time_gumbel_softmax_10000_estimates(self):
        batched_estimates(self.problem, self.estimator, num_samples=1,
                          replicates=self.replicates, generator=self.generator)
