"""A neural topic model with Poisson latents on the Reuters counts (Joo et al. 2020's setting).

Each document d is a vector of word counts x_d over V words (the 395 × 4,258 Reuters
bag-of-words shipped with the ``lda`` package; 316 training and 79 test documents). Its
``topics`` latent counts are Poisson, z_dk ~ Poisson(exp θ_dk) with a Poisson(λ₀) prior, and
the words are drawn from a softmax over the vocabulary whose logits are linear in the topics'
(log) counts, as in the neural topic models of Miao et al. 2016:

    log p(x_d | z_d) = Σ_v x_dv log π_v(z_d),   π(z) = softmax(W log(1 + z) + b),

so topic k's column of W lifts the words it is about, more as its count grows (b starts at
the training set's log word frequencies, so that training learns topics and not the
unigram distribution). An encoder
(one hidden layer on log(1 + x)) gives θ_d = log-rates of q(z | x_d); the loss of a document
is its negative ELBO, with the KL to the prior in closed form as in ``vae-poisson``:

    −ELBO(x_d) = E_q[−log p(x_d | z)] + KL(Poisson(e^θ_d) ‖ Poisson(λ₀)).

The test metric is the perplexity bound of Miao et al. 2016, exp((1/D) Σ_d −ELBO(x_d) / N_d)
over the D test documents of N_d words, the ELBO estimated with 64 samples of q. As a
problem θ is the encoder's log-rates for a fixed minibatch of ``batch`` test documents at the
checkpoint (trained with GenGS); the expectation has no closed form, so the harness's unbiased
reference gradient stands in.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from estimators.registry import Option, at_least, positive
from problems.base import ProblemInfo, register
from problems.real.task import mlp
from problems.real.vae import VAEPoisson


@register
class TopicPoisson(VAEPoisson):
    info = ProblemInfo(
        name="topic-poisson",
        description="Neural topic model with Poisson topic counts on Reuters; θ: encoder "
        "log-rates of a fixed test minibatch of documents; reference gradient.",
        family="count", exact=False, relaxable=True, enumerable=False,
        options=(
            Option("dataset", "reuters", choices=("reuters",),
                   doc="the Reuters document-term counts of the lda package"),
            Option("topics", 8, doc="latent topic counts per document", check=at_least(1)),
            Option("hidden", 64, doc="hidden units of the encoder", check=at_least(1)),
            Option("prior_rate", 1.0, doc="rate λ₀ of the Poisson prior", check=positive),
            Option("batch", 4, doc="test documents in the fixed minibatch whose θ is studied",
                   check=at_least(1)),
            Option("train_steps", 300, doc="Adam steps that train the checkpoint",
                   check=at_least(0)),
            Option("seed", 0, doc="seed of the networks' initialisation and of training",
                   check=at_least(0)),
        ),
        references="Miao et al. 2016; Joo et al. 2020",
    )

    @property
    def latent(self) -> int:  # the VAE machinery's name for the number of latents
        return self.topics

    def inputs(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return x  # word counts, as they are

    def encode(self, model: nn.Module, x: Tensor) -> Tensor:
        return self.shape_logits(model["encoder"](torch.log1p(x)))

    def new_model(self, generator: torch.Generator) -> nn.Module:
        counts = self.data().train.x
        words = counts.shape[1]
        decoder = mlp([self.topics, words], generator)  # W and b
        with torch.no_grad():  # b: the training set's smoothed log word frequencies
            frequency = counts.sum(0) + 1
            decoder[0].bias.copy_(torch.log(frequency / frequency.sum()))
        return nn.ModuleDict({
            "encoder": mlp([words, self.hidden, self.topics], generator),
            "decoder": decoder,
        })

    def reconstruction(self, model: nn.Module, x: Tensor, z: Tensor) -> Tensor:
        """−log p(x_b | z_b) = −Σ_v x_bv log π_v(z_b), ``[*, B]``."""
        log_pi = torch.log_softmax(self.decode(model, z), dim=-1)
        return -(x * log_pi).sum(-1)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        splits = self.data()
        metrics = {}
        for name, counts in (("test", splits.test.x), ("train", splits.train.x)):
            elbo, source = self.negative_elbos(model, counts)  # Monte Carlo: no finite support
            words = counts.sum(-1).to(elbo)
            metrics[f"{name}_perplexity"] = math.exp(float((elbo / words).mean()))
            metrics[f"{name}_negative_elbo"] = float(elbo.mean())
        return {"objective": metrics["test_perplexity"],
                "objective_source": f"test perplexity bound exp(mean_d −ELBO_d / N_d), {source}",
                **metrics}
