"""Parametric t-SNE by subset sampling on real digits (Xie & Ermon 2019; van der Maaten 2009).

An embedding network e(·) maps an image to a point of the plane (``dim`` = 2: a map to look
at). The neighbours of a query q among n candidates are a random k-subset z ~ Subset(θ, k) whose
scores are t-SNE's heavy-tailed Student-t kernel in the embedding,

    θ_j = −s log(1 + ‖e(x_q) − e(x_j)‖²)    (s = 1: probabilities ∝ (1 + d²)^−1, as in t-SNE),

and the loss is the fraction of the chosen neighbours that are not among the query's k nearest
neighbours in input space:

    f(z) = 1 − (1/k) Σ_j z_j m_j,   m_j = 1 when candidate j is one of q's k nearest images.

So the network learns a map whose relaxed k nearest neighbours are the input-space ones: the
candidates of a query are its k nearest training images (in pixel space) and n − k others
drawn uniformly from the rest of the training set, shuffled. Training draws 32 training
queries per step. The test metric is the trustworthiness T(K) of the learned map of the test
images (Venna & Kaski 2001; what ``sklearn.manifold.trustworthiness`` computes), with K =
``neighbours``: 1 when every embedding neighbour is an input-space neighbour, lower when the
map brings in points that are far in input space; the share of the K input-space neighbours
kept among the K embedding neighbours is reported too. As a problem θ is the score vector of
one test image (``example``) against n fixed training candidates, at the checkpoint; the
expectation is exact by enumerating the C(n, k) subsets (n ≤ 16).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import torch
from torch import Tensor, nn

from estimators.errors import SpecError
from estimators.registry import Option, at_least, positive
from estimators.subset import Subset
from problems.base import ProblemInfo, register
from problems.subsets import enumerable_subsets
from problems.real import data
from problems.real.task import Task, mlp, placement

TRAIN_QUERIES = 32


def input_order(x: Tensor) -> Tensor:
    """``[N, N]``: each point's indices in input space, nearest first, the point itself first
    of all (even among duplicates); ties in the order of the index."""
    distances = torch.cdist(x, x)
    distances.fill_diagonal_(-1.0)
    return distances.argsort(dim=1, stable=True)


def input_ranks(x: Tensor) -> Tensor:
    """``[N, N]``: rank of j among i's neighbours in input space (1: nearest; i itself: 0)."""
    order = input_order(x)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(len(x)).expand_as(order).contiguous())
    return ranks


@functools.lru_cache(maxsize=2)
def training_order(dataset: str, device: str = "cpu") -> Tensor:
    """``[N, N − 1]``: every training image's other training images, nearest first, computed
    once per data set (it is fixed) on the CPU and kept on ``device``; stored in the smallest
    integer type that holds N."""
    if torch.device(device).type != "cpu":
        return training_order(dataset).to(device)
    x = data.load(dataset).train.x.double()
    kind = torch.int16 if len(x) <= torch.iinfo(torch.int16).max else torch.int32
    return input_order(x)[:, 1:].to(kind)


@functools.lru_cache(maxsize=2)
def test_structure(dataset: str, neighbours: int) -> tuple[Tensor, Tensor]:
    """The test images' input-space ranks and K nearest neighbours, for the metrics: fixed, so
    computed once per data set rather than at every evaluation."""
    x = data.load(dataset).test.x
    return input_ranks(x.double()), nearest_neighbours(x, neighbours)


def pool_order(pool: Tensor, queries: Tensor) -> Tensor:
    """``[Q, N − 1]``: for queries that are not in ``pool``, its indices nearest first; a pool
    image at distance 0 (the query's duplicate) is left out like a query's own image."""
    distances = torch.cdist(queries.double(), pool.double())  # [Q, N]
    order = distances.argsort(dim=1, stable=True)
    skip = (distances.gather(1, order[:, :1]) == 0).long()
    return order.gather(1, skip + torch.arange(len(pool) - 1))


def nearest_neighbours(points: Tensor, k: int) -> Tensor:
    """``[N, k]``: indices of each point's k nearest other points."""
    distances = torch.cdist(points.double(), points.double())
    distances.fill_diagonal_(math.inf)
    return distances.topk(k, dim=1, largest=False).indices


def trustworthiness(x: Tensor, y: Tensor, neighbours: int) -> float:
    """T(K) = 1 − 2 / (N K (2N − 3K − 1)) Σ_i Σ_{j ∈ U_i} (r(i, j) − K) (Venna & Kaski 2001).

    U_i: the K nearest neighbours of i in the embedding ``y`` that are not among its K nearest
    in input space ``x``; r(i, j): the rank of j among i's input-space neighbours. Needs
    K < N / 2.
    """
    return _trustworthiness(input_ranks(x.double()), nearest_neighbours(y, neighbours))


def _trustworthiness(ranks: Tensor, near_y: Tensor) -> float:
    """T(K) from the input ranks ``[N, N]`` and the embedding's K nearest ``[N, K]``."""
    n, k = near_y.shape
    if not 1 <= k < n / 2:
        raise ValueError(f"trustworthiness needs 1 <= neighbours < N/2, got {k} for N={n}")
    excess = int((ranks.gather(1, near_y) - k).clamp(min=0).sum())
    return float(1 - 2 / (n * k * (2 * n - 3 * k - 1)) * excess)


def neighbour_recall(x: Tensor, y: Tensor, neighbours: int) -> float:
    """Share of the K input-space nearest neighbours among the K nearest in the embedding."""
    return _recall(nearest_neighbours(x, neighbours), nearest_neighbours(y, neighbours))


def _recall(near_x: Tensor, near_y: Tensor) -> float:
    shared = (near_x.unsqueeze(-1) == near_y.unsqueeze(-2)).any(-1)
    return float(shared.double().mean())


@register
class TSNESubset(Task):
    info = ProblemInfo(
        name="tsne-subset",
        description="Parametric t-SNE on digits: θ: Student-t scores of n candidates in a 2-D "
        "embedding of one test image; f: share of the k chosen neighbours that are not its "
        "input-space k nearest; exact for n <= 16.",
        family="subset", exact=True, relaxable=True, enumerable=True,
        options=(
            Option("dataset", "digits", doc="digits, mnist, or a path to an .npz file or a "
                   "directory of IDX files"),
            Option("n", 16, doc="candidates per query", check=at_least(2)),
            Option("k", 3, doc="neighbours", check=at_least(1)),
            Option("dim", 2, doc="embedding dimension", check=at_least(1)),
            Option("hidden", 64, doc="hidden units of the embedding network", check=at_least(1)),
            Option("sharpness", 1.0, doc="s in θ_j = −s log(1 + d_j²) (1: t-SNE's kernel)",
                   check=positive),
            Option("neighbours", 5, doc="K of the test metrics (trustworthiness, recall)",
                   check=at_least(1)),
            Option("example", 0, doc="index of the test image whose θ is studied",
                   check=at_least(0)),
            Option("train_steps", 300, doc="Adam steps that train the checkpoint",
                   check=at_least(0)),
            Option("seed", 0, doc="seed of the initialisation, of training and of the fixed "
                   "candidates", check=at_least(0)),
        ),
        references="van der Maaten 2009; Xie & Ermon 2019",
    )
    parameter_names = ("scores",)
    measurement_options = ("example",)
    checkpoint_estimator = "relaxed-topk:temperature=0.5"

    def __init__(self, **options) -> None:
        super().__init__(**options)
        if self.k >= self.n:
            raise SpecError(f"tsne-subset needs k < n (some candidates must not be neighbours), "
                            f"got n={self.n}, k={self.k}")
        exact = enumerable_subsets(self.n, self.k)
        self.info = dataclasses.replace(self.info, exact=exact, enumerable=exact)

    def new_model(self, generator: torch.Generator) -> nn.Module:
        pixels = self.data().train.x.shape[1]
        return mlp([pixels, self.hidden, self.hidden, self.dim], generator)

    # -- candidates, scores and the loss ----------------------------------------------------

    def candidates(self, order: Tensor, generator: torch.Generator) -> Tensor:
        """``[Q, n]``: from each query's pool indices nearest first (``order`` ``[Q, M]``, the
        query left out), its k nearest, then n − k drawn uniformly from the other M − k."""
        others = torch.rand(len(order), order.shape[1] - self.k, generator=generator,
                            device=order.device)
        others = others.argsort(dim=1)[:, : self.n - self.k] + self.k
        return torch.cat([order[:, : self.k], order.gather(1, others)], dim=1)

    def scores_of(self, model: nn.Module, queries: Tensor, candidates: Tensor) -> Tensor:
        """θ = −s log(1 + ‖e(q) − e(c_j)‖²), ``[*, n]`` for queries ``[*, D]``, ``[*, n, D]``."""
        eq, ec = model(queries), model(candidates)
        return -self.sharpness * torch.log1p(((ec - eq.unsqueeze(-2)) ** 2).sum(-1))

    def loss(self, z: Tensor, match: Tensor) -> Tensor:
        """``[S, *batch]`` from z ``[S, *batch, n]`` and match ``[*batch, n]``."""
        return 1 - (z * match).sum(-1) / self.k

    def training_loss(self, model: nn.Module, estimator, num_samples: int,
                      generator: torch.Generator) -> Tensor:
        device, dtype = placement(model)
        x = self.data(device).train.x
        queries = torch.randint(len(x), (TRAIN_QUERIES,), generator=generator, device=device)
        order = training_order(self.dataset, str(device))[queries].long()
        index = self.candidates(order, generator)  # [Q, n]; the first k match
        shuffle = torch.rand(index.shape, generator=generator, device=device).argsort(dim=1)
        index = index.gather(1, shuffle)
        match = (shuffle < self.k).to(dtype)
        scores = self.scores_of(model, x[queries].to(dtype), x[index].to(dtype))
        surrogate = estimator.surrogate(Subset(scores, self.k), lambda z: self.loss(z, match),
                                        num_samples=num_samples, generator=generator)
        return surrogate.mean()

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        device, dtype = placement(model)
        embedded = model(self.data(device).test.x.to(dtype))
        ranks, near = test_structure(self.dataset, self.neighbours)  # fixed: cached, CPU
        near_embedded = nearest_neighbours(embedded, self.neighbours).cpu()
        trust = _trustworthiness(ranks, near_embedded)
        return {"objective": 1 - trust,
                "objective_source": f"1 − trustworthiness T({self.neighbours}) of the test "
                "images' embedding",
                "trustworthiness": trust,
                "neighbour_recall": _recall(near, near_embedded)}

    # -- the problem at the checkpoint --------------------------------------------------------

    def bind(self, model: nn.Module) -> None:
        self.check_example()
        splits = self.data()
        self.freeze(model)
        device, dtype = placement(model)
        generator = torch.Generator().manual_seed(self.seed)  # fixed inputs: chosen on the CPU
        query = splits.test.x[self.example]
        chosen = self.candidates(pool_order(splits.train.x, query[None]), generator)[0]
        shuffle = torch.randperm(self.n, generator=generator)
        with torch.no_grad():
            scores = self.scores_of(model, query.to(device, dtype),
                                    splits.train.x[chosen[shuffle]].to(device, dtype))
        self.match = (shuffle < self.k).to(device, dtype)
        self.scores = scores.detach().clone().requires_grad_(True)

    def distribution(self) -> Subset:
        return Subset(self.scores, self.k)

    def objective(self, z: Tensor) -> Tensor:
        return self.loss(z, self.match)

    def config(self) -> dict:
        return {**super().config(), "match": self.match.tolist()}
