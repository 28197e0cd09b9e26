"""Variational autoencoders with discrete latents on real digits.

An encoder maps an image x to the parameters θ of q(z | x), a decoder maps a latent z to
Bernoulli pixel logits; the loss of one image is the negative ELBO

    −ELBO(x) = E_{q(z|x)}[−log p(x | z)] + KL(q(z | x) ‖ p(z)),

with the KL in closed form (prior: Bernoulli(1/2), uniform categorical, Poisson(λ₀)), so the
estimator under study handles the reconstruction term and the KL's gradient is exact. Pixels
are binarised at 1/2 (``binarize=fixed``), or drawn as Bernoulli variables of their
intensity (``binarize=dynamic``, as Dong et al. 2020 train): afresh for every training
minibatch, and for evaluation once, from a fixed seed on the CPU, so every evaluation and
every device sees the same test images. The encoder and the decoder have one hidden layer of
``hidden`` ReLU units, or none (``hidden=0``: linear, Dong et al. 2020's linear model). As a
problem (see ``problems.real.task``) θ is the encoder's output on a
fixed minibatch of ``batch`` test images and

    f(z) = Σ_b [−log p(x_b | z_b)] + Σ_b KL(q_θ(z_b | x_b) ‖ p),   z = (z_1, .., z_batch).

The decoder accepts relaxed latents (probabilities, relaxed one-hots, relaxed counts).

- ``vae-bernoulli``: ``latent`` independent Bernoulli latents (Kingma & Welling 2014's model
  with the discrete latents of Tucker et al. 2017 and Grathwohl et al. 2018). E f is exact by
  enumerating the 2^latent latent vectors of each image when latent ≤ 12.
- ``vae-categorical``: ``latent`` categorical variables of ``classes`` classes (Jang et al.
  2017); exact when classes^latent ≤ 4096.
- ``vae-poisson``: ``latent`` Poisson latents with rates exp θ (Joo et al. 2020's setting); no
  exact expectation: the harness's unbiased reference gradient stands in.

The checkpoint is trained with the relaxation of each family (Gumbel-softmax at τ = 0.5,
GenGS for counts), a minibatch of ``train_batch`` training images per step (64 by default),
as are the harness's training runs.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Bernoulli, Distribution, Independent, OneHotCategorical, Poisson

from estimators.exact import MAX_SUPPORT
from estimators.families import draw
from estimators.registry import Option, at_least, positive
from problems.base import ProblemInfo, register
from problems.real import data
from problems.real.task import Task, minibatch, mlp, placement

TRAIN_BATCH = 64
MAX_EXACT_SUPPORT = 4096
MONTE_CARLO_SAMPLES = 64
BINARIZE_SEED = 0  # the one draw of the dynamically binarised images that evaluation sees


def _options(latent: int, extra: tuple[Option, ...] = ()) -> tuple[Option, ...]:
    return (
        Option("dataset", "digits", doc="digits, mnist, or a path to an .npz file or a "
               "directory of IDX files (images are binarised at 1/2)"),
        Option("latent", latent, doc="number of latent variables", check=at_least(1)),
        *extra,
        Option("hidden", 64, doc="hidden units of the encoder's and the decoder's one hidden "
               "layer; 0: linear encoder and decoder", check=at_least(0)),
        Option("batch", 4, doc="test images in the fixed minibatch whose θ is studied",
               check=at_least(1)),
        Option("train_steps", 500, doc="Adam steps that train the checkpoint", check=at_least(0)),
        Option("seed", 0, doc="seed of the networks' initialisation and of training",
               check=at_least(0)),
        Option("binarize", "fixed", choices=("fixed", "dynamic"), doc="fixed: pixels on above "
               "1/2; dynamic: pixels drawn ~ Bernoulli(intensity), afresh for each training "
               "minibatch"),
        Option("train_batch", TRAIN_BATCH, doc="training images per step (checkpoint and "
               "training runs)", check=at_least(1)),
    )


class VAE(Task):
    """Shared parts: networks, the negative ELBO, training and evaluation."""

    parameter_names = ("logits",)
    measurement_options = ("batch",)
    binarize = "fixed"  # for subclasses whose options lack them (the topic model)
    train_batch = TRAIN_BATCH

    def __init__(self, **options) -> None:
        super().__init__(**options)
        joint = self.joint_support_size()
        self.info = dataclasses.replace(self.info, exact=self.support() is not None,
                                        enumerable=joint is not None and joint <= MAX_SUPPORT)

    # -- the latent family -----------------------------------------------------------------

    def code_size(self) -> int:
        """Encoder outputs (and decoder inputs) per image."""
        return self.latent

    def shape_logits(self, flat: Tensor) -> Tensor:
        return flat

    def latent_distribution(self, logits: Tensor) -> Distribution:
        raise NotImplementedError

    def kl(self, logits: Tensor) -> Tensor:
        """KL(q ‖ p) per image, ``[*batch, B]``."""
        raise NotImplementedError

    def decoder_input(self, z: Tensor) -> Tensor:
        return z

    def support(self) -> Tensor | None:
        """Every latent value of one image ``[N, *event]``, or None when too many."""
        return None

    def log_q(self, logits: Tensor, support: Tensor) -> Tensor:
        """log q(z_n | x_b) for every support point, ``[*batch, B, N]``."""
        raise NotImplementedError

    # -- networks and the objective ------------------------------------------------------------

    def inputs(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """What the model sees of the data: images binarised at 1/2, or (``binarize=dynamic``)
        pixels drawn ~ Bernoulli(intensity) from ``generator``, which lives on ``x``'s device;
        without one, the fixed draw that evaluation sees (seeded, on the CPU)."""
        if self.binarize == "fixed":
            return data.binarize(x)
        if generator is None:
            fixed = torch.Generator().manual_seed(BINARIZE_SEED)
            return torch.bernoulli(x.cpu(), generator=fixed).to(x.device)
        return torch.bernoulli(x, generator=generator)

    def encode(self, model: nn.Module, x: Tensor) -> Tensor:
        """θ of q(z | x) for inputs ``x`` ``[B, D]``."""
        return self.shape_logits(model["encoder"](x))

    def new_model(self, generator: torch.Generator) -> nn.Module:
        pixels = self.data().train.x.shape[1]
        hidden = [self.hidden] if self.hidden else []  # none: linear
        return nn.ModuleDict({
            "encoder": mlp([pixels, *hidden, self.code_size()], generator),
            "decoder": mlp([self.code_size(), *hidden, pixels], generator),
        })

    def decode(self, model: nn.Module, z: Tensor) -> Tensor:
        z = self.decoder_input(z)
        return model["decoder"](z.reshape(*z.shape[: z.dim() - self.event_dims()], -1))

    def event_dims(self) -> int:
        return 1

    def reconstruction(self, model: nn.Module, x: Tensor, z: Tensor) -> Tensor:
        """−log p(x_b | z_b) summed over pixels, ``[*, B]``: Σ_d softplus(l_d) − x_d l_d."""
        pixel_logits = self.decode(model, z)
        return (F.softplus(pixel_logits) - x * pixel_logits).sum(-1)

    def negative_elbo(self, model: nn.Module, x: Tensor, logits: Tensor, z: Tensor) -> Tensor:
        """``[S, *batch]``: Σ_b reconstruction + Σ_b KL."""
        return (self.reconstruction(model, x, z).sum(-1)
                + self.kl(logits).sum(-1)).to(z.dtype)

    def bind(self, model: nn.Module) -> None:
        images = self.inputs(self.data().test.x[: self.batch])
        self.freeze(model)
        device, dtype = placement(model)
        self.x = images.to(device, dtype)
        with torch.no_grad():
            logits = self.encode(model, self.x)
        self.logits = logits.detach().clone().requires_grad_(True)

    def joint_support_size(self) -> int | None:
        return None

    def sample_elements(self) -> int:
        """Per sample: the decoder's hidden layer and outputs for the fixed minibatch, each held
        four times over (pre-activation, activation or loss term, and their gradients)."""
        return 4 * self.batch * (self.hidden + self.data().train.x.shape[1])

    def distribution(self) -> Distribution:
        return self.latent_distribution(self.logits)

    def objective(self, z: Tensor) -> Tensor:
        return self.negative_elbo(self.model, self.x, self.logits, z)

    def expected_reconstruction(self, model: nn.Module, x: Tensor, logits: Tensor,
                                support: Tensor) -> Tensor:
        """Σ_n q(z_n | x_b) [−log p(x_b | z_n)], ``[*batch, B]``, exact."""
        pixel_logits = self.decode(model, support)  # [N, D]
        constant = F.softplus(pixel_logits).sum(-1)  # [N]
        recon = constant - x.to(pixel_logits.dtype) @ pixel_logits.T  # [B, N]
        return (self.log_q(logits, support).exp() * recon).sum(-1)

    def expected_objective(self) -> Tensor:
        support = self.support()
        if support is None:
            raise NotImplementedError(f"{self.spec}: the latent space is too large to enumerate")
        support = support.to(self.logits)
        value = self.expected_reconstruction(self.model, self.x, self.logits, support)
        return (value + self.kl(self.logits)).sum(-1)

    # -- training and evaluation ---------------------------------------------------------------

    def training_loss(self, model: nn.Module, estimator, num_samples: int,
                      generator: torch.Generator) -> Tensor:
        device, dtype = placement(model)
        train = self.data(device).train
        index = minibatch(self.train_batch, len(train), generator, device)
        x = self.inputs(train.x[index], generator).to(dtype)
        logits = self.encode(model, x)
        surrogate = estimator.surrogate(
            self.latent_distribution(logits), lambda z: self.negative_elbo(model, x, logits, z),
            num_samples=num_samples, generator=generator)
        return surrogate / x.shape[0]

    def negative_elbos(self, model: nn.Module, items: Tensor) -> tuple[Tensor, str]:
        """−ELBO of each item ``[N]`` (nats) and how it was computed: exact by enumeration,
        else Monte Carlo (64 samples of q)."""
        device, dtype = placement(model)
        x = self.inputs(items.to(device)).to(dtype)
        logits = self.encode(model, x)
        support = self.support()
        if support is not None:
            recon = self.expected_reconstruction(model, x, logits, support.to(logits))
            return recon + self.kl(logits), "exact"
        generator = torch.Generator(device).manual_seed(0)
        z = draw(self.latent_distribution(logits), MONTE_CARLO_SAMPLES, generator)
        recon = self.reconstruction(model, x, z).mean(0)
        return recon + self.kl(logits), f"monte-carlo ({MONTE_CARLO_SAMPLES})"

    def mean_negative_elbo(self, model: nn.Module, images: Tensor) -> tuple[float, str]:
        """Mean −ELBO per image (nats), and how it was computed."""
        values, source = self.negative_elbos(model, images)
        return float(values.mean()), source

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        splits = self.data()
        test, source = self.mean_negative_elbo(model, splits.test.x)
        train, _ = self.mean_negative_elbo(model, splits.train.x[:1000])
        return {"objective": test, "objective_source": f"test negative ELBO per image, {source}",
                "test_negative_elbo": test, "train_negative_elbo": train}


@register
class VAEBernoulli(VAE):
    info = ProblemInfo(
        name="vae-bernoulli",
        description="VAE with Bernoulli latents on binarised digits; θ: encoder logits of a "
        "fixed test minibatch; exact for latent <= 12.",
        family="bernoulli", exact=True, relaxable=True, enumerable=False,
        options=_options(8),
        references="Kingma & Welling 2014; Tucker et al. 2017; Grathwohl et al. 2018",
    )
    checkpoint_estimator = "gumbel-softmax:temperature=0.5"

    def latent_distribution(self, logits: Tensor) -> Distribution:
        return Independent(Bernoulli(logits=logits), 2)  # event [B, latent]

    def kl(self, logits: Tensor) -> Tensor:
        q = torch.sigmoid(logits)
        return (q * F.logsigmoid(logits) + (1 - q) * F.logsigmoid(-logits)).sum(-1) + (
            self.latent * math.log(2))

    def support(self) -> Tensor | None:
        if self.latent > 12:
            return None
        return torch.cartesian_prod(*[torch.tensor([0.0, 1.0])] * self.latent).reshape(
            -1, self.latent)

    def log_q(self, logits: Tensor, support: Tensor) -> Tensor:
        on, off = F.logsigmoid(logits), F.logsigmoid(-logits)  # [*batch, B, L]
        return on @ support.T + off @ (1 - support).T  # [*batch, B, N]

    def joint_support_size(self) -> int | None:
        return 2 ** (self.latent * self.batch) if self.latent * self.batch <= 16 else None


@register
class VAECategorical(VAE):
    info = ProblemInfo(
        name="vae-categorical",
        description="VAE with categorical latents on binarised digits; θ: encoder logits of a "
        "fixed test minibatch; exact when classes^latent <= 4096.",
        family="categorical", exact=True, relaxable=True, enumerable=False,
        options=_options(4, (Option("classes", 8, doc="classes of each latent variable",
                                          check=at_least(2)),)),
        references="Jang et al. 2017; Maddison et al. 2017",
    )
    checkpoint_estimator = "gumbel-softmax:temperature=0.5"

    def code_size(self) -> int:
        return self.latent * self.classes

    def shape_logits(self, flat: Tensor) -> Tensor:
        return flat.reshape(*flat.shape[:-1], self.latent, self.classes)

    def event_dims(self) -> int:
        return 2

    def latent_distribution(self, logits: Tensor) -> Distribution:
        return Independent(OneHotCategorical(logits=logits), 2)  # event [B, latent, classes]

    def kl(self, logits: Tensor) -> Tensor:
        log_q = torch.log_softmax(logits, -1)
        return (log_q.exp() * log_q).sum((-2, -1)) + self.latent * math.log(self.classes)

    def support(self) -> Tensor | None:
        if self.classes**self.latent > MAX_EXACT_SUPPORT:
            return None
        codes = torch.tensor(list(itertools.product(range(self.classes), repeat=self.latent)))
        return F.one_hot(codes, self.classes).double()  # [N, latent, classes]

    def log_q(self, logits: Tensor, support: Tensor) -> Tensor:
        return torch.einsum("...blk,nlk->...bn", torch.log_softmax(logits, -1), support)


@register
class VAEPoisson(VAE):
    info = ProblemInfo(
        name="vae-poisson",
        description="VAE with Poisson latents on binarised digits; θ: encoder log-rates of a "
        "fixed test minibatch; reference gradient.",
        family="count", exact=False, relaxable=True, enumerable=False,
        options=_options(8, (Option("prior_rate", 1.0, doc="rate λ₀ of the Poisson prior",
                                         check=positive),)),
        references="Joo et al. 2020",
    )
    checkpoint_estimator = "gengs:temperature=0.5"

    def shape_logits(self, flat: Tensor) -> Tensor:
        return flat.clamp(-6.0, 4.0)  # rates in [e^-6, e^4]: bounded truncation for GenGS

    def latent_distribution(self, logits: Tensor) -> Distribution:
        return Independent(Poisson(torch.exp(logits)), 2)

    def decoder_input(self, z: Tensor) -> Tensor:
        return torch.log1p(z)

    def kl(self, logits: Tensor) -> Tensor:
        rate, prior = torch.exp(logits), self.prior_rate
        return (rate * (logits - math.log(prior)) - rate + prior).sum(-1)
