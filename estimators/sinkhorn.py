"""Sinkhorn relaxations of permutations (Mena et al. 2018), the baselines of Grover et al. 2019's
Table 1, and differentiable sorting networks (Petersen et al. 2021, 2022; ``diffsort``).

**Construction.** From scores s ``[*, n]`` the log-potential matrix is

    X_ij = (n + 1 − 2i) s_j / τ,    i = 1..n (rank, descending), j = 1..n (item),

NeuralSort's rank coefficients times the scores: the assignment maximising Σ_i X_{i π(i)} puts
the largest score at rank 1 and so on (the rearrangement inequality), so the hard permutation
of X is the sort of s, in the canonical encoding (row i is the one-hot of the item ranked i).
Sinkhorn normalisation alternates, in log space, row and column normalisation,

    L ← L − logsumexp_j L,    L ← L − logsumexp_i L,    ``iterations`` times from L = X,

and returns exp(L). ``gumbel-sinkhorn`` applies it to the Gumbel-perturbed scores s + g, whose
sort is an exact Plackett-Luce sample, so it relaxes that sample; ``sinkhorn`` to the scores
themselves (deterministic, biased by construction); ``st-gumbel-sinkhorn`` is the
straight-through twin (the hard Plackett-Luce sample forward).

**Tolerance.** The last step normalises columns, so columns sum to 1 to rounding; rows sum to 1
within the row error, which Sinkhorn's iteration shrinks geometrically for a fixed τ (for 8
standard-normal scores at τ = 1: 1e-2 after 20 iterations, 6e-8 after 100) and which grows as
τ falls (at τ = 0.03 it is still 0.1 after 100 iterations). ``diagnostics`` reports it for the
scores at θ (``row_error``), so a record states the tolerance it was run at; raise
``iterations`` with a small τ.

**Not here: "vanilla RS"** (Grover et al. 2019's third baseline). In the authors' code it is a
model: a network maps the n inputs jointly to n² logits whose row-wise softmax is trained by
cross-entropy against the true permutation; no scores, no Plackett-Luce, no temperature. It is
not a function of the n scores these estimators relax, and the row softmax of X above is not a
faithful stand-in: as τ → 0 every row with n + 1 − 2i > 0 picks the largest score, so it does
not sort.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor
from torch.distributions import Distribution

from estimators.base import EstimatorInfo, register, sample_numel
from estimators.errors import UserError
from estimators.neuralsort import _rank_coefficients, _SortRelaxation
from estimators.registry import Option, at_least, positive
from estimators.relaxation import twin


def sinkhorn(s: Tensor, tau: float, iterations: int) -> Tensor:
    """The Sinkhorn relaxed permutation matrix ``[*, n, n]`` of scores ``s`` ``[*, n]``.

    Example:
        >>> p = sinkhorn(torch.tensor([0.3, 2.0, -1.0]), tau=0.05, iterations=200)
        >>> p.round().tolist()  # rank 1 is item 1, rank 2 item 0, rank 3 item 2
        [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    """
    n = s.shape[-1]
    log_p = _rank_coefficients(n, s).unsqueeze(-1) * s.unsqueeze(-2) / tau  # [*, n, n]
    for _ in range(iterations):
        log_p = log_p - log_p.logsumexp(-1, keepdim=True)
        log_p = log_p - log_p.logsumexp(-2, keepdim=True)
    return log_p.exp()


def row_error(matrix: Tensor) -> float:
    """max |row sum − 1| of doubly-stochastic candidates ``[*, n, n]``."""
    return float((matrix.sum(-1) - 1).abs().max()) if matrix.numel() else 0.0


OPTIONS = (
    Option("temperature", 1.0, check=positive, doc="relaxation temperature τ > 0"),
    Option("iterations", 20, check=at_least(1),
           doc="row-and-column normalisations (raise it with a small τ; see row_error)"),
)


class _Sinkhorn(_SortRelaxation):
    def soften(self, dist: Distribution, keys: Tensor) -> Tensor:
        return sinkhorn(keys, self.temperature, self.iterations)

    def pass_elements(self, dist: Distribution, num_samples: int) -> int:
        """Every iteration keeps about four n × n matrices per sample for the backward pass
        (the log-potentials after each normalisation and their log-sum-exps' gradients)."""
        return super().pass_elements(dist, num_samples) + (
            4 * self.iterations * num_samples * sample_numel(dist))

    def diagnostics(self, dist: Distribution) -> dict:
        """The row error of the relaxation of the scores at θ: the tolerance to which the
        result is doubly stochastic (columns are exact)."""
        with torch.no_grad():
            return {"row_error": row_error(sinkhorn(dist.scores, self.temperature,
                                                    self.iterations))}


@register
class GumbelSinkhorn(_Sinkhorn):
    stochastic = True
    info = EstimatorInfo(
        name="gumbel-sinkhorn",
        description="Sinkhorn normalisation of the Gumbel-perturbed scores' log-potentials "
        "(n + 1 − 2i) s_j / τ: relaxes the Plackett-Luce sample.",
        families=("permutation",),
        unbiased=False,
        pathwise=True,
        needs_relaxable=True,
        options=OPTIONS,
        references="Mena et al. 2018",
    )


@register
class Sinkhorn(_Sinkhorn):
    stochastic = False
    info = EstimatorInfo(
        name="sinkhorn",
        description="Sinkhorn normalisation of the scores' log-potentials (n + 1 − 2i) s_j / τ: "
        "deterministic, biased by construction.",
        families=("permutation",),
        unbiased=False,
        pathwise=True,
        needs_relaxable=True,
        options=OPTIONS,
        references="Mena et al. 2018",
    )


STGumbelSinkhorn = register(twin(
    GumbelSinkhorn, "STGumbelSinkhorn", name="st-gumbel-sinkhorn",
    description="Straight-through Gumbel-Sinkhorn: the hard Plackett-Luce sample forward, the "
    "Sinkhorn matrix backward.",
    references="Mena et al. 2018 (straight-through variant)",
))


# -- differentiable sorting networks -----------------------------------------------------------

NETWORKS = ("odd_even", "bitonic")


def _diffsort():
    """The ``diffsort`` package's functional sort and network builder, or one clear error."""
    try:
        from diffsort.functional import sort
        from diffsort.networks import get_sorting_network
    except ImportError:
        raise UserError("the diffsort estimator needs the optional extra: "
                        "pip install 'estibench[sorting]'") from None
    return sort, get_sorting_network


@functools.lru_cache(maxsize=32)
def _network(kind: str, n: int, device: str):
    return _diffsort()[1](kind, n, device)


def sorting_network_matrix(s: Tensor, network: str, steepness: float) -> Tensor:
    """The relaxed permutation matrix ``[*, n, n]`` of a differentiable sorting network
    (``diffsort``, Cauchy-distribution swaps) on scores ``s`` ``[*, n]``, in the canonical
    encoding: the package sorts ascending and returns X with sorted = x X, so row i (rank i,
    descending) is column n − 1 − i of X."""
    n = s.shape[-1]
    if network == "bitonic" and n & (n - 1):
        raise UserError(f"diffsort: the bitonic network needs n a power of 2, got n={n}; use "
                        "network=odd_even")
    sort, _ = _diffsort()
    flat = s.reshape(-1, n)
    _, matrix = sort(_network(network, n, str(s.device)), flat, steepness, 0.25, "cauchy")
    return matrix.transpose(-1, -2).flip(-2).reshape(s.shape + (n,))


@register
class DiffSort(_SortRelaxation):
    """Differentiable sorting networks (Petersen et al. 2021, 2022) on the Gumbel-perturbed
    scores: an odd-even (n layers) or bitonic (log² n layers) network of relaxed conditional
    swaps, each mixing the pair by α = atan(β (b − a))/π + ½, β = ``steepness``; the result is
    the relaxed permutation matrix of the ``diffsort`` package (the optional extra
    ``estibench[sorting]``)."""

    stochastic = True
    info = EstimatorInfo(
        name="diffsort",
        description="Differentiable sorting network (diffsort package) on the Gumbel-perturbed "
        "scores: relaxes the Plackett-Luce sample.",
        families=("permutation",),
        unbiased=False,
        pathwise=True,
        needs_relaxable=True,
        options=(
            Option("network", "odd_even", choices=NETWORKS,
                   doc="odd_even (any n) or bitonic (n a power of 2)"),
            Option("steepness", 10.0, check=positive, doc="β, the swaps' steepness"),
        ),
        references="Petersen et al. 2021, 2022",
    )

    def unavailable(self) -> str | None:
        try:
            _diffsort()
        except UserError as error:
            return str(error)
        return None

    def soften(self, dist: Distribution, keys: Tensor) -> Tensor:
        return sorting_network_matrix(keys, self.network, self.steepness)

    def pass_elements(self, dist: Distribution, num_samples: int) -> int:
        """Every layer of the network keeps a few n × n matrices per sample."""
        n = dist.scores.shape[-1]
        layers = n if self.network == "odd_even" else max(1, n.bit_length() ** 2)
        return super().pass_elements(dist, num_samples) + (
            6 * layers * num_samples * sample_numel(dist))
