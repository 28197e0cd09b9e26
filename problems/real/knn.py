"""Deep stochastic k-nearest neighbours on real digits (Grover et al. 2019; Xie & Ermon 2019).

An embedding network e(·) (unit-length outputs) scores the n candidates of a query q by
closeness, θ_j = −s ‖e(x_q) − e(x_j)‖², and the k neighbours are a random k-subset z ~ Subset(θ, k)
(``family=subset``), or the first k rows of a Plackett-Luce ranking P ~ PlackettLuce(θ)
(``family=permutation``, for NeuralSort). The loss is the fraction of chosen neighbours whose
label differs from the query's:

    f(z) = 1 − (1/k) Σ_j z_j [y_j = y_q]           (subset)
    f(P) = 1 − (1/k) Σ_{i<k} Σ_j P_ij [y_j = y_q]   (permutation)

Training draws, each step, 32 training queries with n other training images as candidates;
the test metric is the accuracy of plain k-nearest-neighbour classification (majority vote of
the k nearest training images) on the learned embedding. As a problem θ is the score vector of
one test query (``example``) against n fixed training candidates (k of its label), at the
checkpoint; the
expectation is exact by enumeration for the subset family (C(n, k) subsets, n <= 16) and for
the permutation family when n <= 8.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution

from estimators.errors import SpecError
from estimators.plackett_luce import MAX_ENUMERATE_N, PlackettLuce
from estimators.registry import Option, at_least, positive
from estimators.exactk import ExactK
from estimators.subset import Subset
from problems.base import ProblemInfo, register
from problems.subsets import enumerable_subsets
from problems.real.task import Task, minibatch, mlp, placement

TRAIN_QUERIES = 32


@register
class KNNSubset(Task):
    info = ProblemInfo(
        name="knn-subset",
        description="Deep stochastic kNN on digits: θ: embedding scores of n candidates for one "
        "test query; f: share of the k chosen neighbours with another label; exact for n <= 16.",
        family="subset", exact=True, relaxable=True, enumerable=True,
        options=(
            Option("dataset", "digits", doc="digits, mnist, or a path to an .npz file or a "
                   "directory of IDX files"),
            Option("family", "subset", choices=("subset", "permutation"),
                   doc="subset: k-subset of the candidates (relaxed-topk); permutation: "
                   "Plackett-Luce ranking, first k rows (neuralsort)"),
            Option("distribution", "gumbel-topk", choices=("gumbel-topk", "exactk"),
                   doc="family=subset only: the k neighbours by Gumbel-top-k (Subset, the "
                       "subset family) or from the exact-k family p ∝ exp(θ·z) (ExactK)"),
            Option("n", 16, doc="candidates per query", check=at_least(2)),
            Option("k", 3, doc="neighbours", check=at_least(1)),
            Option("embedding", 16, doc="embedding dimension", check=at_least(1)),
            Option("hidden", 64, doc="hidden units of the embedding network", check=at_least(1)),
            Option("sharpness", 5.0, doc="s in θ_j = −s ‖e(x_q) − e(x_j)‖² (unit-length "
                   "embeddings, so θ lies in [−4s, 0])", check=positive),
            Option("example", 0, doc="index of the test query whose θ is studied",
                   check=at_least(0)),
            Option("train_steps", 300, doc="Adam steps that train the checkpoint",
                   check=at_least(0)),
            Option("seed", 0, doc="seed of the initialisation, of training and of the fixed "
                   "candidates", check=at_least(0)),
        ),
        references="Grover et al. 2019; Xie & Ermon 2019",
    )
    parameter_names = ("scores",)
    measurement_options = ("example",)

    def __init__(self, **options) -> None:
        super().__init__(**options)
        if self.k > self.n:
            raise SpecError(f"knn-subset needs k <= n, got n={self.n}, k={self.k}")
        if self.family == "subset":
            exact = enumerable_subsets(self.n, self.k)
        else:
            exact = self.n <= MAX_ENUMERATE_N
        if self.distribution_name() == "exactk" and self.family != "subset":
            raise SpecError("knn-subset: distribution=exactk is for family=subset")
        family = "exactk" if self.distribution_name() == "exactk" else self.family
        self.info = dataclasses.replace(self.info, family=family, exact=exact,
                                        enumerable=exact)

    def distribution_name(self) -> str:
        return self.options["distribution"]

    @property
    def checkpoint_estimator(self) -> str:  # type: ignore[override]
        if self.distribution_name() == "exactk":
            return "simple"
        if self.family == "subset":
            return "relaxed-topk:temperature=0.5"
        return "neuralsort:temperature=1.0"

    def new_model(self, generator: torch.Generator) -> nn.Module:
        pixels = self.data().train.x.shape[1]
        return mlp([pixels, self.hidden, self.embedding], generator)

    # -- the distribution and the loss, for any batch of queries --------------------------------

    def candidates_distribution(self, scores: Tensor) -> Distribution:
        if self.distribution_name() == "exactk":
            return ExactK(scores, self.k)
        if self.family == "subset":
            return Subset(scores, self.k)
        return PlackettLuce(scores)

    def loss(self, z: Tensor, match: Tensor) -> Tensor:
        """``[S, *batch]`` from z ``[S, *batch, n]`` (or ``[S, *batch, n, n]``), match ``[*, n]``."""
        if self.family == "permutation":
            z = z[..., : self.k, :].sum(-2)  # the candidates ranked in the top k
        return 1 - (z * match).sum(-1) / self.k

    def embed(self, model: nn.Module, x: Tensor) -> Tensor:
        """Unit-length embeddings: squared distances lie in [0, 4]."""
        return F.normalize(model(x), dim=-1)

    def scores_of(self, model: nn.Module, queries: Tensor, candidates: Tensor) -> Tensor:
        """θ = −s ‖e(q) − e(c_j)‖², ``[*, n]`` for queries ``[*, D]``, candidates ``[*, n, D]``."""
        eq, ec = self.embed(model, queries), self.embed(model, candidates)
        return -self.sharpness * ((ec - eq.unsqueeze(-2)) ** 2).sum(-1)

    def training_loss(self, model: nn.Module, estimator, num_samples: int,
                      generator: torch.Generator) -> Tensor:
        device, dtype = placement(model)
        train = self.data(device).train
        index = minibatch(TRAIN_QUERIES * (self.n + 1), len(train), generator, device)
        index = index.reshape(TRAIN_QUERIES, self.n + 1)
        x, y = train.x, train.y
        scores = self.scores_of(model, x[index[:, 0]].to(dtype), x[index[:, 1:]].to(dtype))
        match = (y[index[:, 1:]] == y[index[:, :1]]).to(dtype)  # [Q, n]
        surrogate = estimator.surrogate(self.candidates_distribution(scores),
                                        lambda z: self.loss(z, match),
                                        num_samples=num_samples, generator=generator)
        return surrogate.mean()

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        device, dtype = placement(model)
        splits = self.data(device)
        train = self.embed(model, splits.train.x.to(dtype))
        test = self.embed(model, splits.test.x.to(dtype))
        distances = torch.cdist(test, train)  # [T, N]
        nearest = distances.topk(self.k, largest=False).indices  # [T, k]
        votes = torch.zeros(len(test), int(splits.num_classes), dtype=dtype, device=device)
        votes.scatter_add_(1, splits.train.y[nearest], torch.ones_like(nearest, dtype=dtype))
        accuracy = float((votes.argmax(1) == splits.test.y).to(torch.float64).mean())
        return {"objective": 1 - accuracy,
                "objective_source": f"test error of {self.k}-nearest-neighbour classification",
                "test_accuracy": accuracy}

    # -- the problem at the checkpoint --------------------------------------------------------

    def bind(self, model: nn.Module) -> None:
        self.check_example()
        splits = self.data()
        self.freeze(model)
        device, dtype = placement(model)
        # Fixed candidates: k training images of the query's label and n − k of other labels,
        # drawn from the seed, so that the loss is not constant (a random draw of 16 candidates
        # often holds no image of the query's label, and then every gradient is zero).
        generator = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(len(splits.train), generator=generator)
        same = splits.train.y[order] == splits.test.y[self.example]
        chosen = torch.cat([order[same][: self.k], order[~same][: self.n - self.k]])
        chosen = chosen[torch.randperm(self.n, generator=generator)]
        # chosen on the CPU, the same on every device, then moved to the model's
        query = splits.test.x[self.example].to(device, dtype)
        with torch.no_grad():
            scores = self.scores_of(model, query, splits.train.x[chosen].to(device, dtype))
        self.match = (splits.train.y[chosen] == splits.test.y[self.example]).to(device, dtype)
        self.scores = scores.detach().clone().requires_grad_(True)

    def distribution(self) -> Distribution:
        return self.candidates_distribution(self.scores)

    def objective(self, z: Tensor) -> Tensor:
        return self.loss(z, self.match)

    def config(self) -> dict:
        return {**super().config(), "match": self.match.tolist()}
