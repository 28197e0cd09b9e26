"""How far a relaxation's samples are from the exact distribution (Xie & Ermon 2019's check).

A relaxation (an estimator with ``noisy_keys``, ``harden`` and ``soften``) maps noisy keys to a
relaxed sample z̃ in the convex hull of the outcomes. Rounded to its **nearest outcome** in
Euclidean distance, z̃ gives a discrete sample: for a k-hot vector its top k, for a one-hot its
argmax, for independent Bernoulli variables each coordinate at 1/2, for a permutation matrix
the maximum-weight matching. One rule covers every family: over the enumerated support s_1..s_N,
the nearest outcome maximises ⟨s, z̃⟩ − ‖s‖²/2.

``sample_distance`` draws ``samples`` relaxed samples, rounds them, and records the total
variation between their empirical distribution p̂ and the exact p,

    TV(p̂, p) = ½ Σ_z |p̂(z) − p(z)|,

beside the same for the relaxation's own hard samples (``harden`` of the same keys: exact
samples, so their TV is sampling noise alone) and the TV that N exact samples give in
expectation, E TV = ½ Σ_z E|X_z/N − p(z)| with X_z ~ Binomial(N, p(z)), from De Moivre's
closed form of a binomial's mean absolute deviation,

    E|X − Np| = 2 ν C(N, ν) p^ν (1 − p)^(N − ν + 1),   ν = ⌊Np⌋ + 1,

computed in log space. A relaxation whose rounded samples follow p has a TV near that value;
one that distorts p has a larger one.
"""

from __future__ import annotations

import math
import time

import torch
from torch import Tensor

from estimators.errors import UserError
from estimators.exact import enumerate_joint
from estimators.relaxation import Relaxation
from harness import provenance
from harness.measure import compatible_pair, derived_seed, resolve_device, resolve_dtype

MAX_OUTCOMES = 4096
"""The most outcomes a sampled distribution may have: each is scored against every sample."""
CHUNK_ELEMENTS = 2**22
"""Numbers held per chunk of samples (keys, relaxed and hard samples, scores): 32 MiB in
float64, whatever ``samples`` is."""


def mean_absolute_deviation(n: int, p: Tensor) -> Tensor:
    """E|X/n − p| for X ~ Binomial(n, p), elementwise, exact (De Moivre's closed form)."""
    p = p.double().clamp(0.0, 1.0)
    nu = torch.floor(n * p) + 1
    inside = (p > 0) & (p < 1)  # p = 0 or 1: X = np surely, no deviation
    q, nu_safe = p.where(inside, 0.5), nu.where(inside, 1.0).clamp(max=n)
    log_choose = (math.lgamma(n + 1) - torch.lgamma(nu_safe + 1)
                  - torch.lgamma(n - nu_safe + 1))
    log_mad = (math.log(2) + torch.log(nu_safe) + log_choose + nu_safe * torch.log(q)
               + (n - nu_safe + 1) * torch.log1p(-q))
    return torch.where(inside, torch.exp(log_mad) / n, torch.zeros_like(p))


def expected_total_variation(n: int, probabilities: Tensor) -> float:
    """E TV(p̂, p) of the empirical distribution of ``n`` exact samples."""
    return float(0.5 * mean_absolute_deviation(n, probabilities).sum())


def total_variation(counts: Tensor, probabilities: Tensor) -> float:
    """½ Σ |counts/Σcounts − p|."""
    counts = counts.double()
    return float(0.5 * (counts / counts.sum() - probabilities.double()).abs().sum())


def nearest(relaxed: Tensor, support: Tensor) -> Tensor:
    """The index of each sample's nearest outcome: relaxed ``[S, D]``, support ``[N, D]``."""
    scores = relaxed @ support.T - 0.5 * (support * support).sum(-1)
    return scores.argmax(-1)


def sample_distance(problem, estimator, *, samples: int = 10_000, seed: int = 0,
                    device: str = "cpu", dtype: str = "float32") -> dict:
    """Draw ``samples`` relaxed samples of ``estimator`` on ``problem``'s distribution and
    return the record: ``total_variation`` of their nearest outcomes to the exact
    distribution, ``hard_total_variation`` of the same keys' exact samples, and
    ``exact_sampling_total_variation`` (what exact samples give in expectation).

    Example:
        >>> record = sample_distance("subset-graded:n=4,k=2", "relaxed-topk:temperature=1.0",
        ...                          samples=2000, seed=0)
        >>> record["outcomes"], record["total_variation"] < 0.1
        (6, True)
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise UserError(f"samples must be a positive integer, got {samples!r}")
    problem_obj, estimator_obj = compatible_pair(problem, estimator)
    if not isinstance(estimator_obj, Relaxation):
        raise UserError(f"{estimator_obj.spec} draws no relaxed samples: the sample distance "
                        "needs a relaxation (an estimator with soften and harden)")
    torch_device, torch_dtype = resolve_device(device), resolve_dtype(dtype)
    dist = problem_obj.to(torch_device, torch_dtype).distribution()
    if dist.batch_shape != torch.Size():
        raise UserError(f"{problem_obj.spec}: the sample distance needs one distribution, "
                        f"got a batch of shape {tuple(dist.batch_shape)}")
    if not problem_obj.info.enumerable:
        raise UserError(f"{problem_obj.spec}: the sample distance needs an enumerable support")
    exact = problem_obj.distribution()  # float64 on the CPU, as every problem is built
    support = enumerate_joint(exact, MAX_OUTCOMES, "the sample distance")  # [N, *event]
    outcomes = support.shape[0]
    with torch.no_grad():
        probabilities = exact.log_prob(support).double().exp()  # [N]
        probabilities = probabilities / probabilities.sum()  # round-off of the enumeration
        flat = support.reshape(outcomes, -1).to(torch_device, torch_dtype)
        width = flat.shape[1]
        chunk = max(1, CHUNK_ELEMENTS // (4 * width + outcomes))
        generator = torch.Generator(torch_device).manual_seed(derived_seed(seed, "sampling"))
        relaxed_counts = torch.zeros(outcomes, dtype=torch.long, device=torch_device)
        hard_counts = torch.zeros_like(relaxed_counts)
        start = time.perf_counter()
        for first in range(0, samples, chunk):
            count = min(chunk, samples - first)
            keys = estimator_obj.noisy_keys(dist, count, generator)
            relaxed = estimator_obj.soften(dist, keys).reshape(count, -1)
            hard = estimator_obj.harden(dist, keys).reshape(count, -1).to(torch_dtype)
            if not bool(torch.isfinite(relaxed).all()):
                raise UserError(f"{estimator_obj.spec} gave non-finite relaxed samples on "
                                f"{problem_obj.spec}")
            relaxed_counts += torch.bincount(nearest(relaxed, flat), minlength=outcomes)
            hard_counts += torch.bincount(nearest(hard, flat), minlength=outcomes)
        elapsed = time.perf_counter() - start
    relaxed_counts, hard_counts = relaxed_counts.cpu(), hard_counts.cpu()
    record = {
        "problem": problem_obj.spec,
        "estimator": estimator_obj.spec,
        "samples": samples,
        "seed": seed,
        "device": str(torch_device),
        "dtype": dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch."),
        "outcomes": outcomes,
        "total_variation": total_variation(relaxed_counts, probabilities),
        "hard_total_variation": total_variation(hard_counts, probabilities),
        "exact_sampling_total_variation": expected_total_variation(samples, probabilities),
        "largest_difference": float((relaxed_counts / samples - probabilities).abs().max()),
        "wall_time_s": elapsed,
        "versions": provenance.versions(),
        "git_commit": provenance.git_commit(),
    }
    if outcomes <= 64:  # small enough to keep: the two distributions themselves
        record["probabilities"] = probabilities.tolist()
        record["relaxed_frequencies"] = (relaxed_counts.double() / samples).tolist()
    return record
