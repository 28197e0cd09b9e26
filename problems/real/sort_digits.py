"""Sorting sequences of handwritten multi-digit numbers (Grover et al. 2019's task, small).

A sequence holds n numbers of ``digits`` digits each, every number rendered as real digit
images side by side (8 × 8 digits: an 8 × 8·digits image). A scoring network maps each image
to a score s_j, a ranking is drawn P ~ PlackettLuce(s) (row i: the item ranked i, descending),
and a loss compares P with the true ranking. Two losses (option ``loss``):

- ``squared`` (the default): the ranked values against the sorted ones,

      f(P) = (1/n) ‖P v − sort_desc(v)‖²,   v_j = number_j / 10^digits ∈ [0, 1);

  zero exactly for the correct rankings even when two numbers are equal.
- ``cross-entropy`` (the paper's): with P_true the true permutation matrix (row i: the one-hot
  of the item ranked i by descending value, ties broken by position),

      f(P) = −(1/n) Σ_i Σ_j P_true[i, j] log max(P[i, j], 10⁻¹²),

  so a relaxed P is scored by the probability it gives the true item of each rank, and a hard
  P from a score-function estimator costs log(10¹²)/n ≈ 27.6/n per wrong rank (the floor keeps
  it finite). Equal numbers in a sequence have one true order here (by position).

Two scoring networks (option ``network``): ``mlp`` (the default), one hidden layer of
``hidden`` ReLU units on the number's pixels, and ``cnn``, the paper's network on the number's
image (rows × columns·digits, one channel): conv 5×5 with 32 channels, ReLU, max-pool 2×2;
conv 5×5 with 64 channels, ReLU, max-pool 2×2; fully connected ``hidden`` (the paper: 64),
ReLU; fully connected 1 (Grover et al. 2019, appendix; 'same' padding, so 28 × 112 →
14 × 56 → 7 × 28). The paper's specification is ``dataset=mnist,digits=4,network=cnn,
loss=cross-entropy,train_batch=20``.

Training draws ``train_batch`` random sequences of training images per step (32 by default;
the paper uses 20). The test metrics are the paper's Table 1 pair on 500 fixed test sequences,
ranking by the scores: the proportion of sequences ranked fully correctly and the proportion
of individually correct ranks. ``quantile-regression`` (below) predicts the median of a
sequence through the same ranking. As a problem θ is the scores of one fixed test sequence
(``example``); exact by enumerating the n! rankings for n ≤ 8.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from estimators.errors import SpecError
from estimators.plackett_luce import MAX_ENUMERATE_N, PlackettLuce
from estimators.registry import Option, at_least
from problems.base import ProblemInfo, register
from problems.real import data
from problems.real.task import Task, mlp, placement

TRAIN_SEQUENCES = 32  # the default of ``train_batch``
TEST_SEQUENCES = 500
NETWORKS = ("mlp", "cnn")
LOSSES = ("squared", "cross-entropy")
# The floor of P[i, j] inside the cross-entropy's log. A fixed number rather than the dtype's
# smallest normal (1.2e-38 in float32, 2.2e-308 in float64): f is then the same function in
# float32 (training) and float64 (the problem), and a wrong rank of a hard P costs a moderate
# log(1e12) ≈ 27.6 (not 87 or 708), which keeps score-function estimators' variance in
# bounds. 1e-12 is a normal float32 number; relaxed entries below it get no gradient.
LOG_FLOOR = 1e-12
CNN_CHUNK = 256  # images per pass of the CNN: bounded memory for the 500 test sequences


def _conv(in_channels: int, out_channels: int, generator: torch.Generator) -> nn.Conv2d:
    """A 5 × 5 'same' convolution, initialised like :func:`~problems.real.task.mlp`'s layers:
    weights and biases uniform in ±1/sqrt(fan_in), fan_in = in_channels · 5 · 5."""
    conv = nn.utils.skip_init(nn.Conv2d, in_channels, out_channels, kernel_size=5, padding=2)
    bound = 1 / math.sqrt(in_channels * 5 * 5)
    with torch.no_grad():
        conv.weight.uniform_(-bound, bound, generator=generator)
        conv.bias.uniform_(-bound, bound, generator=generator)
    return conv


class DigitsCNN(nn.Module):
    """Grover et al. 2019's scoring CNN on a number's image, one score per number.

    Takes the features ``[..., digits·rows·columns]`` that :meth:`SortDigits.sequences` makes
    (each digit's flattened image, side by side) and rebuilds the number's one-channel image
    ``[rows, digits·columns]`` (digit d in columns d·columns ... (d+1)·columns − 1), so it
    replaces the MLP anywhere: any leading dimensions, output ``[..., 1]``. Images pass in
    chunks of :data:`CNN_CHUNK`.
    """

    def __init__(self, rows: int, columns: int, digits: int, hidden: int,
                 generator: torch.Generator) -> None:
        super().__init__()
        self.rows, self.columns, self.digits = rows, columns, digits
        self.features = nn.Sequential(
            _conv(1, 32, generator), nn.ReLU(), nn.MaxPool2d(2),
            _conv(32, 64, generator), nn.ReLU(), nn.MaxPool2d(2),
        )
        flat = 64 * (rows // 4) * (columns * digits // 4)
        self.head = mlp([flat, hidden, 1], generator)

    def image(self, x: Tensor) -> Tensor:
        """The numbers' images ``[N, 1, rows, digits·columns]`` from features ``[..., F]``."""
        return (x.reshape(-1, self.digits, self.rows, self.columns)
                .transpose(1, 2)  # [N, rows, digits, columns]: the digits side by side
                .reshape(-1, 1, self.rows, self.digits * self.columns))

    def forward(self, x: Tensor) -> Tensor:
        scores = [self.head(self.features(chunk).flatten(1))
                  for chunk in self.image(x).split(CNN_CHUNK)]
        return torch.cat(scores).reshape(*x.shape[:-1], 1)


@register
class SortDigits(Task):
    info = ProblemInfo(
        name="sort-digits",
        description="Rank n handwritten multi-digit numbers by a network's scores (an MLP or "
        "the paper's CNN); θ: scores of one test sequence; f: (1/n)‖P v − sort(v)‖² or the "
        "paper's cross-entropy against the true permutation; exact for n <= 8.",
        family="permutation", exact=True, relaxable=True, enumerable=True,
        options=(
            Option("dataset", "digits", doc="digits, mnist, or a path to an .npz file or a "
                   "directory of IDX files (labelled 0-9)"),
            Option("n", 5, doc="numbers per sequence", check=at_least(2)),
            Option("digits", 2, doc="digits per number", check=at_least(1)),
            Option("hidden", 64, doc="hidden units of the scoring network (the MLP's hidden "
                   "layer, the CNN's fully connected layer)", check=at_least(1)),
            Option("example", 0, doc="index of the test sequence whose θ is studied",
                   check=at_least(0)),
            Option("train_steps", 1500, doc="Adam steps that train the checkpoint",
                   check=at_least(0)),
            Option("seed", 0, doc="seed of the initialisation, of training and of the test "
                   "sequences", check=at_least(0)),
            Option("network", "mlp", choices=NETWORKS, doc="scoring network: mlp (one hidden "
                   "layer on the pixels) or cnn (Grover et al. 2019's: two 5x5 conv + max-pool "
                   "layers, 32 and 64 channels, on the number's image)"),
            Option("loss", "squared", choices=LOSSES, doc="squared: (1/n)|P v - sort(v)|^2 of "
                   "the ranked values; cross-entropy: the paper's -(1/n) sum_ij P_true[i,j] "
                   "log P[i,j], log floored at 1e-12"),
            Option("train_batch", TRAIN_SEQUENCES, doc="training sequences per step (the "
                   "paper: 20)", check=at_least(1)),
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
        return self.scoring_network(generator)

    def scoring_network(self, generator: torch.Generator) -> nn.Module:
        """A fresh network of the ``network`` option, features ``[..., D·digits]`` to scores
        ``[..., 1]``."""
        splits = self.data()
        if self.network == "mlp":
            return mlp([splits.train.x.shape[1] * self.digits, self.hidden, 1], generator)
        if splits.image_shape is None:
            raise SpecError(f"{self.info.name}: network=cnn needs images; the data set "
                            f"{self.dataset!r} has none")
        rows, columns = splits.image_shape
        if rows < 4 or columns * self.digits < 4:
            raise SpecError(f"{self.info.name}: network=cnn pools twice by 2, so it needs "
                            f"images of at least 4 × 4; got {rows} × {columns * self.digits}")
        return DigitsCNN(rows, columns, self.digits, self.hidden, generator)

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
        """The ``loss`` option's f, ``[S, *]`` from P ``[S, *, n, n]`` and values ``[*, n]``.

        (The option is read from ``self.options``: it is named like this method.)
        """
        if self.options["loss"] == "cross-entropy":
            return self.cross_entropy_loss(z, values)
        return self.squared_loss(z, values)

    @staticmethod
    def squared_loss(z: Tensor, values: Tensor) -> Tensor:
        """(1/n)‖P v − sort_desc(v)‖², ``[S, *]`` from P ``[S, *, n, n]`` and v ``[*, n]``."""
        values = values.to(z.dtype)
        ranked = (z * values.unsqueeze(-2)).sum(-1)
        return ((ranked - values.sort(-1, descending=True).values) ** 2).mean(-1)

    @staticmethod
    def cross_entropy_loss(z: Tensor, values: Tensor) -> Tensor:
        """−(1/n) Σ_ij P_true[i, j] log max(P[i, j], LOG_FLOOR), ``[S, *]`` from P
        ``[S, *, n, n]`` and values ``[*, n]``; P_true's row i is the one-hot of the item
        ranked i by descending value (a stable sort: ties in position order).

        P_true has one 1 per row, so the sum over j is P's entry at the true item, gathered
        (no 0 · log 0 to guard). For P = P_true it is exactly 0; for the uniform P = 1/n it
        is log n.
        """
        order = values.argsort(dim=-1, descending=True, stable=True)  # [*, n]: item ranked i
        index = order.unsqueeze(-1).expand(*z.shape[:-1], 1)  # [S, *, n, 1]
        chosen = z.gather(-1, index).squeeze(-1)  # [S, *, n]: P[i, true item of rank i]
        # Clamp before the log: a clamp after it would multiply a zero gradient by 1/0.
        return -chosen.clamp_min(LOG_FLOOR).log().mean(-1)

    def training_loss(self, model: nn.Module, estimator, num_samples: int,
                      generator: torch.Generator) -> Tensor:
        device, dtype = placement(model)
        images, values = self.sequences(self.data(device).train, self.train_batch, generator)
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
    Both networks are of the ``network`` option's kind (two MLPs, or two CNNs), and
    ``train_batch`` sequences train them per step; f is fixed, so there is no ``loss`` option.
    """

    info = dataclasses.replace(
        SortDigits.info,
        name="quantile-regression",
        description="Predict the median of n handwritten numbers through a ranking; θ: scores "
        "of one test sequence; f: squared error of the middle item's regressed value; exact "
        "for n <= 8.",
        options=tuple(option for option in SortDigits.info.options if option.name != "loss"),
    )

    def __init__(self, **options) -> None:
        super().__init__(**options)
        if self.n % 2 == 0:
            raise SpecError(f"quantile-regression needs an odd n (one middle item), got {self.n}")

    def new_model(self, generator: torch.Generator) -> nn.Module:
        return nn.ModuleDict({"scorer": self.scoring_network(generator),
                              "regressor": self.scoring_network(generator)})

    def median_loss(self, z: Tensor, values: Tensor, predicted: Tensor) -> Tensor:
        """``[S, *]`` from P ``[S, *, n, n]``, true values and regressed values ``[*, n]``."""
        middle = self.n // 2
        chosen = (z[..., middle, :] * predicted.to(z.dtype)).sum(-1)
        target = values.to(z.dtype).sort(-1, descending=True).values[..., middle]
        return (chosen - target) ** 2

    def training_loss(self, model: nn.Module, estimator, num_samples: int,
                      generator: torch.Generator) -> Tensor:
        device, dtype = placement(model)
        images, values = self.sequences(self.data(device).train, self.train_batch, generator)
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
