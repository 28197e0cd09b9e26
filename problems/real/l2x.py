"""L2X: instance-wise feature selection on real digits (Chen et al. 2018; Xie & Ermon 2019).

A black-box classifier m is trained on full images first. A selector network maps an image x
to logits θ over F features (the pixels, or ``patch`` × ``patch`` patches), a k-subset
z ~ Subset(θ, k) of features is kept, and an approximator g sees only the kept pixels and is
trained to give m's prediction:

    f(z) = −log g(x ⊙ mask(z))[m(x)],   mask(z) = z expanded from features to pixels.

The test metric is L2X's post-hoc accuracy: the fraction of test images on which m, fed only
the k features with the largest selector logits (the rest set to zero), predicts what it
predicts on the full image; the approximator's agreement with m is reported too. As a problem
θ is the selector's logits for one test image (``example``) at the checkpoint; the expectation
is exact by enumerating the C(F, k) subsets when that is at most 4096 (the default, 16 patches
of 2 × 2 pixels of an 8 × 8 digit and k = 4, has 1,820).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution

from estimators.errors import SpecError
from estimators.registry import Option, at_least
from estimators.exactk import ExactK
from estimators.subset import Subset, topk_khot
from problems.base import ProblemInfo, register
from problems.subsets import enumerable_subsets
from problems.real import data
from problems.real.task import Task, minibatch, mlp, placement

TRAIN_BATCH = 64
BLACK_BOX_STEPS = 300
MAX_EXACT_SUBSETS = 4096


def patch_masks(image_shape: tuple[int, int], patch: int) -> Tensor:
    """``[F, H*W]`` 0/1: feature f covers the pixels of the f-th patch (row-major)."""
    height, width = image_shape
    rows, cols = math.ceil(height / patch), math.ceil(width / patch)
    pixel_row = torch.arange(height).repeat_interleave(width) // patch
    pixel_col = torch.arange(width).repeat(height) // patch
    feature = pixel_row * cols + pixel_col  # [H*W]
    return (torch.arange(rows * cols)[:, None] == feature[None, :]).float()


@register
class L2X(Task):
    info = ProblemInfo(
        name="l2x",
        description="L2X feature selection on digits: θ: selector logits over patches of one "
        "test image; f: the approximator's cross-entropy on the k kept patches; exact when "
        "C(F, k) <= 4096.",
        family="subset", exact=True, relaxable=True, enumerable=True,
        options=(
            Option("dataset", "digits", doc="digits, mnist, or a path to an .npz file or a "
                   "directory of IDX files"),
            Option("patch", 2, doc="side of the square patches that are the features "
                   "(1: pixels)", check=at_least(1)),
            Option("k", 4, doc="features kept", check=at_least(1)),
            Option("distribution", "gumbel-topk", choices=("gumbel-topk", "exactk"),
                   doc="the kept features by Gumbel-top-k (Subset, the subset family) or from "
                       "the exact-k family p ∝ exp(θ·z) (ExactK)"),
            Option("hidden", 64, doc="hidden units of every network", check=at_least(1)),
            Option("example", 0, doc="index of the test image whose θ is studied",
                   check=at_least(0)),
            Option("train_steps", 300, doc="Adam steps that train the checkpoint's selector "
                   "and approximator", check=at_least(0)),
            Option("seed", 0, doc="seed of the initialisation and of training",
                   check=at_least(0)),
        ),
        references="Chen et al. 2018; Xie & Ermon 2019",
    )
    parameter_names = ("logits",)
    measurement_options = ("example",)

    @property
    def checkpoint_estimator(self) -> str:  # type: ignore[override]
        return "simple" if self.options["distribution"] == "exactk" else \
            "relaxed-topk:temperature=0.5"

    def features_distribution(self, logits: Tensor) -> Distribution:
        if self.options["distribution"] == "exactk":
            return ExactK(logits, self.k)
        return Subset(logits, self.k)

    def __init__(self, **options) -> None:
        super().__init__(**options)
        shape = data.image_shape(self.dataset)
        if shape is None:
            raise SpecError(f"l2x needs an image data set, got {self.dataset!r}")
        self.masks = patch_masks(shape, self.patch)
        features = self.masks.shape[0]
        if self.k > features:
            raise SpecError(f"l2x: k={self.k} is more than the {features} features of "
                            f"{self.dataset} with patch={self.patch}")
        exact = enumerable_subsets(features, self.k, most=MAX_EXACT_SUBSETS)
        family = "exactk" if self.options["distribution"] == "exactk" else "subset"
        self.info = dataclasses.replace(self.info, family=family, exact=exact, enumerable=exact)

    def features(self) -> Tensor:
        """``[F, D]`` feature-to-pixel masks of the data set's images."""
        return self.masks

    # -- networks --------------------------------------------------------------------------------

    def new_model(self, generator: torch.Generator) -> nn.Module:
        pixels, classes = self.data().train.x.shape[1], self.data().num_classes
        features = self.features().shape[0]
        black_box = mlp([pixels, self.hidden, classes], generator)
        model = nn.ModuleDict({
            "black_box": black_box,
            "selector": mlp([pixels, self.hidden, features], generator),
            "approximator": mlp([pixels, self.hidden, classes], generator),
        })
        self._train_black_box(black_box, generator)
        black_box.requires_grad_(False)
        return model

    def _train_black_box(self, black_box: nn.Module, generator: torch.Generator) -> None:
        """Cross-entropy on the labels, full images: the model L2X explains (seeded, fixed)."""
        train = self.data().train
        optimiser = torch.optim.Adam(black_box.parameters(), lr=3e-3)
        with torch.enable_grad():
            for _ in range(BLACK_BOX_STEPS):
                index = minibatch(TRAIN_BATCH, len(train), generator)
                optimiser.zero_grad(set_to_none=True)
                F.cross_entropy(black_box(train.x[index]), train.y[index]).backward()
                optimiser.step()

    def masked(self, x: Tensor, z: Tensor) -> Tensor:
        """x ⊙ mask(z): x ``[*, D]``, z ``[S, *, F]`` -> ``[S, *, D]``."""
        return x * (z @ self.features().to(z))

    def loss(self, model: nn.Module, x: Tensor, target: Tensor, z: Tensor) -> Tensor:
        """Cross-entropy of the approximator on x ⊙ mask(z) against m's label, ``[S, *]``."""
        log_probs = torch.log_softmax(model["approximator"](self.masked(x, z)), -1)
        return -log_probs.gather(-1, target.expand(log_probs.shape[:-1]).unsqueeze(-1)).squeeze(-1)

    def training_loss(self, model: nn.Module, estimator, num_samples: int,
                      generator: torch.Generator) -> Tensor:
        device, dtype = placement(model)
        train = self.data(device).train
        x = train.x[minibatch(TRAIN_BATCH, len(train), generator, device)].to(dtype)
        with torch.no_grad():
            target = model["black_box"](x).argmax(-1)  # [B]
        logits = model["selector"](x)  # [B, F]
        surrogate = estimator.surrogate(self.features_distribution(logits),
                                        lambda z: self.loss(model, x, target, z),
                                        num_samples=num_samples, generator=generator)
        return surrogate.mean()

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        device, dtype = placement(model)
        test = self.data(device).test
        x = test.x.to(dtype)
        predicted = model["black_box"](x).argmax(-1)
        chosen = topk_khot(model["selector"](x), self.k)  # [T, F]
        kept = self.masked(x, chosen)
        post_hoc = float((model["black_box"](kept).argmax(-1) == predicted).double().mean())
        approximator = float((model["approximator"](kept).argmax(-1) == predicted).double().mean())
        black_box = float((predicted == test.y).double().mean())
        return {"objective": 1 - post_hoc,
                "objective_source": f"1 − post-hoc accuracy on the test set ({self.k} features)",
                "post_hoc_accuracy": post_hoc, "approximator_accuracy": approximator,
                "black_box_accuracy": black_box}

    # -- the problem at the checkpoint ----------------------------------------------------------

    def bind(self, model: nn.Module) -> None:
        self.check_example()
        test = self.data().test
        self.freeze(model)
        device, dtype = placement(model)
        self.x = test.x[self.example].to(device, dtype)
        with torch.no_grad():
            self.target = model["black_box"](self.x).argmax(-1)
            logits = model["selector"](self.x)
        self.logits = logits.detach().clone().requires_grad_(True)

    def distribution(self) -> Distribution:
        return self.features_distribution(self.logits)

    def objective(self, z: Tensor) -> Tensor:
        return self.loss(self.model, self.x, self.target, z)

    def sample_elements(self) -> int:
        """Per sample: the mask and the masked image, the approximator's hidden layer and
        outputs (10 classes), each held four times over (values, activations, gradients)."""
        return 4 * (2 * self.data().train.x.shape[1] + self.hidden + 10)

