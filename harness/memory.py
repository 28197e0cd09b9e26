"""Peak memory of one call, on CUDA and on the CPU.

CUDA: the caching allocator's peak (``torch.cuda.max_memory_allocated``) during the call,
minus the memory allocated before it.

CPU: torch has no allocator statistics for the CPU, and the process's resident set size mixes
in the Python heap and pages the C allocator keeps. We run the call once under the torch
profiler with ``profile_memory=True``, which records every CPU tensor allocation and free with
its size and time; the peak is the largest running sum of those events. Like the CUDA figure,
it counts tensor bytes held by torch (inputs already alive before the call excluded), not
interpreter overhead.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

import torch
from torch.profiler import ProfilerActivity, profile

CPU_METHOD = "torch profiler: peak running sum of CPU tensor allocations during the call"
CUDA_METHOD = "torch.cuda.max_memory_allocated during the call, minus memory allocated before"


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence the profiler back-end's start/stop lines, which it writes to fd 2."""
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr: nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_memory(fn: Callable[[], object], device: torch.device) -> tuple[int, str]:
    """Run ``fn`` once and return (peak bytes it allocated above the start, method)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - start), CUDA_METHOD
    if device.type != "cpu":
        raise NotImplementedError(f"no peak-memory method for device type {device.type!r}")
    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _quiet_stderr():
        prof.__enter__()
    try:
        fn()
    finally:
        with _quiet_stderr():
            prof.__exit__(None, None, None)
    events = sorted(
        (event.start_ns(), event.nbytes())
        for event in prof.profiler.kineto_results.events()
        if event.name() == "[memory]" and event.device_type() == torch.autograd.DeviceType.CPU
    )
    running = peak = 0
    for _, nbytes in events:
        running += nbytes
        peak = max(peak, running)
    return int(peak), CPU_METHOD
