"""Sorting sequences of handwritten multi-digit numbers (Grover et al. 2019's task, small).

A sequence holds n numbers of ``digits`` digits each, every number rendered as real digit
images side by side (8 × 8 digits: an 8 × 8·digits image). A scoring network maps each image
to a score s_j, a ranking is drawn P ~ PlackettLuce(s) (row i: the item ranked i, descending),
and the loss compares the ranked values with the sorted ones:

    f(P) = (1/n) ‖P v − sort_desc(v)‖²,   v_j = number_j / 10^digits ∈ [0, 1).

(The paper trains with a cross-entropy against the true permutation; this loss is zero exactly
for the correct rankings even when two numbers are equal, and accepts relaxed P.) Training
draws 32 random sequences of training images per step. The test metrics are the paper's
Table 1 pair on 500 fixed test sequences, ranking by the scores: the proportion of sequences
ranked fully correctly and the proportion of individually correct ranks. ``quantile-regression``
(below) predicts the median of a sequence through the same ranking. As a problem θ is the
scores of one fixed test sequence (``example``); exact by enumerating the n! rankings for
n ≤ 8.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from estimators.errors import SpecError
from estimators.plackett_luce import MAX_ENUMERATE_N, PlackettLuce
from estimators.registry import Option, at_least
from problems.base import ProblemInfo, register
from problems.real import data
from problems.real.task import Task, mlp, placement

TRAIN_SEQUENCES = 32
TEST_SEQUENCES = 500


@register
class SortDigits(Task):
    info = ProblemInfo(
        name="sort-digits",
        description="Rank n handwritten multi-digit numbers by a network's scores; θ: scores of "
        "one test sequence; f: (1/n)‖P v − sort(v)‖²; exact for n <= 8.",
        family="permutation", exact=True, relaxable=True, enumerable=True,
        options=(
            Option("dataset", "digits", doc="digits, mnist, or a path to an .npz file or a "
                   "directory of IDX files (labelled 0-9)"),
            Option("n", 5, doc="numbers per sequence", check=at_least(2)),
            Option("digits", 2, doc="digits per number", check=at_least(1)),
            Option("hidden", 64, doc="hidden units of the scoring network", check=at_least(1)),
            Option("example", 0, doc="index of the test sequence whose θ is studied",
                   check=at_least(0)),
            Option("train_steps", 1500, doc="Adam steps that train the checkpoint",
                   check=at_least(0)),
            Option("seed", 0, doc="seed of the initialisation, of training and of the test "
                   "sequences", check=at_least(0)),
        ),
        references="Grover et al. 2019",
    )
    parameter_names = ("scores",)
    measurement_options = ("example",)
    checkpoint_estimator = "neuralsort:temperature=1.0"

    def __init__(self, **options) -> None:
        super().__init__(**options)
        if self.example >= TEST_SEQUENCES:
            raise SpecError(f"sort-digits: example must be below {TEST_SEQUENCES}, "
                            f"got {self.example}")
        exact = self.n <= MAX_ENUMERATE_N
        self.info = dataclasses.replace(self.info, exact=exact, enumerable=exact)

    def new_model(self, generator: torch.Generator) -> nn.Module:
        pixels = self.data().train.x.shape[1] * self.digits
        return mlp([pixels, self.hidden, 1], generator)

    def sequences(self, split: data.Split, count: int,
                  generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``count`` random sequences: images ``[count, n, D·digits]`` and values ``[count, n]``,
        on the split's device (where ``generator`` must live)."""
        device = split.x.device
        index = torch.randint(len(split), (count, self.n, self.digits), generator=generator,
                              device=device)
        images = split.x[index].flatten(-2)  # digits side by side, as one feature vector
        place = 10.0 ** torch.arange(self.digits - 1, -1, -1, device=device)
        values = (split.y[index].double() * place).sum(-1) / 10.0**self.digits
        return images, values

    def loss(self, z: Tensor, values: Tensor) -> Tensor:
        """(1/n)‖P v − sort_desc(v)‖², ``[S, *]`` from P ``[S, *, n, n]`` and v ``[*, n]``."""
        values = values.to(z.dtype)
        ranked = (z * values.unsqueeze(-2)).sum(-1)
        return ((ranked - values.sort(-1, descending=True).values) ** 2).mean(-1)

    def training_loss(self, model: nn.Module, estimator, num_samples: int,
                      generator: torch.Generator) -> Tensor:
        device, dtype = placement(model)
        images, values = self.sequences(self.data(device).train, TRAIN_SEQUENCES, generator)
        scores = model(images.to(dtype)).squeeze(-1)  # [B, n]
        surrogate = estimator.surrogate(PlackettLuce(scores), lambda z: self.loss(z, values),
                                        num_samples=num_samples, generator=generator)
        return surrogate.mean()

    def test_sequences(self) -> tuple[Tensor, Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        return self.sequences(self.data().test, TEST_SEQUENCES, generator)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        device, dtype = placement(model)
        images, values = self.test_sequences()  # the same sequences on every device
        images, values = images.to(device), values.to(device)
        order = model(images.to(dtype)).squeeze(-1).argsort(-1, descending=True)
        ranked = values.gather(-1, order)
        correct = ranked == values.sort(-1, descending=True).values  # ties count as correct
        all_correct = float(correct.all(-1).double().mean())
        return {"objective": 1 - all_correct,
                "objective_source": f"share of {TEST_SEQUENCES} test sequences not fully "
                                    "correctly ranked",
                "fully_correct": all_correct,
                "ranks_correct": float(correct.double().mean())}

    def bind(self, model: nn.Module) -> None:
        self.freeze(model)
        device, dtype = placement(model)
        images, values = self.test_sequences()
        with torch.no_grad():
            scores = model(images[self.example].to(device, dtype)).squeeze(-1)
        self.values = values[self.example].to(device, dtype)
        self.scores = scores.detach().clone().requires_grad_(True)

    def distribution(self) -> Distribution:
        return PlackettLuce(self.scores)

    def objective(self, z: Tensor) -> Tensor:
        return self.loss(z, self.values)

    def config(self) -> dict:
        return {**super().config(), "values": self.values.tolist()}


@register
class QuantileRegression(SortDigits):
    """The NeuralSort paper's median regression, small (see the module docstring for the data).

    Two networks see each image of a sequence: a scorer (scores s, ranking P ~ PlackettLuce(s))
    and a regressor (predicted values r). The prediction of the median is the regressor's value
    of the item ranked in the middle, and

        f(P) = ((P r)_{(n+1)/2} − median(v))²,

    so the gradient reaches the scorer through the ranking and the regressor directly. Metrics:
    test MSE and R² of the median prediction with the hard ranking (the paper's Table 2).
    """

    info = dataclasses.replace(
        SortDigits.info,
        name="quantile-regression",
        description="Predict the median of n handwritten numbers through a ranking; θ: scores "
        "of one test sequence; f: squared error of the middle item's regressed value; exact "
        "for n <= 8.",
    )

    def __init__(self, **options) -> None:
        super().__init__(**options)
        if self.n % 2 == 0:
            raise SpecError(f"quantile-regression needs an odd n (one middle item), got {self.n}")

    def new_model(self, generator: torch.Generator) -> nn.Module:
        pixels = self.data().train.x.shape[1] * self.digits
        return nn.ModuleDict({"scorer": mlp([pixels, self.hidden, 1], generator),
                              "regressor": mlp([pixels, self.hidden, 1], generator)})

    def median_loss(self, z: Tensor, values: Tensor, predicted: Tensor) -> Tensor:
        """``[S, *]`` from P ``[S, *, n, n]``, true values and regressed values ``[*, n]``."""
        middle = self.n // 2
        chosen = (z[..., middle, :] * predicted.to(z.dtype)).sum(-1)
        target = values.to(z.dtype).sort(-1, descending=True).values[..., middle]
        return (chosen - target) ** 2

    def training_loss(self, model: nn.Module, estimator, num_samples: int,
                      generator: torch.Generator) -> Tensor:
        device, dtype = placement(model)
        images, values = self.sequences(self.data(device).train, TRAIN_SEQUENCES, generator)
        images = images.to(dtype)
        scores = model["scorer"](images).squeeze(-1)  # [B, n]
        predicted = model["regressor"](images).squeeze(-1)  # [B, n]
        surrogate = estimator.surrogate(
            PlackettLuce(scores), lambda z: self.median_loss(z, values, predicted),
            num_samples=num_samples, generator=generator)
        return surrogate.mean()

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        device, dtype = placement(model)
        images, values = self.test_sequences()  # the same sequences on every device
        images, values = images.to(device, dtype), values.to(device)
        order = model["scorer"](images).squeeze(-1).argsort(-1, descending=True)
        middle = order[:, self.n // 2 : self.n // 2 + 1]  # [T, 1]
        predicted = model["regressor"](images).squeeze(-1).gather(-1, middle).squeeze(-1)
        target = values.sort(-1, descending=True).values[:, self.n // 2].to(dtype)
        mse = float(((predicted - target) ** 2).double().mean())
        r2 = 1 - mse / float(target.double().var(correction=0))
        return {"objective": mse,
                "objective_source": f"test MSE of the median on {TEST_SEQUENCES} sequences",
                "test_mse": mse, "test_r2": r2}

    def bind(self, model: nn.Module) -> None:
        self.freeze(model)
        device, dtype = placement(model)
        images, values = self.test_sequences()
        with torch.no_grad():
            scores = model["scorer"](images[self.example].to(device, dtype)).squeeze(-1)
            self.predicted = model["regressor"](images[self.example].to(device, dtype)).squeeze(-1)
        self.values = values[self.example].to(device, dtype)
        self.scores = scores.detach().clone().requires_grad_(True)

    def objective(self, z: Tensor) -> Tensor:
        return self.median_loss(z, self.values, self.predicted)

    def config(self) -> dict:
        return {**super().config(), "predicted": self.predicted.tolist()}
