"""The straight-through estimator (Bengio et al. 2013) and the estimators that change only its
backward pass: Gumbel-Rao (Paulus et al. 2021), ReinMax (Liu et al. 2023), GST (Fan et al. 2022).

The objective sees the hard sample z ~ p_θ; the backward pass treats z as if it were its mean,
the probabilities p = E[z] (sigmoid(logits) or softmax(logits)):

    ĝ = (1/S) Σ_s (∂p/∂θ)ᵀ ∇f(z_s)

Pathwise and biased (unbiased only when f is linear). The objective must accept real-valued
input for its gradient to exist, but it is only ever evaluated at hard samples. It is the
Gumbel relaxation's straight-through estimator with the probabilities as the carrier
(``estimators.relaxation``).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Distribution
from torch.nn.functional import logsigmoid

from estimators import noise
from estimators.base import EstimatorInfo, register
from estimators.families import base_distribution, family_of
from estimators.gumbel_softmax import TEMPERATURE, GumbelRelaxation
from estimators.registry import Option, at_least, positive


@register
class StraightThrough(GumbelRelaxation):
    straight_through = True
    info = EstimatorInfo(
        name="straight-through",
        description="Hard sample forward, gradient of the probabilities backward.",
        families=("bernoulli", "categorical"),
        unbiased=False,
        pathwise=True,
        needs_relaxable=True,
        references="Bengio et al. 2013",
    )

    def carrier(self, dist: Distribution, keys: Tensor, hard: Tensor,
                generator: torch.Generator) -> Tensor:
        return base_distribution(dist).probs  # [*batch, *event], broadcast over the samples


# -- estimators that change only the backward pass --------------------------------------------
# Each works on the categorical form: logits [*batch, C] and one-hot hard samples [S, *batch, C].
# A Bernoulli variable is the two-class categorical with logits [0, θ]; its carrier is the
# class-1 entry, whose gradient reaches θ through the second logit.


def _categorical_carrier(dist: Distribution, hard: Tensor, carrier) -> Tensor:
    """``carrier(logits, one_hot)`` on the categorical form of ``dist``, in its encoding."""
    logits = base_distribution(dist).logits
    if family_of(dist) == "categorical":
        return carrier(logits, hard)
    two_logits = torch.stack([torch.zeros_like(logits), logits], dim=-1)
    two_hard = torch.stack([1 - hard, hard], dim=-1)
    return carrier(two_logits, two_hard)[..., 1]


def conditional_gumbel(log_probs: Tensor, one_hot: Tensor, log_e: Tensor) -> Tensor:
    """Gumbel-perturbed log-probabilities drawn given that their argmax is ``one_hot``.

    Top-down (Paulus et al. 2021, their appendix): the maximum of log π + g is a standard
    Gumbel M = −log E_D whatever the argmax D is; every other entry is Gumbel(log π_i)
    truncated below M, −log(e^{−M} + E_i / π_i). ``log_e`` ``[..., C]`` holds log E for
    independent Exp(1) variables E (``noise.log_exponential_of``); all in log space.
    """
    top = -(one_hot * log_e).sum(-1, keepdim=True)  # M
    others = -torch.logaddexp(-top, log_e - log_probs)
    return torch.where(one_hot > 0, top, others)


def conditional_logistic(theta: Tensor, b: Tensor, logistic: Tensor) -> Tensor:
    """Logistic noise ℓ drawn given b = 1[θ + ℓ > 0], by inversion, from independent logistic
    noise v (u = σ(v)): with s = 2b − 1, −sℓ is logistic truncated to (−∞, sθ), so
    ℓ = −s logit(x), x = u σ(sθ); log x and log(1 − x) = log((1 − u) + u σ(−sθ)) are sums in
    log space, exact at extreme θ."""
    s = 2 * b - 1
    log_u, log_1mu = logsigmoid(logistic), logsigmoid(-logistic)
    log_x = log_u + logsigmoid(s * theta)
    log_1mx = torch.logaddexp(log_1mu, log_u + logsigmoid(-s * theta))
    return -s * (log_x - log_1mx)


def _lin_softmax(probs: Tensor, logits: Tensor) -> Tensor:
    """A tensor with the value 0 whose Jacobian in ``logits`` is diag(π) − ππᵀ at ``probs``
    (the softmax Jacobian, evaluated at π = ``probs`` rather than at softmax(logits))."""
    probs = probs.detach()
    centred = logits - (probs * logits).sum(-1, keepdim=True)
    return probs * (centred - centred.detach())


MC_SAMPLES = Option("mc_samples", 10, check=at_least(1),
                    doc="K: Gumbel draws given the hard sample averaged in the backward pass "
                        "(the sample's own draw is one of them; K = 1 is st-gumbel-softmax)")


@register
class GumbelRao(GumbelRelaxation):
    """Gumbel-Rao (Paulus, Maddison & Krause 2021): straight-through Gumbel-softmax whose
    relaxed sample is averaged over K Gumbel draws given the hard sample D,

        carrier = (1/K) Σ_k softmax((logits + g_k) / τ),    g_k ~ p(g | argmax(logits + g) = D),

    an estimate of E[∇ ST-GS | D]: the same mean as ``st-gumbel-softmax`` and, by the law of
    total variance, Var_D m(D) + E_D v(D) / K where m, v are the conditional mean and variance
    of the ST-GS gradient. The draw that chose D is itself a draw given D, so it is one of the
    K (the other K − 1 are new: ``conditional_gumbel``, or ``conditional_logistic`` for a
    Bernoulli); all K are one batched tensor.
    Cost: one f and one ∂f per sample, K softmaxes.

    Example:
        >>> import torch
        >>> from torch.distributions import OneHotCategorical
        >>> theta = torch.zeros(4, requires_grad=True)
        >>> loss = GumbelRao(mc_samples=10).surrogate(
        ...     OneHotCategorical(logits=theta), lambda z: z @ torch.arange(4.0), num_samples=2,
        ...     generator=torch.Generator().manual_seed(0))
        >>> torch.autograd.grad(loss, theta)[0].shape
        torch.Size([4])
    """

    straight_through = True
    info = EstimatorInfo(
        name="gumbel-rao",
        description="Straight-through Gumbel-softmax with the relaxed sample averaged over K "
        "Gumbel draws given the hard sample.",
        families=("bernoulli", "categorical"),
        unbiased=False,
        pathwise=True,
        needs_relaxable=True,
        options=(TEMPERATURE, MC_SAMPLES),
        references="Paulus, Maddison & Krause 2021",
    )

    def noisy_keys(self, dist: Distribution, num_samples: int,
                   generator: torch.Generator) -> Tensor:
        """``[K, S, *batch, *event]``: entry 0 the noisy logits of the sample (as
        ``st-gumbel-softmax`` draws them), entries 1.. the standard noise (logistic for a
        Bernoulli, log Exp(1) for a categorical) that ``carrier`` conditions on the hard sample.
        One draw, laid out sample by sample and replicate by replicate, so that a batch of
        replicates reads the generator's stream in the order a loop of them would."""
        family = family_of(dist)
        logits = base_distribution(dist).logits
        u = noise.per_replicate_uniforms(dist, num_samples, self.mc_samples, generator,
                                         like=logits)
        u = u.reshape((self.mc_samples, num_samples) + logits.shape)
        first = noise.logistic_of(u[0], like=logits) if family == "bernoulli" else \
            noise.gumbel_of(u[0], like=logits)
        rest = noise.logistic_of(u[1:], like=logits) if family == "bernoulli" else \
            noise.log_exponential_of(u[1:], like=logits)
        return torch.cat([(logits + first).unsqueeze(0), rest])

    def harden(self, dist: Distribution, keys: Tensor) -> Tensor:
        return super().harden(dist, keys[0])

    def soften(self, dist: Distribution, keys: Tensor) -> Tensor:
        return super().soften(dist, keys[0])

    def pass_elements(self, dist: Distribution, num_samples: int) -> int:
        """K noise draws and relaxed samples per sample."""
        return super().pass_elements(dist, num_samples * self.mc_samples)

    def carrier(self, dist: Distribution, keys: Tensor, hard: Tensor,
                generator: torch.Generator) -> Tensor:
        own = self.soften(dist, keys)
        if self.mc_samples == 1:
            return own
        logits = base_distribution(dist).logits
        theta, tau = logits.detach(), self.temperature
        if family_of(dist) == "bernoulli":
            offset = conditional_logistic(theta, hard, keys[1:].detach())  # ℓ_k, no gradient
            others = torch.sigmoid((logits + offset) / tau)
        else:
            log_probs = torch.log_softmax(theta, dim=-1)
            offset = conditional_gumbel(log_probs, hard, keys[1:].detach()) - log_probs
            others = torch.softmax((logits + offset) / tau, dim=-1)
        return (own + others.sum(0)) / self.mc_samples


@register
class ReinMax(GumbelRelaxation):
    """ReinMax (Liu et al. 2023): the hard sample D forward; backward through

        2 π₁ − ½ π₀,    π₀ = softmax(θ),    π₁ = (D + softmax(θ / τ)) / 2,

    with π₁'s Jacobian taken as the softmax Jacobian diag(π₁) − π₁π₁ᵀ in θ (Heun's method for
    the integral behind straight-through: second-order accurate where ST is first-order). The
    gradient is 2 (diag(π₁) − π₁π₁ᵀ) ∇f(D) − ½ (diag(π₀) − π₀π₀ᵀ) ∇f(D); a Bernoulli is the
    two-class case with logits [0, θ].

    Example:
        >>> import torch
        >>> from torch.distributions import OneHotCategorical
        >>> theta = torch.zeros(3, requires_grad=True)
        >>> loss = ReinMax().surrogate(OneHotCategorical(logits=theta), lambda z: z[..., 0],
        ...                            num_samples=1, generator=torch.Generator().manual_seed(0))
        >>> torch.autograd.grad(loss, theta)[0].sum().abs() < 1e-7  # softmax gradients sum to 0
        tensor(True)
    """

    straight_through = True
    info = EstimatorInfo(
        name="reinmax",
        description="Straight-through with a second-order (Heun) backward: 2·π₁ − π₀/2, "
        "π₁ = (D + softmax(θ/τ))/2.",
        families=("bernoulli", "categorical"),
        unbiased=False,
        pathwise=True,
        needs_relaxable=True,
        options=(Option("temperature", 1.0, check=positive,
                        doc="τ > 0 in π₁ = (D + softmax(θ/τ))/2 (the paper's default 1.0)"),),
        references="Liu et al. 2023",
    )

    def carrier(self, dist: Distribution, keys: Tensor, hard: Tensor,
                generator: torch.Generator) -> Tensor:
        tau = self.temperature

        def heun(logits: Tensor, one_hot: Tensor) -> Tensor:
            pi0 = torch.softmax(logits, dim=-1)
            pi1 = (one_hot + torch.softmax(logits.detach() / tau, dim=-1)) / 2
            return 2 * _lin_softmax(pi1, logits) - pi0 / 2

        return _categorical_carrier(dist, hard, heun)


@register
class GST(GumbelRelaxation):
    """Gapped straight-through, GST-1.0 (Fan et al. 2022): the hard sample D forward; backward
    through softmax(m / τ), where the logits m are θ moved, without gradient, so that D leads
    every other class by at least ``gap``:

        m_D = max_j θ_j,    m_i = min(θ_i, max_j θ_j − gap)  (i ≠ D),

    and the gradient flows through θ in m = θ + (m − θ).detach(). A Bernoulli is the two-class
    case with logits [0, θ].

    Example:
        >>> import torch
        >>> from torch.distributions import Bernoulli
        >>> theta = torch.zeros(3, requires_grad=True)
        >>> loss = GST().surrogate(Bernoulli(logits=theta), lambda z: z, num_samples=2,
        ...                        generator=torch.Generator().manual_seed(0))
        >>> torch.autograd.grad(loss.sum(), theta)[0].shape
        torch.Size([3])
    """

    straight_through = True
    info = EstimatorInfo(
        name="gst",
        description="Gapped straight-through: softmax of logits moved so that the sampled "
        "class leads by a gap, backward.",
        families=("bernoulli", "categorical"),
        unbiased=False,
        pathwise=True,
        needs_relaxable=True,
        options=(
            Option("gap", 1.0, check=positive, doc="the lead κ > 0 of the sampled class"),
            Option("temperature", 1.0, check=positive, doc="relaxation temperature τ > 0"),
        ),
        references="Fan et al. 2022",
    )

    def carrier(self, dist: Distribution, keys: Tensor, hard: Tensor,
                generator: torch.Generator) -> Tensor:
        gap, tau = self.gap, self.temperature

        def gapped(logits: Tensor, one_hot: Tensor) -> Tensor:
            theta = logits.detach()
            top = theta.max(-1, keepdim=True).values
            moved = torch.where(one_hot > 0, top, torch.minimum(theta, top - gap))
            return torch.softmax((logits + (moved - theta)) / tau, dim=-1)

        return _categorical_carrier(dist, hard, gapped)
