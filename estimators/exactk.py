"""The exact-k subset family: p(z) ∝ exp(θ·z) on the k-hot vectors z ∈ {0, 1}^n, Σ z = k
(the conditional Poisson distribution SIMPLE and I-MLE use), and its estimators.

This is not Gumbel-top-k (``Subset``): there an item's chance depends on the order of the draw;
here the probability of a set is the product of its items' weights, normalised over all sets.

**Normaliser.** Z_k = e_k(exp θ), the elementary symmetric polynomial of degree k, from the
recursion over items, in log space (O(n k)):

    log e_j(1..i) = logaddexp(log e_j(1..i−1), θ_i + log e_{j−1}(1..i−1)),   e_0 = 1.

``log_prob(z) = θ·z − log Z_k``; ``marginals()`` = ∂ log Z_k / ∂θ = P(z_i = 1) (by autograd
through the recursion, differentiable again). **Sampling** walks the recursion backwards: item
i is in the set, given that r of the items 1..i are, with probability
exp(θ_i + log e_{r−1}(1..i−1) − log e_r(1..i)); one uniform per item and sample, exact, O(n k)
per sample. Every step is a difference of log-sum-exps, so logits of magnitude 50 are fine in
float32.

Estimators: ``simple`` (Ahmed et al. 2023): the exact sample forward, the gradient through the
exact marginals, f(z + (μ − μ.detach())). ``imle`` (Niepert, Minervini & Franceschi 2021):
perturb-and-MAP with sum-of-Gamma noise ε, z = topk(θ + ε), and the gradient
(z − topk(θ − λ ∇_z f(z) + ε)) / λ towards the target distribution. ``reinforce`` and
``exact`` work through ``log_prob`` and ``enumerate_support``.

Example:
    >>> import torch
    >>> dist = ExactK(torch.log(torch.tensor([1.0, 2.0, 3.0, 4.0])), k=2)
    >>> round(float(dist.log_prob(dist.enumerate_support()).exp().sum()), 6)
    1.0
    >>> [round(m, 4) for m in dist.marginals().tolist()]  # e.g. item 0: (2 + 3 + 4) / 35
    [0.2571, 0.4571, 0.6, 0.6857]
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import Distribution, constraints

from estimators import noise
from estimators.base import Estimator, EstimatorInfo, Objective, register, sample_numel
from estimators.errors import UserError
from estimators.families import register_family
from estimators.registry import Option, at_least, positive
from estimators.subset import _KHot, khot_support, topk_khot


NEVER = -1e30  # log 0 for the empty entries (j > i): finite, so that the gradient of
# logaddexp(log 0, log 0) is not 0/0; exp(NEVER − anything finite) is 0 in float32 and float64.


def log_elementary(logits: Tensor, k: int) -> Tensor:
    """``[*, n + 1, k + 1]``: entry (i, j) is log e_j(exp θ_1..exp θ_i) (``NEVER`` for j > i)."""
    shape, n = logits.shape[:-1], logits.shape[-1]
    row = torch.full(shape + (k + 1,), NEVER, dtype=logits.dtype, device=logits.device)
    row = torch.cat([torch.zeros_like(row[..., :1]), row[..., 1:]], -1)
    rows = [row]
    pad = row[..., :1].new_full(shape + (1,), NEVER)
    for i in range(n):
        shifted = torch.cat([pad, row[..., :-1] + logits[..., i : i + 1]], -1)
        # logsumexp, not logaddexp: its double backward (the marginals' gradient) stays finite
        # next to NEVER entries, where logaddexp's gives inf · 0.
        row = torch.stack([row, shifted]).logsumexp(0)
        rows.append(row)
    return torch.stack(rows, -2)


class ExactK(Distribution):
    """p(z) ∝ exp(θ·z) over the k-hot vectors of length n.

    Args:
        logits: ``[*batch, n]`` log-weights θ.
        k: the set size, 1 <= k <= n.
    """

    arg_constraints = {"logits": constraints.real_vector}
    has_enumerate_support = True

    def __init__(self, logits: Tensor, k: int, validate_args: bool | None = None) -> None:
        n = logits.shape[-1]
        if not 1 <= k <= n:
            raise UserError(f"ExactK needs 1 <= k <= n = {n}, got k={k}")
        self.logits, self.k, self.n = logits, k, n
        super().__init__(logits.shape[:-1], logits.shape[-1:], validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self):
        return _KHot(self.k)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(ExactK, _instance)
        batch_shape = torch.Size(batch_shape)
        new.logits, new.k, new.n = self.logits.expand(batch_shape + (self.n,)), self.k, self.n
        super(ExactK, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def sample(self, sample_shape=torch.Size()) -> Tensor:
        """torch's interface (the global generator); estimators draw with ``draw``."""
        return _sample_exactk(self, tuple(sample_shape), None)

    def log_normalizer(self) -> Tensor:
        """log Z_k ``[*batch]``, differentiable in the logits."""
        return log_elementary(self.logits, self.k)[..., -1, -1]

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return (value * self.logits).sum(-1) - self.log_normalizer()

    def marginals(self) -> Tensor:
        """P(z_i = 1) ``[*batch, n]`` = ∂ log Z_k / ∂θ, differentiable in θ when θ is."""
        logits = self.logits
        if not logits.requires_grad:
            logits = logits.detach().requires_grad_(True)
        with torch.enable_grad():
            log_z = log_elementary(logits, self.k)[..., -1, -1]
            (marginals,) = torch.autograd.grad(log_z.sum(), logits,
                                               create_graph=self.logits.requires_grad)
        return marginals

    @property
    def mean(self) -> Tensor:
        return self.marginals()

    def enumerate_support(self, expand: bool = True) -> Tensor:
        """All C(n, k) k-hot vectors, ``[N, *batch, n]``."""
        return khot_support(self, expand)

    def sample_with(self, u: Tensor) -> Tensor:
        """Exact samples ``[S, *batch, n]`` from float64 uniforms ``u`` of that shape."""
        with torch.no_grad():
            logits = self.logits.detach()
            table = log_elementary(logits, self.k)  # [*batch, n + 1, k + 1]
            table = table.expand(u.shape[: u.dim() - logits.dim()] + table.shape)
            remaining = torch.full(u.shape[:-1] + (1,), self.k, dtype=torch.long,
                                   device=u.device)
            z = torch.zeros(u.shape, dtype=logits.dtype, device=u.device)
            for i in reversed(range(self.n)):
                before = table[..., i, :].gather(-1, (remaining - 1).clamp(min=0))
                through = table[..., i + 1, :].gather(-1, remaining)
                log_p = logits[..., i : i + 1] + before - through
                take = (remaining > 0) & (torch.log(u[..., i : i + 1]) < log_p.double())
                z[..., i : i + 1] = take.to(z.dtype)
                remaining = remaining - take.long()
        return z


def _sample_exactk(dist: ExactK, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    like = dist.logits.detach()
    return dist.sample_with(noise.uniform(shape + tuple(dist.logits.shape), generator, like=like))


def _exactk_elements(dist: ExactK) -> int:
    """The recursion's table, twice (forward and the sampler's copy), per batch element."""
    return 2 * math.prod(dist.batch_shape) * (dist.n + 1) * (dist.k + 1)


register_family(ExactK, "exactk", _sample_exactk, _exactk_elements)


def _checked(estimator: Estimator, dist: Distribution, num_samples: int) -> ExactK:
    estimator.check_inputs(dist, num_samples)
    if not isinstance(dist, ExactK):
        raise TypeError(f"{estimator.info.name} needs an ExactK distribution")
    return dist


@register
class Simple(Estimator):
    """SIMPLE (Ahmed et al. 2023): f(z + (μ − μ.detach())) with z an exact sample and μ the
    exact marginals; see the module docstring."""

    info = EstimatorInfo(
        name="simple",
        description="Exact k-subset sample forward, gradient through the exact marginals.",
        families=("exactk",),
        unbiased=False,
        pathwise=True,
        needs_relaxable=True,
        references="Ahmed et al. 2023",
    )

    def pass_elements(self, dist: Distribution, num_samples: int) -> int:
        return super().pass_elements(dist, num_samples) + 4 * _exactk_elements(dist)

    def surrogate(
        self, dist: Distribution, f: Objective, *, num_samples: int, generator: torch.Generator
    ) -> Tensor:
        dist = _checked(self, dist, num_samples)
        z = _sample_exactk(dist, (num_samples,), generator)
        mu = dist.marginals()  # [*batch, n], differentiable
        return f(z + (mu - mu.detach())).mean(0)


@register
class IMLE(Estimator):
    """I-MLE (Niepert, Minervini & Franceschi 2021) for exact-k subsets: perturb-and-MAP with
    sum-of-Gamma noise ε = (Σ_{i=1}^{s} Gamma(1/k, rate i/k) − log s) / k, z = topk(θ + ε), and
    ĝ = (z − topk(θ − λ ∇_z f(z) + ε)) / λ; see the module docstring. The forward sample is
    perturb-and-MAP, not an exact sample of p_θ."""

    info = EstimatorInfo(
        name="imle",
        description="Implicit MLE: perturb-and-MAP with sum-of-Gamma noise; gradient from the "
        "MAP of a target distribution θ − λ∇f.",
        families=("exactk",),
        unbiased=False,
        pathwise=True,
        needs_relaxable=True,
        options=(
            Option("lambda", 10.0, check=positive, doc="λ > 0: the step to the target "
                   "distribution θ − λ ∇_z f"),
            Option("noise_samples", 10, check=at_least(1),
                   doc="s, the Gamma terms of the sum-of-Gamma noise"),
        ),
        references="Niepert, Minervini & Franceschi 2021",
    )

    def pass_elements(self, dist: Distribution, num_samples: int) -> int:
        """Plus the s Gamma terms per number of a sample, in float64 (concentrations, draws,
        their scaled sum: 8 working-precision numbers each)."""
        return super().pass_elements(dist, num_samples) + (
            8 * self.noise_samples * num_samples * sample_numel(dist))

    def noise(self, dist: ExactK, num_samples: int, generator: torch.Generator) -> Tensor:
        k, s = dist.k, self.noise_samples
        shape = (num_samples,) + tuple(dist.logits.shape) + (s,)
        concentration = torch.full(shape, 1.0 / k, dtype=torch.float64,
                                   device=dist.logits.device)
        gamma = torch._standard_gamma(concentration, generator=generator)
        rates = torch.arange(1, s + 1, dtype=torch.float64, device=gamma.device) / k
        return ((gamma / rates).sum(-1) - math.log(s)) / k

    def surrogate(
        self, dist: Distribution, f: Objective, *, num_samples: int, generator: torch.Generator
    ) -> Tensor:
        dist = _checked(self, dist, num_samples)
        step = self.options["lambda"]
        logits = dist.logits
        eps = self.noise(dist, num_samples, generator).to(logits.dtype)
        theta = logits.detach()
        z = topk_khot(theta + eps, dist.k)
        probe = z.requires_grad_(True)  # one evaluation: its value, and ∂f for the target
        with torch.enable_grad():
            values = f(probe)  # [S, *batch]
            (slope,) = torch.autograd.grad(values.sum(), probe, retain_graph=True)
        target = topk_khot(theta - step * slope + eps, dist.k)
        g = (z.detach() - target) / step  # [S, *batch, n]
        return (values + (g * (logits - theta)).sum(-1)).mean(0)
