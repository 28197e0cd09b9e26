"""What the benchmark suites and scripts share: a case's device, and waiting for it.

asv skips a parameter combination whose ``setup`` raises ``NotImplementedError``; the message
is the reason it shows.
"""

from __future__ import annotations

import torch


def device_or_skip(name: str | torch.device) -> torch.device:
    """``torch.device(name)``, or ``NotImplementedError`` for CUDA on a machine without it."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise NotImplementedError("no CUDA device")
    return device


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously), so timers see all of it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
