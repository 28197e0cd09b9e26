"""REBAR (Tucker et al. 2017) and RELAX (Grathwohl et al. 2018): REINFORCE with a control
variate built on the relaxation, unbiased.

With z the relaxed variable (logits + logistic noise for a Bernoulli, log p + Gumbel noise for
a categorical), b = H(z) the hard sample, z̃ ~ p(z | b) drawn by conditional
reparameterisation (``conditional_logistic``, ``conditional_gumbel``: differentiable in θ with
the noise held) and a control variate c,

    ĝ = [f(b) − c(z̃)] ∇log p(b) + ∇c(z) − ∇c(z̃).

E[c(z̃) ∇log p(b) + ∇c(z̃)] = ∇E[c(z)] (Tucker et al. 2017, their eq. 4), so the last three
terms cancel in expectation for any c and ĝ is unbiased. REBAR: c(z) = η f(σ_λ(z)), σ_λ the
sigmoid (softmax) at temperature λ. RELAX: c_φ(z) = η f(σ_λ(z)) + r_ρ(σ_λ(z)), φ = (η, log λ,
ρ) with r_ρ a one-hidden-layer tanh network on the relaxed sample (summed over its units:
one image's latents, say), trained to minimise the estimate's variance (below). Each sample evaluates f three times, on b, σ_λ(z)
and σ_λ(z̃), in one call; ``objective_evaluations`` is 3 per sample.

**Estimators that learn** (``EstimatorInfo.learns``). RELAX's φ is state the harness trains,
never the estimator: ``state_parameters()`` are the tensors, ``with_fresh_state(dist,
generator)`` a copy with φ initialised for distributions shaped like ``dist``. The surrogate
keeps φ in its graph, so ∂/∂φ E[‖ĝ‖²] (E[ĝ] does not depend on φ, so this is the variance's
gradient) is a double backward the harness takes (``harness.adapt``): in a training run every
step, with Adam at ``state_learning_rate``; in a measurement cell ``adapt_steps`` steps at θ
from a seed derived from the cell's, then φ is frozen while the replicates are drawn. An
estimator used before any of that gets φ from a fixed seed (0) on first use: the network's
output layer starts at zero, so RELAX starts as REBAR with η and λ at their options.

Example:
    >>> import torch
    >>> from torch.distributions import Bernoulli, Independent
    >>> theta = torch.zeros(2, requires_grad=True)
    >>> dist = Independent(Bernoulli(logits=theta), 1)
    >>> loss = Rebar().surrogate(dist, lambda z: ((z - 0.4) ** 2).sum(-1), num_samples=4,
    ...                          generator=torch.Generator().manual_seed(0))
    >>> torch.autograd.grad(loss, theta)[0].shape
    torch.Size([2])
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor
from torch.distributions import Distribution

from estimators import noise
from estimators.base import Estimator, EstimatorInfo, Objective, register
from estimators.errors import UserError
from estimators.families import base_distribution, family_of, one_hot_argmax
from estimators.registry import Option, at_least, finite, positive
from estimators.straight_through import conditional_gumbel, conditional_logistic


OPTIONS = (
    Option("temperature", 0.5, check=positive, doc="initial λ > 0 of σ_λ (learned)"),
    Option("eta", 1.0, check=finite, doc="initial η, the scale of η f(σ_λ(z)) (learned)"),
    Option("adapt_steps", 300, check=at_least(0),
           doc="steps of φ on the variance at θ before a measurement cell's replicates "
               "(0: η and λ stay at their options)"),
    Option("state_learning_rate", 0.003, check=positive,
           doc="Adam's learning rate for φ (adaptation and training runs)"),
)


def relaxed_pair(dist: Distribution, num_samples: int, generator: torch.Generator
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """(b, z, z̃) ``[S, *batch, *event]``: the hard sample, the relaxed variable it comes from
    and one drawn given b, both differentiable in the logits with the noise held."""
    logits = base_distribution(dist).logits
    u = noise.per_replicate_uniforms(dist, num_samples, 2, generator, like=logits)
    u = u.reshape((2, num_samples) + logits.shape)
    if family_of(dist) == "bernoulli":
        z = logits + noise.logistic_of(u[0], like=logits)
        b = (z.detach() > 0).to(logits.dtype)
        return b, z, logits + conditional_logistic(logits, b, noise.logistic_of(u[1], like=logits))
    log_p = torch.log_softmax(logits, dim=-1)
    z = log_p + noise.gumbel_of(u[0], like=logits)
    b = one_hot_argmax(z.detach())
    return b, z, conditional_gumbel(log_p, b, noise.log_exponential_of(u[1], like=logits))


def soften(dist: Distribution, z: Tensor, tau: Tensor | float) -> Tensor:
    """σ_λ(z): the sigmoid (Bernoulli) or softmax (categorical) of z / λ."""
    if family_of(dist) == "bernoulli":
        return torch.sigmoid(z / tau)
    return torch.softmax(z / tau, dim=-1)


@register
class Rebar(Estimator):
    """REBAR (Tucker et al. 2017): c(z) = η f(σ_λ(z)), φ = (η, log λ) learned on the
    estimate's variance by the harness as in the paper; see the module docstring."""

    info = EstimatorInfo(
        name="rebar",
        description="REINFORCE with the control variate η f(σ_λ(z)) on the relaxed sample and "
        "its conditional twin, η and λ learned on the variance: unbiased.",
        families=("bernoulli", "categorical"),
        unbiased=True,
        pathwise=False,
        needs_relaxable=True,
        learns=True,
        options=OPTIONS,
        log_prob="dist.log_prob(b) of the hard sample",
        references="Tucker et al. 2017",
        evaluations_per_sample=3,
    )

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.state: dict[str, Tensor] | None = None

    # -- the state φ ------------------------------------------------------------------------

    def initial_state(self, dist: Distribution, generator: torch.Generator) -> dict[str, Tensor]:
        device = base_distribution(dist).logits.device
        return {"eta": torch.tensor(self.eta, dtype=torch.float64, device=device),
                "log_temperature": torch.tensor(math.log(self.temperature), dtype=torch.float64,
                                                device=device)}

    def fits(self, dist: Distribution) -> bool:
        """Whether the current φ is shaped for ``dist``."""
        return self.state is not None

    def with_fresh_state(self, dist: Distribution, generator: torch.Generator) -> Rebar:
        fresh = copy.copy(self)
        fresh.state = {name: value.requires_grad_(True)
                       for name, value in self.initial_state(dist, generator).items()}
        return fresh

    def state_parameters(self) -> list[Tensor]:
        return [] if self.state is None else list(self.state.values())

    def state_for(self, dist: Distribution) -> dict[str, Tensor]:
        """φ in the distribution's dtype; first initialised from seed 0 if the harness has not
        given a fresh one."""
        logits = base_distribution(dist).logits
        if self.state is None:
            self.state = self.with_fresh_state(
                dist, torch.Generator(logits.device).manual_seed(0)).state
        elif not self.fits(dist):
            raise UserError(
                f"{self.spec}: its state was made for another shape of variable than "
                f"{type(base_distribution(dist)).__name__} with event shape "
                f"{tuple(dist.event_shape)}; make one with with_fresh_state(dist, generator)"
            )
        return {name: value.to(logits) for name, value in self.state.items()}

    def diagnostics(self, dist: Distribution) -> dict:
        """η and λ as the state has them (after adaptation, in a measurement cell)."""
        state = self.state_for(dist)
        return {"eta": float(state["eta"]), "temperature": float(state["log_temperature"].exp())}

    # -- the estimate -------------------------------------------------------------------------

    def network(self, state: dict[str, Tensor], relaxed: Tensor, dist: Distribution
                ) -> Tensor | float:
        """The learned part of the control variate: none in REBAR."""
        return 0.0

    def pass_elements(self, dist: Distribution, num_samples: int) -> int:
        return super().pass_elements(dist, 3 * num_samples)  # b, σ(z), σ(z̃) and their noise

    def surrogate(
        self, dist: Distribution, f: Objective, *, num_samples: int, generator: torch.Generator
    ) -> Tensor:
        self.check_inputs(dist, num_samples)
        state = self.state_for(dist)
        b, z, z_tilde = relaxed_pair(dist, num_samples, generator)
        tau = state["log_temperature"].exp()
        relaxed_z, relaxed_zt = soften(dist, z, tau), soften(dist, z_tilde, tau)
        values = f(torch.cat([b, relaxed_z, relaxed_zt]))  # [3S, *batch]
        f_b, f_z, f_zt = values.split(num_samples)
        c_z = state["eta"] * f_z + self.network(state, relaxed_z, dist)
        c_zt = state["eta"] * f_zt + self.network(state, relaxed_zt, dist)
        log_p = dist.log_prob(b)  # [S, *batch]
        # The weight keeps c(z̃)'s graph: (log p − log p) is 0, so θ's gradient is unchanged,
        # and φ's gradient of ‖ĝ‖² sees ∂c(z̃)/∂φ through the score term.
        weight = f_b.detach() - c_zt
        correction = c_z - c_zt
        return (f_b + weight * (log_p - log_p.detach())
                + correction - correction.detach()).mean(0)


def unit_dims(dist: Distribution) -> int:
    """How many trailing event dimensions make one input of RELAX's network: the last one for
    Bernoulli variables (a vector of them: the toy's d, a VAE image's latents), the last two
    for categorical ones (variables × classes), as far as the event has them."""
    wanted = 1 if family_of(dist) == "bernoulli" else 2
    return min(wanted, len(dist.event_shape))


@register
class Relax(Rebar):
    """RELAX (Grathwohl et al. 2018): c_φ(z) = η f(σ_λ(z)) + Σ_units r_ρ(σ_λ(z)_unit), r_ρ a
    one-hidden-layer tanh network whose output layer starts at zero, φ = (η, log λ, ρ). A unit
    is the last event dimension (Bernoulli) or the last two (categorical): one image's latents
    in a VAE, the whole vector on a toy, so φ does not depend on the minibatch size; see the
    module docstring."""

    info = EstimatorInfo(
        name="relax",
        description="REINFORCE with a learned control variate η f(σ_λ(z)) + r_φ(σ_λ(z)) and its "
        "conditional twin; φ trained on the estimate's variance.",
        families=("bernoulli", "categorical"),
        unbiased=True,
        pathwise=False,
        needs_relaxable=True,
        learns=True,
        options=OPTIONS[:2] + (Option("hidden", 10, check=at_least(1),
                                      doc="units of r_φ's hidden layer"),) + OPTIONS[2:],
        log_prob="dist.log_prob(b) of the hard sample",
        references="Grathwohl et al. 2018",
        evaluations_per_sample=3,
    )

    @staticmethod
    def inputs(dist: Distribution) -> int:
        dims = unit_dims(dist)
        return math.prod(dist.event_shape[len(dist.event_shape) - dims:]) if dims else 1

    def initial_state(self, dist: Distribution, generator: torch.Generator) -> dict[str, Tensor]:
        device = base_distribution(dist).logits.device
        inputs = self.inputs(dist)

        def zeros(*shape):
            return torch.zeros(shape, dtype=torch.float64, device=device)

        return {**super().initial_state(dist, generator),
                "w1": torch.randn(inputs, self.hidden, generator=generator, dtype=torch.float64,
                                  device=device) / math.sqrt(inputs),
                "b1": zeros(self.hidden), "w2": zeros(self.hidden), "b2": zeros()}

    def fits(self, dist: Distribution) -> bool:
        return self.state is not None and self.state["w1"].shape[0] == self.inputs(dist)

    def network(self, state: dict[str, Tensor], relaxed: Tensor, dist: Distribution) -> Tensor:
        events, dims = len(dist.event_shape), unit_dims(dist)
        units = (relaxed.reshape(relaxed.shape[: relaxed.dim() - dims] + (-1,)) if dims
                 else relaxed.unsqueeze(-1))  # [S, *batch, *leading event, inputs]
        out = torch.tanh(units @ state["w1"] + state["b1"]) @ state["w2"] + state["b2"]
        leading = events - dims  # sum over the units of one sample
        return out.sum(tuple(range(-leading, 0))) if leading else out
