"""What the real tasks share: data loaded lazily, a trained checkpoint, θ at fixed inputs.

A real task is a model with networks (an encoder and a decoder, an embedding, a selector and a
classifier) whose discrete variables are drawn from distributions the networks parametrise.
As a :class:`~problems.base.Problem` it is the model at a **fixed checkpoint**: the networks
are trained once, deterministically, for ``train_steps`` steps from ``seed`` with the task's
``checkpoint_estimator``, then frozen; the studied parameters θ are what the networks output
for fixed inputs (a fixed minibatch or one test example), made leaves. The objective is the
task's loss at those inputs with the frozen networks, so ∇_θ E[f] is the gradient an estimator
hands back to the network that produced θ. Like every problem, a task is built in float64
(the networks are trained in float32, then cast).

Checkpoints are trained on first use (``parameters()``, ``distribution()``, ...; building a
task from its spec only checks that its data can be loaded) and cached in memory for the
process, keyed by the options that define them. Training is a few seconds of CPU. They are
also cached on disk, so that worker processes and later runs load them instead of training
again: in ``$ESTIBENCH_CHECKPOINTS`` if set (``off`` turns the disk cache off), else in
``$XDG_CACHE_HOME/estibench/checkpoints`` (``~/.cache/...``). A file is named by a hash of the
task's checkpoint options, the estimator and learning rate that train it and the torch
version, and written atomically (a temporary file, then a rename), so a killed run never
leaves half a checkpoint; an unreadable file is trained again and replaced.

The same training procedure serves the harness's training runs: ``training_session(seed)``
returns a :class:`TrainingSession` with fresh networks, whose ``loss`` is one estimator's
surrogate on a random training minibatch and whose ``evaluate`` gives the task's metrics
(``objective``, the quantity minimised, is one of them).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from estimators import ESTIMATORS
from estimators.errors import SpecError
from estimators.paths import cache_dir, replacing
from problems.base import Problem, expectation_by_enumeration
from problems.real import data

_CHECKPOINTS: dict[str, nn.Module] = {}
CHECKPOINT_LEARNING_RATE = 3e-3
CHECKPOINT_FORMAT = 1  # bump when a task's training changes, so old files are not reused


def checkpoint_dir() -> Path | None:
    """Where checkpoints are cached on disk, or None when the disk cache is off."""
    return cache_dir("ESTIBENCH_CHECKPOINTS", "checkpoints")


def _checkpoint_file(key: str, estimator: str, dataset: str) -> Path | None:
    root = checkpoint_dir()
    if root is None:
        return None
    text = json.dumps([key, estimator, CHECKPOINT_LEARNING_RATE, CHECKPOINT_FORMAT,
                       torch.__version__, _data_stamp(dataset)])
    return root / f"{hashlib.sha256(text.encode()).hexdigest()[:24]}.pt"


def _data_stamp(dataset: str) -> list:
    """Size and modification time of a user's data files (built-in data sets: nothing)."""
    if dataset in data.BUILT_IN:
        return []
    path = Path(dataset).expanduser()
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    return [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.is_file()]


def _load_checkpoint(path: Path) -> nn.Module | None:
    try:
        # Our own files: whole modules pickled by ``_save_checkpoint`` (not weights alone).
        model = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        return None
    except Exception as error:  # a corrupt or foreign file: train again, then replace it
        warnings.warn(f"ignoring the unreadable checkpoint {path} ({error}); training again",
                      stacklevel=3)
        return None
    return model if isinstance(model, nn.Module) else None


def _save_checkpoint(model: nn.Module, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path) as partial, open(partial, "wb") as stream:
            torch.save(model, stream)
            stream.flush()
            os.fsync(stream.fileno())
    except OSError as error:  # a read-only or full disk costs a retraining next time, no more
        warnings.warn(f"could not cache the checkpoint in {path.parent} ({error})",
                      stacklevel=3)


def mlp(sizes: list[int], generator: torch.Generator) -> nn.Sequential:
    """A ReLU multilayer perceptron, initialised from ``generator`` (never the global RNG)."""
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = nn.Linear(fan_in, fan_out)
        bound = 1 / math.sqrt(fan_in)  # torch's default init, drawn from our generator
        with torch.no_grad():
            linear.weight.uniform_(-bound, bound, generator=generator)
            linear.bias.uniform_(-bound, bound, generator=generator)
        layers.append(linear)
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def minibatch(size: int, n: int, generator: torch.Generator,
              device: torch.device | None = None) -> Tensor:
    """``size`` indices drawn uniformly without replacement from ``range(n)``, on ``device``
    (where ``generator`` must live)."""
    return torch.randperm(n, generator=generator, device=device)[:size]


def placement(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """The device and dtype of a model's weights: every tensor a task makes for the model
    follows them (data, indices, masks), so a task moved with ``to`` runs where it is."""
    weight = next(model.parameters())
    return weight.device, weight.dtype


class TrainingSession:
    """Fresh networks for a task, trained by an estimator's gradients one minibatch at a time.

    ``parameters()``: the network weights to optimise. ``loss(estimator, num_samples,
    generator)``: a scalar surrogate on a random training minibatch (its gradient is the
    estimator's). ``evaluate()``: the task's metrics, ``objective`` among them. ``problem()``:
    the task bound to the current weights (θ at its fixed inputs), for gradient statistics.
    """

    def __init__(self, task: Task, seed: int, device=None, dtype=None) -> None:
        self.task = task
        self.model = task.new_model(torch.Generator().manual_seed(seed)).to(device, dtype)
        self.device, self.dtype = device, dtype

    def parameters(self) -> list[Tensor]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def loss(self, estimator, num_samples: int, generator: torch.Generator) -> Tensor:
        return self.task.training_loss(self.model, estimator, num_samples, generator)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        try:
            return self.task.evaluate(self.model)
        finally:
            self.model.train()

    def problem(self) -> Task:
        bound = copy.copy(self.task)
        bound.bind(copy.deepcopy(self.model))
        return bound


def fit(task: Task, estimator_spec: str, steps: int, seed: int, *, num_samples: int = 1,
        learning_rate: float = CHECKPOINT_LEARNING_RATE) -> nn.Module:
    """Train fresh networks with Adam for ``steps`` steps; deterministic given ``seed``.

    Runs on one torch thread (restored afterwards): the networks are small, so threads only
    contend, and one thread fixes the order of every reduction, so the checkpoint is the same
    bits on any machine with the same torch build.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        session = TrainingSession(task, seed)
        estimator = ESTIMATORS.make(estimator_spec)
        optimiser = torch.optim.Adam(session.parameters(), lr=learning_rate)
        generator = torch.Generator().manual_seed(seed + 1)
        for _ in range(steps):
            optimiser.zero_grad(set_to_none=True)
            session.loss(estimator, num_samples, generator).backward()
            optimiser.step()
    finally:
        torch.set_num_threads(previous)
    session.model.eval()
    return session.model


class Task(Problem):
    """Base class of the real tasks (see the module docstring).

    Subclasses set ``checkpoint_estimator`` (the spec that trains the checkpoint) and
    ``measurement_options`` (options that choose the fixed inputs and not the checkpoint), and
    implement ``new_model``, ``training_loss``, ``evaluate`` and ``bind``.
    """

    checkpoint_estimator: ClassVar[str]
    measurement_options: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        data.check_available(self.dataset)
        self._bound = False

    # -- lazily built checkpoint -----------------------------------------------------------

    def __getattr__(self, name: str):
        # Called only for attributes not yet set: build the checkpoint once, then retry.
        if name.startswith("__") or self.__dict__.get("_bound", True):
            raise AttributeError(name)
        self.ensure()
        return getattr(self, name)

    def checkpoint_key(self) -> str:
        kept = {k: v for k, v in self.options.items() if k not in self.measurement_options}
        return json.dumps({"task": self.info.name, **kept}, sort_keys=True)

    def ensure(self) -> None:
        """Train (or fetch from the cache) the checkpoint and bind θ at the fixed inputs."""
        if self._bound:
            return
        key = self.checkpoint_key()
        if key not in _CHECKPOINTS:
            path = _checkpoint_file(key, self.checkpoint_estimator, self.dataset)
            model = _load_checkpoint(path) if path is not None else None
            if model is None:
                model = fit(self, self.checkpoint_estimator, self.train_steps, self.seed)
                if path is not None:
                    _save_checkpoint(model, path)
            _CHECKPOINTS[key] = model
        # Bound in float64 like every problem here (``to`` gives other dtypes).
        self.bind(copy.deepcopy(_CHECKPOINTS[key]).double().eval())

    def checkpoint(self) -> nn.Module:
        """The trained (frozen) networks."""
        self.ensure()
        return self.model

    def data(self, device: torch.device | None = None) -> data.Splits:
        """The data set's splits, on ``device`` (None: the CPU)."""
        return data.load_on(self.dataset, device)

    def parameters(self) -> list[Tensor]:
        self.ensure()
        return super().parameters()

    def to(self, device=None, dtype=None):
        self.ensure()
        new = super().to(device, dtype)
        new.model = copy.deepcopy(self.model).to(device=device, dtype=dtype)
        new.model.requires_grad_(False)
        new.model.eval()
        return new

    def training_session(self, seed: int, device=None, dtype=None) -> TrainingSession:
        """Fresh networks (initialised from ``seed``) to train with any estimator."""
        return TrainingSession(self, seed, device, dtype)

    # -- what each task implements ------------------------------------------------------------

    def new_model(self, generator: torch.Generator) -> nn.Module:
        raise NotImplementedError

    def training_loss(self, model: nn.Module, estimator, num_samples: int,
                      generator: torch.Generator) -> Tensor:
        raise NotImplementedError

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        raise NotImplementedError

    def bind(self, model: nn.Module) -> None:
        """Freeze ``model``, set ``self.model`` and θ (leaves) and the fixed inputs."""
        raise NotImplementedError

    def expected_objective(self) -> Tensor:
        """E f by enumerating the support where ``info.exact`` (the VAEs sum per image)."""
        if not self.info.exact:
            raise NotImplementedError(f"{self.spec}: too large a support to enumerate")
        return expectation_by_enumeration(self.distribution(), self.objective)

    def check_example(self) -> None:
        """``example`` indexes the test set: one clear message when it is past the end."""
        count = len(self.data().test)
        if self.example >= count:
            raise SpecError(f"{self.info.name}: example={self.example} is past the {count} "
                            "test images")

    def freeze(self, model: nn.Module) -> None:
        model.requires_grad_(False)
        self.model = model
        self._bound = True

    def config(self) -> dict:
        return {**super().config(), "checkpoint_estimator": self.checkpoint_estimator,
                "checkpoint_learning_rate": CHECKPOINT_LEARNING_RATE}
