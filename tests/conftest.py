import os
import shutil
import tempfile

import pytest
import torch

_CHECKPOINTS = tempfile.mkdtemp(prefix="estibench-checkpoints-")
_KERNELS = tempfile.mkdtemp(prefix="estibench-kernels-")


def pytest_configure(config):
    """Real tasks cache their checkpoints, and the C kernels their builds, on disk: in
    temporary directories during the tests, not in the user's cache (worker processes inherit
    the variables). The kernels are built once per test session (about a second)."""
    os.environ["ESTIBENCH_CHECKPOINTS"] = _CHECKPOINTS
    os.environ["ESTIBENCH_KERNELS"] = _KERNELS


def pytest_unconfigure(config):
    shutil.rmtree(_CHECKPOINTS, ignore_errors=True)
    shutil.rmtree(_KERNELS, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """Skip tests marked ``cuda`` when no CUDA device is present, saying why."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; none is available on this machine")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
