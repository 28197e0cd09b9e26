"""CPU kernels in C, compiled on first use and called through ctypes.

The relaxed top-k kernel (``csrc/relaxed_topk.c``) runs all k steps of a row while the row
sits in cache; the torch implementation makes k round trips through memory per forward pass.
It is plain C99 with no dependency but libm, so it builds with the system C compiler in
about a second, without torch's headers or ninja.

**Where it is built.** In ``$ESTIBENCH_KERNELS`` if set, else ``$XDG_CACHE_HOME/estibench/
kernels`` (``~/.cache/...``), by the rule of :mod:`estimators.paths`. The file is named by a hash of the sources, the compiler (its resolved
path, size and modification time), the flags and this CPU's model and instruction-set flags (the build uses
``-march=native``), so machines sharing a home directory never load each other's builds.
Writes are atomic; processes building at the same time each write their own file and the
last rename wins.

**When it is not used.** ``ESTIBENCH_KERNELS=off`` (or another "off" of
:mod:`estimators.paths`), no C compiler, or a failed build: callers
fall back to their torch implementation, after one warning that says why. ``status()`` tells
which case holds. CUDA tensors always take the torch path.

**Threads.** ctypes releases the GIL during a call, so rows are split over up to
``torch.get_num_threads()`` Python threads, each running the kernel on its own rows with its
own scratch (allocated as torch tensors, so that the profiler's memory figures count it).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

import torch

from estimators.paths import cache_dir, cache_off, replacing

VARIABLE = "ESTIBENCH_KERNELS"
ABI = 5
_SOURCES = ("relaxed_topk.c", "relaxed_topk_impl.h")
# -ffp-contract=off: no fused multiply-adds, so that a loop's vector body and its scalar
# remainder round alike (see csrc/relaxed_topk.c).
_COMMON = ["-std=c99", "-O3", "-fPIC", "-shared", "-fno-math-errno", "-fno-trapping-math",
           "-ffp-contract=off"]
# (name, compile flags, link flags): the first build that succeeds is used.
_BUILDS = (
    ("native", ["-march=native", "-fopenmp-simd"], ["-lm"]),
    ("portable", [], ["-lm"]),
)
_BUILD_TIMEOUT_S = 300
_MIN_PARALLEL_WORK = 1 << 15  # row-elements × steps below which one thread does all rows

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_status: str | None = None  # None: not tried yet
_pool: tuple[int, ThreadPoolExecutor] | None = None  # (pid that made it, pool)


def kernel_dir() -> Path | None:
    """Where kernels are built, or None when ``ESTIBENCH_KERNELS=off``."""
    return cache_dir(VARIABLE, "kernels")


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_identity() -> str:
    """Model and instruction-set flags of this CPU (what ``-march=native`` depends on)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return f"{platform.machine()} {platform.processor()}"
    keep = ("model name", "flags", "Features", "CPU part", "CPU implementer")
    seen = {line.split(":")[0].strip(): line for line in lines if line.split(":")[0].strip() in keep}
    return f"{platform.machine()} " + " | ".join(sorted(seen.values()))


def _build(directory: Path) -> tuple[ctypes.CDLL | None, str]:
    compiler = _compiler()
    if compiler is None:
        return None, "no C compiler found (set CC, or install cc/gcc/clang)"
    try:  # the compiler's identity, by its resolved file (cheap, unlike running --version)
        real = os.path.realpath(compiler)
        stat = os.stat(real)
        version = f"{real} {stat.st_size} {stat.st_mtime_ns}"
    except OSError as error:
        return None, f"cannot stat the C compiler {compiler}: {error}"
    package = resources.files("estimators") / "csrc"
    texts = {name: (package / name).read_bytes() for name in _SOURCES}
    directory.mkdir(parents=True, exist_ok=True)
    errors = []
    for name, flags, libraries in _BUILDS:
        digest = hashlib.sha256()
        for part in (compiler, version, " ".join(_COMMON + flags + libraries), _cpu_identity(),
                     str(ABI), *(texts[source].decode() for source in _SOURCES)):
            digest.update(part.encode() + b"\0")
        target = directory / f"relaxed_topk-{name}-{digest.hexdigest()[:16]}.so"
        failed = target.with_name(target.name + ".failed")  # a build that failed here before
        if failed.exists():
            errors.append(f"{name}: {failed.read_text().strip()} (remembered in {failed.name})")
            continue
        for attempt in range(2):  # a cached file that does not load is rebuilt once
            if not target.exists():
                error = _compile(compiler, [*_COMMON, *flags], libraries, texts, target)
                if error:
                    errors.append(f"{name}: {error}")
                    failed.write_text(error + "\n")
                    break
            try:
                library = ctypes.CDLL(str(target))
                if library.estibench_relaxed_topk_abi() != ABI:
                    raise OSError("ABI version mismatch")
            except (OSError, AttributeError) as error:
                if attempt == 1:
                    errors.append(f"{name}: loading {target.name} failed: {error}")
                target.unlink(missing_ok=True)
                continue
            _declare(library)
            return library, f"C kernel, {name} build ({Path(compiler).name}): {target}"
    return None, "every build failed: " + "; ".join(errors)


def _compile(compiler: str, flags: list[str], libraries: list[str], texts: dict[str, bytes],
             target: Path) -> str | None:
    """Build ``target`` atomically (a partial file, then a rename); the error, or None."""
    try:
        with replacing(target) as partial, tempfile.TemporaryDirectory() as scratch:
            for source, text in texts.items():
                (Path(scratch) / source).write_bytes(text)
            command = [compiler, *flags, str(Path(scratch) / _SOURCES[0]), "-o", str(partial),
                       *libraries]
            done = subprocess.run(command, capture_output=True, text=True,
                                  timeout=_BUILD_TIMEOUT_S)
            if done.returncode != 0:
                raise _BuildError((done.stderr.strip().splitlines()
                                   or [f"exit {done.returncode}"])[-1])
        return None
    except (_BuildError, OSError, subprocess.SubprocessError) as error:
        return str(error)


class _BuildError(Exception):
    """The compiler's last line of errors (raised inside ``replacing`` so nothing replaces)."""


def _declare(library: ctypes.CDLL) -> None:
    pointer, size = ctypes.c_void_p, ctypes.c_int64
    for suffix in ("f32", "f64"):
        forward = getattr(library, f"estibench_relaxed_topk_forward_{suffix}")
        forward.argtypes = [pointer, pointer, pointer, size, size, size, size, ctypes.c_double,
                            size, pointer]
        forward.restype = None
        backward = getattr(library, f"estibench_relaxed_topk_backward_{suffix}")
        backward.argtypes = [pointer, pointer, pointer, pointer, size, size, size, size,
                             ctypes.c_double, size, pointer, pointer]
        backward.restype = None
        getattr(library, f"estibench_relaxed_topk_record_bytes_{suffix}").restype = size


def library() -> ctypes.CDLL | None:
    """The loaded kernel library, building it on first use; None if it is unavailable."""
    global _library, _status
    if cache_off(VARIABLE):
        return None
    if _status is not None:  # built, loaded or failed already: the per-call fast path
        return _library
    with _lock:
        if _status is None:
            directory = kernel_dir()
            try:
                _library, _status = _build(directory)
            except OSError as error:  # unwritable cache directory and the like
                _library, _status = None, f"cannot build in {directory}: {error}"
            if _library is None:
                warnings.warn(f"estibench's C kernels are unavailable, so the slower torch "
                              f"implementation is used: {_status}", RuntimeWarning, stacklevel=3)
    return _library


def status() -> str:
    """One line: where the kernels were built, or why they are not used."""
    if cache_off(VARIABLE):
        return f"off ({VARIABLE}={os.environ[VARIABLE]})"
    library()
    return _status or "not built"


def supports(tensor: torch.Tensor) -> bool:
    """Whether the kernels take this tensor: float32 or float64 on the CPU."""
    return tensor.device.type == "cpu" and tensor.dtype in (torch.float32, torch.float64)


def suffix(tensor: torch.Tensor) -> str:
    return "f32" if tensor.dtype == torch.float32 else "f64"


def threads_for(rows: int, work: int) -> int:
    """How many threads to split ``rows`` over, for ``work`` row-elements × steps in all."""
    if work < _MIN_PARALLEL_WORK:
        return 1
    return max(1, min(torch.get_num_threads(), rows))


def over_rows(rows: int, threads: int, call: Callable[[int, int, int], None]) -> None:
    """Run ``call(slot, row_lo, row_hi)`` on ``threads`` contiguous blocks of rows."""
    global _pool
    if threads <= 1:
        call(0, 0, rows)
        return
    bounds = [rows * i // threads for i in range(threads + 1)]
    with _lock:
        # A forked child (asv's fork server, a fork-started worker) inherits the pool object
        # but not its threads: it makes its own. A pool is replaced only for more threads than
        # CPUs; the old one is left to idle, since another caller may still be submitting to it.
        if _pool is None or _pool[0] != os.getpid() or _pool[1]._max_workers < threads:
            _pool = (os.getpid(), ThreadPoolExecutor(
                max_workers=max(threads, os.cpu_count() or 1),
                thread_name_prefix="estibench-kernel"))
        pool = _pool[1]
    futures = [pool.submit(call, slot, bounds[slot], bounds[slot + 1]) for slot in range(threads)]
    for future in futures:
        future.result()


def _after_fork_in_child() -> None:
    """A child forked while another thread held the lock (say during a build) would wait on it
    forever, and it has none of the parent's pool threads: start both afresh."""
    global _lock, _pool
    _lock, _pool = threading.Lock(), None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


if __name__ == "__main__":  # python -m estimators.native: build now and say what happened
    print(status())
    sys.exit(0 if _library is not None else 1)
