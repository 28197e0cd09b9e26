"""The Plackett-Luce distribution over permutations, as permutation matrices.

With log-scores s, the probability of the ranking σ (σ_1 ranked first) is

    p(σ) = Π_i exp(s_{σ_i}) / Σ_{j ≥ i} exp(s_{σ_j})

(Plackett 1975; Luce 1959). Sampling sorts the Gumbel-perturbed scores s + g in descending
order (Yellott 1977; Grover et al. 2019). Samples are permutation matrices ``[*, n, n]`` whose
row i is the one-hot of the item ranked i, so ``P @ x`` lists x in ranked order.

``log_prob`` takes the scores in ranked order, s_σ = P s, and subtracts a reverse cumulative
log-sum-exp: O(n) after reading P, in log space, stable for scores of magnitude 100 and more.

Example:
    >>> import torch
    >>> dist = PlackettLuce(torch.tensor([2.0, 0.0, 1.0]))
    >>> support = dist.enumerate_support()
    >>> support.shape
    torch.Size([6, 3, 3])
    >>> round(float(dist.log_prob(support).exp().sum()), 6)
    1.0
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor
from torch.distributions import Distribution, constraints

from estimators import noise
from estimators.errors import UserError
from estimators.families import register_family

MAX_ENUMERATE_N = 8


class _PermutationMatrix(constraints.Constraint):
    """Square 0/1 matrices with exactly one 1 in every row and every column."""

    is_discrete = True
    event_dim = 2

    def check(self, value: Tensor) -> Tensor:
        binary = ((value == 0) | (value == 1)).all(-1).all(-1)
        rows = (value.sum(-1) == 1).all(-1)
        cols = (value.sum(-2) == 1).all(-1)
        return binary & rows & cols


permutation_matrix = _PermutationMatrix()


def permutation_matrix_of(order: Tensor, like: Tensor) -> Tensor:
    """``[*, n, n]`` with row i the one-hot of ``order[..., i]``, in the dtype of ``like``."""
    n = order.shape[-1]
    return torch.zeros(order.shape + (n,), dtype=like.dtype, device=like.device).scatter_(
        -1, order.unsqueeze(-1), 1.0
    )


def reverse_logcumsumexp(values: Tensor) -> Tensor:
    """out[..., i] = log Σ_{j ≥ i} exp(values[..., j])."""
    return torch.logcumsumexp(values.flip(-1), dim=-1).flip(-1)


class PlackettLuce(Distribution):
    """Rankings of n items with log-scores ``scores`` ``[*batch, n]``; samples ``[*, n, n]``."""

    arg_constraints = {"scores": constraints.real_vector}
    support = permutation_matrix
    has_enumerate_support = True

    def __init__(self, scores: Tensor, validate_args: bool | None = None) -> None:
        if not isinstance(scores, Tensor) or scores.dim() < 1 or scores.shape[-1] < 1:
            raise UserError("PlackettLuce needs scores of shape [*batch, n] with n >= 1")
        self.scores = scores
        n = scores.shape[-1]
        super().__init__(scores.shape[:-1], torch.Size((n, n)), validate_args=validate_args)

    @property
    def n(self) -> int:
        return self.scores.shape[-1]

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(PlackettLuce, _instance)
        batch_shape = torch.Size(batch_shape)
        new.scores = self.scores.expand(batch_shape + (self.n,))
        super(PlackettLuce, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def keys(self, sample_shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
        """Gumbel-perturbed scores ``[*sample_shape, *batch, n]``; sorting them is a sample."""
        shape = tuple(sample_shape) + tuple(self.scores.shape)
        return self.scores + noise.gumbel(shape, generator, like=self.scores)

    def sample(self, sample_shape=torch.Size()) -> Tensor:
        with torch.no_grad():
            keys = self.keys(tuple(sample_shape), None)
            return permutation_matrix_of(keys.argsort(-1, descending=True), keys)

    def log_prob_ranking(self, order: Tensor) -> Tensor:
        """log p(σ) for rankings given as item indices ``order`` ``[*, n]`` (order[0] first)."""
        scores = self.scores.expand(order.shape[:-1] + (self.n,))
        ranked = scores.gather(-1, order)  # [*, n]
        return (ranked - reverse_logcumsumexp(ranked)).sum(-1)

    def log_prob(self, value: Tensor) -> Tensor:
        """log p of permutation matrices ``value`` ``[*, n, n]`` (row i: item ranked i)."""
        if self._validate_args:
            self._validate_sample(value)
        ranked = (value * self.scores.unsqueeze(-2)).sum(-1)  # [*, n]: s_σ = P s
        return (ranked - reverse_logcumsumexp(ranked)).sum(-1)

    def enumerate_support(self, expand: bool = True) -> Tensor:
        """All n! permutation matrices (n <= 8), ``[n!, *batch, n, n]``."""
        if self.n > MAX_ENUMERATE_N:
            raise UserError(
                f"PlackettLuce over n={self.n} items has {math.factorial(self.n)} rankings, "
                f"more than enumerate_support lists (n <= {MAX_ENUMERATE_N})"
            )
        orders = torch.tensor(list(itertools.permutations(range(self.n))), device=self.scores.device)
        matrices = permutation_matrix_of(orders, self.scores)  # [n!, n, n]
        matrices = matrices.reshape((len(orders),) + (1,) * len(self.batch_shape) + (self.n, self.n))
        if expand:
            matrices = matrices.expand((len(orders),) + self.batch_shape + (self.n, self.n))
        return matrices


def _sample_plackett_luce(
    dist: PlackettLuce, shape: tuple[int, ...], generator: torch.Generator
) -> Tensor:
    keys = dist.keys(shape, generator)
    return permutation_matrix_of(keys.argsort(-1, descending=True), keys)


register_family(PlackettLuce, "permutation", _sample_plackett_luce)
