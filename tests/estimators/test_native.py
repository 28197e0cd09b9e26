"""The C kernel for relaxed top-k against its specification, the torch implementation; its
build, cache and fallbacks. The formula tests in test_relaxed_topk.py run on both paths."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch

from estimators import native
from estimators.relaxed_topk import relaxed_topk
from harness.memory import peak_memory


@pytest.fixture
def kernel():
    if native.library() is None:
        pytest.skip(f"the C kernel is unavailable here: {native.status()}")


def run(keys: torch.Tensor, k: int, tau: float, weights: torch.Tensor, **options):
    x = keys.detach().clone().requires_grad_(True)
    y = relaxed_topk(x, k, tau, **options)
    (y * weights).sum().backward()
    return y.detach(), x.grad


@pytest.mark.parametrize("shape", [(7,), (3, 7), (2, 3, 40)])
@pytest.mark.parametrize("k", [1, 2, 5, 7])
@pytest.mark.parametrize("tau", [0.5, 5.0])
@pytest.mark.parametrize("segment", [1, 3, None])
def test_float64_kernel_equals_the_torch_implementation(kernel, shape, k, tau, segment):
    """Same steps, same segments, same backward: at moderate τ the two agree to a few ulp
    (measured at most 5), far inside 1e-12; a wrong term in either would be off by O(α)."""
    generator = torch.Generator().manual_seed(k)
    keys = torch.randn(shape, generator=generator, dtype=torch.float64) * 3
    weights = torch.randn(shape, generator=generator, dtype=torch.float64)
    y, grad = run(keys, k, tau, weights, segment=segment, backend="native")
    y_ref, grad_ref = run(keys, k, tau, weights, segment=segment, backend="torch")
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    scale = float(grad_ref.abs().max()) + 1
    torch.testing.assert_close(grad, grad_ref, rtol=1e-12, atol=1e-12 * scale)


def _exact(keys: list[float], k: int, tau: float, weights: list[float]):
    """y and the gradient of <w, y> to about 30 digits: the recursion in 60-digit arithmetic,
    and central differences with step 1e-25 (truncation error about 1e-50 times f''')."""
    mpmath = pytest.importorskip("mpmath")  # a dependency of torch (through sympy)
    mp = mpmath.mp
    saved, mp.dps = mp.dps, 60
    try:
        def y_of(r):
            r, total = [mp.mpf(v) for v in r], [mp.mpf(0)] * len(r)
            for _ in range(k):
                top = max(v / tau for v in r)
                e = [mp.exp(v / tau - top) for v in r]
                s = mp.fsum(e)
                alpha = [v / s for v in e]
                total = [t + a for t, a in zip(total, alpha)]
                r = [v + mp.log(1 - a) for v, a in zip(r, alpha)]
            return total

        def value(r):
            return mp.fsum(w * v for w, v in zip(weights, y_of(r)))

        h = mp.mpf("1e-25")
        grad = []
        for i in range(len(keys)):
            up, down = [mp.mpf(v) for v in keys], [mp.mpf(v) for v in keys]
            up[i] += h
            down[i] -= h
            grad.append((value(up) - value(down)) / (2 * h))
        y = y_of(keys)
    finally:
        mp.dps = saved
    return (torch.tensor([float(v) for v in y], dtype=torch.float64),
            torch.tensor([float(v) for v in grad], dtype=torch.float64))


@pytest.mark.parametrize("k", [2, 5, 7])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_float64_kernel_is_as_accurate_as_the_torch_path_at_small_temperature(kernel, k, seed):
    """At τ = 0.05 the steps amplify rounding (x = r/τ reaches ~200), and the two paths differ
    by up to ~1e4 ulp. Against 60-digit arithmetic the kernel's error is at most four times
    the torch path's plus 16 ulp of the largest entry: no less accurate, up to rounding luck."""
    generator = torch.Generator().manual_seed(seed)
    keys = torch.randn(7, generator=generator, dtype=torch.float64) * 3
    weights = torch.randn(7, generator=generator, dtype=torch.float64)
    exact = _exact(keys.tolist(), k, 0.05, weights.tolist())
    ours = run(keys, k, 0.05, weights, backend="native")
    theirs = run(keys, k, 0.05, weights, backend="torch")
    for which in (0, 1):
        ulp = torch.finfo(torch.float64).eps * float(exact[which].abs().max())
        error = float((ours[which] - exact[which]).abs().max())
        reference = float((theirs[which] - exact[which]).abs().max())
        assert error <= 4 * reference + 16 * ulp, (which, error, reference, ulp)


@pytest.mark.parametrize("k, tau", [(1, 0.5), (3, 1.0), (5, 0.5), (10, 2.0)])
def test_float32_kernel_is_as_close_to_float64_as_the_torch_path(kernel, k, tau):
    """In float32 the two paths round differently (the kernel's log(1 − α) is a series with at
    most 3.5 ulp of error). Against the float64 result, the kernel's error is at most four
    times the torch path's plus a few ulp of the largest entry."""
    generator = torch.Generator().manual_seed(k)
    keys = torch.randn(16, 200, generator=generator, dtype=torch.float64) * 2
    weights = torch.randn(16, 200, generator=generator, dtype=torch.float64)
    exact_y, exact_grad = run(keys, k, tau, weights, backend="torch")
    for which, exact in ((0, exact_y), (1, exact_grad)):
        ours = run(keys.float(), k, tau, weights.float(), backend="native")[which].double()
        theirs = run(keys.float(), k, tau, weights.float(), backend="torch")[which].double()
        ulp = torch.finfo(torch.float32).eps * float(exact.abs().max())
        error, reference = float((ours - exact).abs().max()), float((theirs - exact).abs().max())
        assert error <= 4 * reference + 8 * ulp, (which, error, reference, ulp)


def test_gradcheck_including_the_underflow_path(kernel):
    """Finite differences in float64, with rows where the winner's α rounds to 1 and the others'
    sum underflows (the kernel then keeps log α and takes α_l / (1 − α_top) from it)."""
    # Row 0: a gap of 80 at τ = 0.1 is exp(−800), below the float64 underflow threshold
    # (about exp(−694) with its margin), so the first step takes the log-sum-exp branch.
    keys = torch.tensor([[80.0, 0.0, -1.0, -2.5], [30.0, 0.0, -1.0, -2.5], [0.3, -0.2, 0.9, 0.0],
                         [5.0, 4.9, 0.0, -5.0]], dtype=torch.float64, requires_grad=True)
    for k, tau in ((2, 0.1), (3, 0.05), (3, 1.0), (4, 0.3)):
        assert torch.autograd.gradcheck(
            lambda x: relaxed_topk(x, k, tau, segment=2, backend="native"), (keys,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_underflow_rows_match_the_torch_path(kernel, dtype):
    """Keys 100 apart at τ = 0.1: exp(−1000) underflows in both precisions, so every step
    takes the log-sum-exp branch for log(1 − α_top)."""
    keys = torch.tensor([[100.0, 0.0, -1.0, -2.0], [50.0, 49.0, 0.0, -50.0]], dtype=dtype)
    weights = torch.tensor([[1.0, -2.0, 0.5, 3.0], [0.3, 1.0, -1.0, 2.0]], dtype=dtype)
    for k in (2, 3, 4):
        y, grad = run(keys, k, 0.1, weights, backend="native")
        y_ref, grad_ref = run(keys, k, 0.1, weights, backend="torch")
        torch.testing.assert_close(y, y_ref)
        torch.testing.assert_close(grad, grad_ref)
        assert torch.isfinite(grad).all()


def test_threads_give_the_same_bits_as_one_thread(kernel):
    """Rows are independent and each is computed the same way whichever thread runs it."""
    keys = torch.randn(37, 3000, generator=torch.Generator().manual_seed(0))
    weights = torch.randn(37, 3000, generator=torch.Generator().manual_seed(1))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run(keys, 8, 0.5, weights, backend="native")
        torch.set_num_threads(3)
        assert native.threads_for(37, 37 * 3000 * 8) == 3
        many = run(keys, 8, 0.5, weights, backend="native")
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[0], many[0]) and torch.equal(one[1], many[1])


def test_layouts_no_grad_and_empty_batches(kernel):
    keys = torch.randn(6, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    expected = relaxed_topk(keys.T.contiguous(), 3, 0.5, backend="torch")
    torch.testing.assert_close(relaxed_topk(keys.T, 3, 0.5, backend="native"), expected)
    with torch.no_grad():  # no checkpoints kept: only the output and the scratch rows
        x = keys.T.contiguous().requires_grad_(True)
        torch.testing.assert_close(relaxed_topk(x, 3, 0.5, backend="native"), expected)
        large = torch.randn(8, 4096, requires_grad=True)
        held = peak_memory(lambda: relaxed_topk(large, 16, 0.5, backend="native"),
                           torch.device("cpu"))[0]
        assert held <= 2 * large.numel() * 4, held / (large.numel() * 4)
    assert relaxed_topk(torch.empty(0, 5), 2, 0.5).shape == (0, 5)


def test_backend_errors_and_fallbacks(kernel, monkeypatch):
    with pytest.raises(ValueError, match="backend must be one of"):
        relaxed_topk(torch.zeros(3), 1, 0.5, backend="fast")
    with pytest.raises(ValueError, match="segment >= 1"):
        relaxed_topk(torch.zeros(3), 1, 0.5, segment=0)
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="finite keys"):
            relaxed_topk(torch.tensor([0.0, bad, 1.0]), 1, 0.5)
    half = torch.randn(2, 6).half()
    with pytest.raises(RuntimeError, match="torch.float16 on cpu"):
        relaxed_topk(half, 2, 0.5, backend="native")
    assert relaxed_topk(half, 2, 0.5).dtype == torch.float16  # auto: the torch path
    monkeypatch.setenv("ESTIBENCH_KERNELS", "off")
    assert native.library() is None and native.status().startswith("off")
    with pytest.raises(RuntimeError, match="ESTIBENCH_KERNELS=off"):
        relaxed_topk(torch.zeros(3), 1, 0.5, backend="native")
    keys = torch.randn(4, 6, dtype=torch.float64)
    monkeypatch.delenv("ESTIBENCH_KERNELS")
    on = relaxed_topk(keys, 2, 0.5)
    monkeypatch.setenv("ESTIBENCH_KERNELS", "off")
    torch.testing.assert_close(relaxed_topk(keys, 2, 0.5), on, rtol=1e-12, atol=1e-12)


def test_a_failed_build_warns_once_and_falls_back(monkeypatch, tmp_path):
    monkeypatch.setenv("ESTIBENCH_KERNELS", str(tmp_path))
    monkeypatch.setattr(native, "_status", None)
    monkeypatch.setattr(native, "_library", None)
    monkeypatch.setattr(native, "_compiler", lambda: None)
    with pytest.warns(RuntimeWarning, match="no C compiler found"):
        y = relaxed_topk(torch.tensor([2.0, 1.0, 0.0]), 2, 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once: the second call is silent
        assert torch.equal(relaxed_topk(torch.tensor([2.0, 1.0, 0.0]), 2, 0.5), y)
    assert native.status().startswith("no C compiler")
    with pytest.raises(RuntimeError, match="no C compiler found"):
        relaxed_topk(torch.tensor([2.0, 1.0, 0.0]), 2, 0.5, backend="native")


def test_a_build_is_cached_and_reused(kernel, monkeypatch, tmp_path):
    monkeypatch.setenv("ESTIBENCH_KERNELS", str(tmp_path))
    monkeypatch.setattr(native, "_status", None)
    monkeypatch.setattr(native, "_library", None)
    assert native.library() is not None
    (built,) = tmp_path.glob("relaxed_topk-*.so")
    stamp = built.stat().st_mtime_ns
    monkeypatch.setattr(native, "_status", None)
    monkeypatch.setattr(native, "_library", None)
    assert native.library() is not None
    assert [p.name for p in tmp_path.iterdir()] == [built.name]  # no temporary files left
    assert built.stat().st_mtime_ns == stamp
    # A file that does not load (say the disk filled up) is rebuilt. In a fresh process: this
    # one has the path loaded, and dlopen would hand back that mapping.
    built.unlink()
    built.write_bytes(b"not a shared object")
    done = subprocess.run([sys.executable, "-m", "estimators.native"], capture_output=True,
                          text=True, env={**os.environ, "ESTIBENCH_KERNELS": str(tmp_path)},
                          timeout=300)
    assert done.returncode == 0 and str(built) in done.stdout, done.stdout + done.stderr
    assert built.stat().st_size > 1000


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [2, 3, 5, 8, 9, 13, 17, 19])
def test_equal_keys_give_equal_entries_wherever_they_sit(kernel, dtype, n):
    """Every item goes through the same rounded operations, in a loop's vector body or in its
    scalar remainder, so a tie is never split (at τ = 1e-3 one ulp would split it)."""
    for k in sorted({1, n // 2 or 1, n - 1}):
        for tau in (1e-3, 0.5):
            y = relaxed_topk(torch.zeros(2, n, dtype=dtype), k, tau, backend="native")
            assert torch.equal(y, y[:, :1].expand_as(y)), (k, tau, y)
            torch.testing.assert_close(y, torch.full_like(y, k / n))


def test_edge_shapes_segments_and_temperatures(kernel):
    one = torch.tensor([[0.7]], dtype=torch.float64, requires_grad=True)  # n = 1: y = 1
    y = relaxed_topk(one, 1, 0.3, backend="native")
    (grad,) = torch.autograd.grad(y.sum(), one)
    assert y.item() == 1.0 and grad.item() == 0.0
    keys = torch.randn(2, 10, dtype=torch.float64)
    weights = torch.randn(2, 10, dtype=torch.float64)
    expected = run(keys, 3, 0.5, weights, backend="torch", segment=1)
    for backend in ("native", "torch"):  # a segment longer than k is k
        got = run(keys, 3, 0.5, weights, backend=backend, segment=10**10)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="too small for torch.float32"):
        relaxed_topk(keys.float(), 3, 1e-39)
    assert torch.isfinite(relaxed_topk(keys, 3, 1e-39)).all()  # float64: 1/τ is finite


@pytest.mark.parametrize("backend", ["native", "torch"])
def test_a_retained_graph_runs_backward_twice(kernel, backend):
    for n, k in ((6, 3), (8192, 64)):  # the torch path keeps every step, or checkpoints
        keys = torch.randn(n, dtype=torch.float64, requires_grad=True)
        y = relaxed_topk(keys, k, 0.5, backend=backend)
        (first,) = torch.autograd.grad(y[0], keys, retain_graph=True)
        (second,) = torch.autograd.grad(y[0], keys)
        assert torch.equal(first, second)


def test_a_failed_build_is_remembered_and_the_next_one_used(kernel, monkeypatch, tmp_path):
    monkeypatch.setenv("ESTIBENCH_KERNELS", str(tmp_path))
    monkeypatch.setattr(native, "_BUILDS", (("broken", ["-fno-such-option-estibench"], ["-lm"]),
                                            ("portable", [], ["-lm"])))
    compiled = []
    real_compile = native._compile
    monkeypatch.setattr(native, "_compile", lambda *a: compiled.append(a) or real_compile(*a))
    for expected_compiles in (2, 2):  # the second process-like start compiles nothing
        monkeypatch.setattr(native, "_status", None)
        monkeypatch.setattr(native, "_library", None)
        assert native.library() is not None
        assert "portable build" in native.status()
        assert len(compiled) == expected_compiles
    assert len(list(tmp_path.glob("relaxed_topk-broken-*.so.failed"))) == 1
