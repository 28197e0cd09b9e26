"""Continuous relaxations of sorting: NeuralSort (Grover et al. 2019) and SoftSort (Prillo &
Eisenschlos 2020), and the estimators built on them.

NeuralSort: with A_s[i, j] = |s_i − s_j|, row i of the relaxed permutation matrix (the item at
rank i, descending) is

    P̂[i, :] = softmax(((n + 1 − 2i) s − A_s 1) / τ),    i = 1..n,

unimodal and row-stochastic, tending to the sorting permutation as τ → 0. A_s 1 (the row sums
of |s_i − s_j|) takes O(n log n) by sorting and prefix sums; the n × n × n product of the
reference code is never formed. At exactly tied scores the gradient is that of the naive
formula with sign(0) = 0 (the average of the one-sided derivatives), whatever order the sort
gives the tie; SoftSort shares the sort's gradient evenly among tied items.

The logits of row i, column j are a rank-two bilinear form, q_i · k_j with
q_i = (n + 1 − 2i, −1) and k_j = (s_j, (A_s 1)_j) / τ, so P̂ V can be computed a block of rows
at a time without the n × n matrix (``neuralsort_apply``).

SoftSort: P̂[i, j] = softmax_j(−|sort(s)_i − s_j| / τ), sort descending.

Precision: the logits are of size n·|s|, so in float32 scores closer than about n·|s|·2^-23
tie, and no temperature separates them; at tiny τ the matrix is otherwise an exact permutation.

Stochastic variants relax the Plackett-Luce sample: the scores s + g with g ~ Gumbel(0, 1) i.i.d.,
whose descending sort is an exact sample (Grover et al. 2019).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import Distribution
from torch.utils.checkpoint import checkpoint

from estimators.base import EstimatorInfo, register
from estimators.plackett_luce import PlackettLuce, permutation_matrix_of
from estimators.registry import Option, positive
from estimators.relaxation import Relaxation, twin


def _tie_bounds(ascending: Tensor) -> tuple[Tensor, Tensor]:
    """For each entry of ``ascending`` ``[*, n]`` (sorted ascending): how many entries are
    strictly below it and how many are at most it, ``[*, n]`` each (int64). Entries p with
    ``below <= p < through`` are its ties."""
    keys = ascending.detach().contiguous()
    return (torch.searchsorted(keys, keys, side="left"),
            torch.searchsorted(keys, keys, side="right"))


def _prefix_sums(ascending: Tensor) -> Tensor:
    """``[*, n + 1]``: entry p is the sum of the p smallest."""
    return torch.nn.functional.pad(ascending.cumsum(dim=-1), (1, 0))


def pairwise_abs_row_sums(s: Tensor) -> Tensor:
    """(A_s 1)_j = Σ_k |s_j − s_k| for ``s`` ``[*, n]``, in O(n log n).

    With a the scores sorted ascending, c_p the sum of the p smallest, and L_p, G_p the numbers
    of scores strictly below and strictly above a_p, the sum is
    a_p (L_p − G_p) + (c_n − c_{n−G_p}) − c_{L_p}. Ties are counted on neither side, so the
    gradient is that of Σ_k |s_j − s_k| with sign(0) = 0 (torch's abs): at tied scores it is
    the average of the one-sided derivatives and does not depend on how the sort orders them.
    """
    n = s.shape[-1]
    ascending, index = s.sort(dim=-1)
    below, through = _tie_bounds(ascending)
    prefix = _prefix_sums(ascending)
    sums = (ascending * (below + through - n).to(s.dtype) + prefix[..., -1:]
            - prefix.gather(-1, through) - prefix.gather(-1, below))
    return torch.empty_like(sums).scatter_(-1, index, sums)


def _rank_coefficients(n: int, like: Tensor) -> Tensor:
    """n + 1 − 2i for i = 1..n, ``[n]``."""
    return n + 1 - 2 * torch.arange(1, n + 1, device=like.device, dtype=like.dtype)


def neuralsort(s: Tensor, tau: float) -> Tensor:
    """The NeuralSort relaxed permutation matrix ``[*, n, n]`` of scores ``s`` ``[*, n]``.

    Example:
        >>> p = neuralsort(torch.tensor([0.1, 2.0, -1.0]), tau=1e-3)
        >>> p.argmax(-1).tolist()
        [1, 0, 2]
    """
    n = s.shape[-1]
    return torch.softmax(_logits(s, pairwise_abs_row_sums(s), _rank_coefficients(n, s), tau), -1)


def _logits(s: Tensor, row_sums: Tensor, coefficients: Tensor, tau: float) -> Tensor:
    """((n + 1 − 2i) s_j − (A_s 1)_j) / τ for the rows i given by ``coefficients`` [B]:
    one fused pass over the [*, B, n] result."""
    return torch.addcmul(
        row_sums.unsqueeze(-2) * (-1 / tau), coefficients[:, None] / tau, s.unsqueeze(-2)
    )


def softsort(s: Tensor, tau: float) -> Tensor:
    """The SoftSort relaxed permutation matrix ``[*, n, n]`` of scores ``s`` ``[*, n]``.

    At tied scores the gradient of sort(s) is shared evenly among the tied items (the mean of
    the gradients over all orders of the tie), so it does not depend on how the sort orders
    them; the values are the sorted scores exactly.
    """
    ascending = s.sort(dim=-1).values  # [*, n]
    below, through = _tie_bounds(ascending)
    prefix = _prefix_sums(ascending)
    tied_mean = (prefix.gather(-1, through) - prefix.gather(-1, below)) / (through - below)
    ranked = (ascending.detach() + (tied_mean - tied_mean.detach())).flip(-1)  # [*, n] descending
    return torch.softmax(-(ranked.unsqueeze(-1) - s.unsqueeze(-2)).abs() / tau, dim=-1)


def _neuralsort_rows(s: Tensor, row_sums: Tensor, values: Tensor, coefficients: Tensor,
                     tau: float) -> Tensor:
    return torch.softmax(_logits(s, row_sums, coefficients, tau), dim=-1) @ values  # [*, B, d]


def neuralsort_apply(s: Tensor, values: Tensor, tau: float, *, block: int | None = None) -> Tensor:
    """P̂(s) @ values without materialising P̂: ``s`` ``[*, n]``, ``values`` ``[*, n, d]``.

    Rows of P̂ are independent softmaxes, so P̂ V is computed ``block`` rows at a time, each
    block under activation checkpointing: forward and backward hold O(block · n) memory for
    the relaxed matrix instead of O(n²). Default block: ⌈2^18 / n⌉ rows (about 1 MiB of
    float32 logits per block and batch element).
    """
    n = s.shape[-1]
    block = block or max(1, math.ceil(2**18 / n))
    row_sums = pairwise_abs_row_sums(s)
    coefficients = _rank_coefficients(n, s)
    outputs = []
    for start in range(0, n, block):
        rows = coefficients[start : start + block]
        needs_grad = torch.is_grad_enabled() and (s.requires_grad or values.requires_grad)
        if needs_grad and block < n:  # one block is the full matrix: nothing to save
            outputs.append(checkpoint(_neuralsort_rows, s, row_sums, values, rows, tau,
                                      use_reentrant=False, preserve_rng_state=False))
        else:
            outputs.append(_neuralsort_rows(s, row_sums, values, rows, tau))
    return torch.cat(outputs, dim=-2)


def reference_port_neuralsort(s: Tensor, tau: float) -> Tensor:
    """A straightforward port of the reference NeuralSort, for comparison only: the full
    matrix A_s and A_s 1 through an n × n × n product, as the reference code computes it."""
    n = s.shape[-1]
    a = (s.unsqueeze(-1) - s.unsqueeze(-2)).abs()  # [*, n, n]
    ones = torch.ones(n, n, dtype=s.dtype, device=s.device)
    b = (a @ ones).transpose(-1, -2)  # row i: (A_s 1)ᵀ
    scale = _rank_coefficients(n, s)[:, None]
    return torch.softmax((scale * s.unsqueeze(-2) - b) / tau, dim=-1)


RELAXATIONS = {"neuralsort": neuralsort, "softsort": softsort}


def _options(default_tau: float) -> tuple[Option, ...]:
    return (
        Option("temperature", default_tau, doc="relaxation temperature τ > 0", check=positive),
        Option("stochastic", True,
               doc="relax the Plackett-Luce sample (scores + Gumbel); false: relax the scores "
                   "themselves, a deterministic and biased-by-construction surrogate"),
    )


class _SortRelaxation(Relaxation):
    """Gumbel-perturbed scores (or the scores themselves), their sorting permutation, and
    its relaxation ``RELAXATIONS[relaxation]``."""

    relaxation: str

    def noisy_keys(self, dist: Distribution, num_samples: int,
                   generator: torch.Generator) -> Tensor:
        if not isinstance(dist, PlackettLuce):
            raise TypeError(f"{self.info.name} needs a PlackettLuce distribution")
        if self.stochastic:
            return dist.keys((num_samples,), generator)
        # deterministic: the same relaxation for every sample
        return dist.scores.unsqueeze(0).expand((num_samples,) + dist.scores.shape)

    def harden(self, dist: Distribution, keys: Tensor) -> Tensor:
        return permutation_matrix_of(keys.argsort(-1, descending=True), keys)

    def soften(self, dist: Distribution, keys: Tensor) -> Tensor:
        return RELAXATIONS[self.relaxation](keys, self.temperature)


@register
class NeuralSort(_SortRelaxation):
    relaxation = "neuralsort"
    info = EstimatorInfo(
        name="neuralsort",
        description="NeuralSort relaxation of the Plackett-Luce sample (stochastic=false: of "
        "the scores; deterministic, biased by construction).",
        families=("permutation",),
        unbiased=False,
        pathwise=True,
        needs_relaxable=True,
        options=_options(1.0),
        references="Grover et al. 2019",
    )


@register
class SoftSort(_SortRelaxation):
    relaxation = "softsort"
    info = EstimatorInfo(
        name="softsort",
        description="SoftSort relaxation of the Plackett-Luce sample (stochastic=false: of the "
        "scores; deterministic, biased by construction).",
        families=("permutation",),
        unbiased=False,
        pathwise=True,
        needs_relaxable=True,
        options=_options(1.0),
        references="Prillo & Eisenschlos 2020",
    )


STNeuralSort = register(twin(
    NeuralSort, "STNeuralSort", name="st-neuralsort",
    description="Straight-through NeuralSort: the hard sorting permutation forward, the "
    "NeuralSort matrix backward.",
    references="Grover et al. 2019 (straight-through variant)",
))
