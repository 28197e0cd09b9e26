"""What the benchmark suites and scripts share: a case's device, waiting for it, and timing
several kernels side by side.

asv skips a parameter combination whose ``setup`` raises ``NotImplementedError``; the message
is the reason it shows.

Importing this module as part of the package starts the torch profiler once (CPU-only torch
builds; scripts that import it directly do not pay for it). asv runs every
parameter case in a process forked from a server that imported the suites, so each case
inherits a started profiler instead of paying its start-up, about 2 s here, inside
``track_peak_tensor_bytes``: with 54 relaxed top-k cases that alone was 2 minutes of CI. On a
CUDA build it is skipped: the profiler could initialise CUDA in the server, and a forked
process cannot use CUDA initialised by its parent.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from harness.measure import synchronize as sync
from harness.memory import peak_memory

if __package__ and torch.version.cuda is None and torch.version.hip is None:
    peak_memory(lambda: None, torch.device("cpu"))


def interleaved_medians(calls: dict[str, Callable[[], object]], device: torch.device, *,
                        budget: float, rounds: int = 3) -> dict[str, float]:
    """Median seconds of each call, timed side by side: one warm-up call each, then rounds of
    one call each (device synchronised around every call) until ``budget`` seconds per call
    are spent and at least ``rounds`` rounds are done."""
    for call in calls.values():
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    spent = 0.0
    while spent < len(calls) * budget or min(map(len, times.values())) < rounds:
        for name, call in calls.items():
            sync(device)
            start = time.perf_counter()
            call()
            sync(device)
            times[name].append(time.perf_counter() - start)
            spent += times[name][-1]
    return {name: statistics.median(values) for name, values in times.items()}


def device_or_skip(name: str | torch.device) -> torch.device:
    """``torch.device(name)``, or ``NotImplementedError`` for CUDA on a machine without it."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise NotImplementedError("no CUDA device")
    return device
