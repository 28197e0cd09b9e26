"""What the benchmark suites and scripts share: a case's device, and waiting for it.

asv skips a parameter combination whose ``setup`` raises ``NotImplementedError``; the message
is the reason it shows.

Importing this module starts the torch profiler once (CPU-only torch builds). asv runs every
parameter case in a process forked from a server that imported the suites, so each case
inherits a started profiler instead of paying its start-up, about 2 s here, inside
``track_peak_tensor_bytes``: with 54 relaxed top-k cases that alone was 2 minutes of CI. On a
CUDA build it is skipped: the profiler could initialise CUDA in the server, and a forked
process cannot use CUDA initialised by its parent.
"""

from __future__ import annotations

import torch

from harness.measure import synchronize as sync  # noqa: F401  (re-exported for the suites)
from harness.memory import peak_memory

if torch.version.cuda is None and torch.version.hip is None:
    peak_memory(lambda: None, torch.device("cpu"))


def device_or_skip(name: str | torch.device) -> torch.device:
    """``torch.device(name)``, or ``NotImplementedError`` for CUDA on a machine without it."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise NotImplementedError("no CUDA device")
    return device
