"""What the benchmark suites and scripts share: a case's device, and waiting for it.

asv skips a parameter combination whose ``setup`` raises ``NotImplementedError``; the message
is the reason it shows.
"""

from __future__ import annotations

import torch

from harness.measure import synchronize as sync  # noqa: F401  (re-exported for the suites)


def device_or_skip(name: str | torch.device) -> torch.device:
    """``torch.device(name)``, or ``NotImplementedError`` for CUDA on a machine without it."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise NotImplementedError("no CUDA device")
    return device
