"""asv suites: every registered estimator, forward + backward of one batched estimate, and its
variance on a fixed problem and seed.

Two classes per family (``<Family>Estimators`` and ``<Family>EstimatorsMemory``), each on a
representative problem whose size is a parameter:

| family      | problem (size n)                   |
|-------------|------------------------------------|
| bernoulli   | ``bernoulli-toy:dim=n``            |
| categorical | ``categorical-linear:k=n``         |
| subset      | ``subset-linear:n=n,k=3``          |
| permutation | ``permutation-assignment:n=n``     |
| count       | ``poisson-quadratic:dim=n``        |
| exactk      | ``exactk-linear:n=n,k=3``          |

The timed body is the harness's own pass (``harness.measure.batched_estimates``): the problem's
parameters replicated ``batch`` times, one batched distribution, one surrogate call averaging
``num_samples`` samples, one backward pass giving ``batch`` estimates. Parameters are fixed lists
(the same whatever is installed); what cannot run here is skipped in ``setup`` by raising
``NotImplementedError``: an estimator the harness finds incompatible with the problem at that
size (``harness.compat.incompatibility``, e.g. ``exact`` beyond an enumerable support), a case
the harness estimates at more than ``CASE_BYTES`` (``replicate_bytes`` × batch), and CUDA
without a GPU. ``tests/test_benchmarks.py`` checks that every registered estimator appears
here for every family it supports.

- ``<Family>Estimators.time_forward_backward``: one batched estimate, device synchronised, over
  estimator × size × batch × num_samples × device (a num_samples outside the estimator's
  ``min_samples``..``max_samples`` is skipped too).
- ``<Family>EstimatorsMemory``, per estimator × device at the largest size, batch and
  num_samples of that grid (memory varies little at the small end, and every case costs asv a
  process): ``peakmem_forward_backward``, asv's peak resident memory of the process (host,
  includes torch itself), and ``track_cuda_peak_bytes``, the CUDA allocator's peak during one
  estimate (skipped on the CPU).
- ``Variance.track_variance``: trace of the covariance of one estimate of one sample (two for
  the unordered-set estimator, its minimum), from ``harness.measure`` with a fixed seed and
  R = 10,000 replicates; an estimator that becomes noisier shows up like a slowdown. The value
  is deterministic for a given commit; a change that draws the random numbers differently
  moves it by its own sampling error, whose relative standard error sd(q)/(mean(q)√R) is at
  most 0.057 here (REINFORCE and GenGS on ``poisson-quadratic``; 0.2 at R = 1000), so CI's
  factor of 1.5 (``.ci/run``) is about 7 such errors. Exact enumeration and deterministic
  relaxations are skipped: their variance is zero up to round-off.
"""

from __future__ import annotations

import torch

from estimators import ESTIMATORS
from harness.compat import incompatibility
from harness.measure import batched_estimates, measure, replicate_bytes
from harness.memory import peak_memory
from problems import PROBLEMS

from .devices import device_or_skip, sync

SIZES = [5, 128]
# A case whose batched pass would need more (by the harness's own estimate, replicate_bytes) is
# skipped, saying so: Sinkhorn and sorting networks keep n × n matrices per iteration or layer.
CASE_BYTES = 2**31
BATCHES = [1, 64]
NUM_SAMPLES = [1, 16]
DEVICES = ["cpu", "cuda"]

# The estimators of each family, as fixed lists (asv params must not depend on what is
# installed); a test checks them against the registry.
FAMILY_ESTIMATORS = {
    "bernoulli": ["reinforce", "gumbel-softmax", "st-gumbel-softmax", "straight-through", "exact",
                  "arm", "disarm", "gumbel-rao", "reinmax", "gst", "rebar", "relax", "mvd"],
    "categorical": ["reinforce", "gumbel-softmax", "st-gumbel-softmax", "straight-through",
                    "exact", "gumbel-rao", "reinmax", "gst", "unordered-set", "rebar", "relax"],
    "subset": ["reinforce", "relaxed-topk", "st-relaxed-topk", "exact"],
    "permutation": ["reinforce", "neuralsort", "softsort", "st-neuralsort", "exact", "sinkhorn",
                    "gumbel-sinkhorn", "st-gumbel-sinkhorn", "diffsort"],
    "count": ["reinforce", "gengs", "st-gengs", "exact", "mvd"],
    "exactk": ["reinforce", "simple", "imle", "exact"],
}
FAMILY_PROBLEMS = {
    "bernoulli": "bernoulli-toy:dim={n}",
    "categorical": "categorical-linear:k={n}",
    "subset": "subset-linear:n={n},k=3",
    "permutation": "permutation-assignment:n={n}",
    "count": "poisson-quadratic:dim={n}",
    "exactk": "exactk-linear:n={n},k=3",
}
# Variance is tracked on the problems' small default sizes.
VARIANCE_PROBLEMS = {
    "bernoulli": "bernoulli-toy:dim=3,target=0.499",
    "categorical": "categorical-linear:k=10",
    "subset": "subset-linear:n=8,k=3",
    "permutation": "permutation-assignment:n=5",
    "count": "poisson-quadratic",
    "exactk": "exactk-linear:n=8,k=3",
}
VARIANCE_REPLICATES = 10_000  # relative s.e. of each tracked variance <= 0.06 (count family)


def _cuda_only(*params):
    if params[-1] != "cuda":
        raise NotImplementedError("CUDA allocator statistics: CUDA only")


class _BatchedEstimate:
    """One batched estimate of ``family``'s representative problem: built in ``_build``."""

    family: str
    timeout = 120

    def _build(self, estimator, size, batch, num_samples, device):
        self.device = device_or_skip(device)
        problem = PROBLEMS.make(FAMILY_PROBLEMS[self.family].format(n=size))
        self.estimator = ESTIMATORS.make(estimator)
        reason = incompatibility(problem, self.estimator)
        if reason is not None:
            raise NotImplementedError(reason)
        fewest = self.estimator.min_samples()
        most = self.estimator.max_samples(problem.distribution())
        if num_samples < fewest or (most is not None and num_samples > most):
            raise NotImplementedError(f"{estimator} takes {fewest}..{most} samples here, "
                                      f"not {num_samples}")
        self.problem = problem.to(self.device, torch.float32)
        needed = replicate_bytes(self.problem, self.estimator, num_samples) * batch
        if needed > CASE_BYTES:
            raise NotImplementedError(f"{estimator} at size {size}, batch {batch}, num_samples "
                                      f"{num_samples} needs about {needed / 2**30:.1f} GiB, more "
                                      f"than the grid's {CASE_BYTES / 2**30:.0f} GiB per case")
        self.batch = batch
        self.num_samples = num_samples
        self.generator = torch.Generator(self.device).manual_seed(0)

    def _estimate(self):
        return batched_estimates(self.problem, self.estimator, num_samples=self.num_samples,
                                 replicates=self.batch, generator=self.generator)


class _EstimatorSuite(_BatchedEstimate):
    """Time over the grid size × batch × num_samples × device."""

    param_names = ["estimator", "size", "batch", "num_samples", "device"]

    def setup(self, estimator, size, batch, num_samples, device):
        self._build(estimator, size, batch, num_samples, device)

    def time_forward_backward(self, *params):
        self._estimate()
        sync(self.device)


class _EstimatorMemory(_BatchedEstimate):
    """Memory at the grid's largest size, batch and num_samples (one process per case)."""

    param_names = ["estimator", "device"]

    def setup(self, estimator, device):
        self._build(estimator, SIZES[-1], BATCHES[-1], NUM_SAMPLES[-1], device)

    def peakmem_forward_backward(self, *params):
        self._estimate()

    def track_cuda_peak_bytes(self, *params):
        return peak_memory(self._estimate, self.device)[0]

    track_cuda_peak_bytes.unit = "bytes"
    track_cuda_peak_bytes.setup = _cuda_only


def _grid(family: str) -> tuple:
    return (FAMILY_ESTIMATORS[family], SIZES, BATCHES, NUM_SAMPLES, DEVICES)


def _memory_grid(family: str) -> tuple:
    return (FAMILY_ESTIMATORS[family], DEVICES)


class BernoulliEstimators(_EstimatorSuite):
    family = "bernoulli"
    params = _grid(family)


class BernoulliEstimatorsMemory(_EstimatorMemory):
    family = "bernoulli"
    params = _memory_grid(family)


class CategoricalEstimators(_EstimatorSuite):
    family = "categorical"
    params = _grid(family)


class CategoricalEstimatorsMemory(_EstimatorMemory):
    family = "categorical"
    params = _memory_grid(family)


class SubsetEstimators(_EstimatorSuite):
    family = "subset"
    params = _grid(family)


class SubsetEstimatorsMemory(_EstimatorMemory):
    family = "subset"
    params = _memory_grid(family)


class PermutationEstimators(_EstimatorSuite):
    family = "permutation"
    params = _grid(family)


class PermutationEstimatorsMemory(_EstimatorMemory):
    family = "permutation"
    params = _memory_grid(family)


class CountEstimators(_EstimatorSuite):
    family = "count"
    params = _grid(family)


class CountEstimatorsMemory(_EstimatorMemory):
    family = "count"
    params = _memory_grid(family)


class ExactKEstimators(_EstimatorSuite):
    family = "exactk"
    params = _grid(family)


class ExactKEstimatorsMemory(_EstimatorMemory):
    family = "exactk"
    params = _memory_grid(family)


class Variance:
    """Variance of one estimate (num_samples=1, or the estimator's minimum: 2 for the
    unordered-set estimator) on a fixed problem per family, seed 0, CPU."""

    params = (sorted({name for names in FAMILY_ESTIMATORS.values() for name in names}),
              list(VARIANCE_PROBLEMS))
    param_names = ["estimator", "family"]
    timeout = 120

    def setup(self, estimator, family):
        problem = PROBLEMS.make(VARIANCE_PROBLEMS[family])
        self.estimator = ESTIMATORS.make(estimator)
        reason = incompatibility(problem, self.estimator)
        if reason is None and (estimator == "exact"
                               or not getattr(self.estimator, "stochastic", True)):
            reason = "zero variance by construction (what is left is round-off)"
        if reason is not None:
            raise NotImplementedError(reason)
        self.problem = problem

    def track_variance(self, *params):
        record = measure(self.problem, self.estimator, num_samples=self.estimator.min_samples(),
                         replicates=VARIANCE_REPLICATES, seed=0, device="cpu",
                         timing=False, memory_profile=False)
        return record["variance"]

    track_variance.unit = "variance"
