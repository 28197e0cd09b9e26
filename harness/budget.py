"""The memory budget of a cell: how much one batched pass may hold, and sizes people can type.

A cell's estimates are drawn in batched passes; the harness estimates the bytes one replicate
needs (``Estimator.pass_elements`` and ``Problem.sample_elements``) and draws as many replicates
per pass as fit in ``min(budget, PASS_BYTES)``. A cell whose *one* replicate would not fit
stops before allocating anything, with one line naming the budget and how to raise it.

The default budget is half the memory available when the cell starts: ``MemAvailable`` of
``/proc/meminfo`` on Linux (else the free physical pages) on the CPU, the free memory of the
device on CUDA. ``ESTIBENCH_MEMORY_BUDGET`` (a size such as ``4GB``) or the ``memory_budget``
argument (``measure``, ``train``, ``run_study``) / ``--memory-budget`` option replace it.
"""

from __future__ import annotations

import os
import re

import torch

from estimators.errors import UserError

ENV = "ESTIBENCH_MEMORY_BUDGET"
DEFAULT_FRACTION = 0.5
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6,
          "mib": 2**20, "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12,
          "tib": 2**40}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*$")


def parse_size(value: int | float | str, what: str = "memory budget") -> int:
    """Bytes from ``4GB``, ``512MiB``, ``1e9`` or an integer; ``UserError`` otherwise."""
    if isinstance(value, bool):
        raise UserError(f"{what} must be a size such as 4GB or 512MiB, got {value!r}")
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    else:
        match = _SIZE.match(str(value))
        if not match or match.group(2).lower() not in _UNITS:
            raise UserError(f"{what} must be a size such as 4GB, 512MiB or 1e9 (bytes), "
                            f"got {value!r}")
        number, unit = float(match.group(1)), match.group(2).lower()
    size = number * _UNITS[unit]
    if not size >= 1 or size != size or size == float("inf"):
        raise UserError(f"{what} must be at least 1 byte, got {value!r}")
    return int(size)


def available_memory(device: torch.device) -> int:
    """Bytes that can be allocated now on ``device`` without swapping or evicting."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not a POSIX system: assume 4 GiB
        return 4 * 2**30


def memory_budget(device: torch.device, budget: int | float | str | None = None) -> int:
    """The budget in bytes: ``budget`` if given, else ``$ESTIBENCH_MEMORY_BUDGET``, else
    ``DEFAULT_FRACTION`` of the memory available on ``device`` now."""
    if budget is None and os.environ.get(ENV):
        return parse_size(os.environ[ENV], what=f"${ENV}")
    if budget is None:
        return int(DEFAULT_FRACTION * available_memory(device))
    return parse_size(budget)


def describe(budget: int | float | str | None) -> str:
    """How the budget was set, for messages."""
    if budget is not None:
        return "the --memory-budget given"
    if os.environ.get(ENV):
        return f"${ENV}"
    return f"the default, {DEFAULT_FRACTION:.0%} of the memory available now"


def resolve(device: torch.device, budget: int | float | str | None) -> tuple[int, str]:
    """(the budget in bytes, how it was set): ``memory_budget`` and ``describe`` at once."""
    return memory_budget(device, budget), describe(budget)


def require(needed: int, subject: str, purpose: str, budget: int, source: str,
            instead: str) -> None:
    """``MemoryBudgetError``, one line, when ``needed`` bytes exceed ``budget``: what needs
    them and for what, the budget and how it was set, how to raise it or what to lower."""
    if needed > budget:
        from reports.units import size

        raise MemoryBudgetError(
            f"{subject} needs about {size(needed)} {purpose}, more than the memory budget of "
            f"{size(budget)} ({source}); raise it with --memory-budget (or ${ENV}), or {instead}"
        )


class MemoryBudgetError(UserError):
    """One replicate of a cell would need more memory than its budget."""


def out_of_memory(error: BaseException) -> str | None:
    """The allocator's one-line reason when ``error`` is a failed allocation (a problem or a
    setting too large for this machine), else None."""
    message = str(error)
    if not (isinstance(error, MemoryError) or "can't allocate memory" in message
            or type(error).__name__ == "OutOfMemoryError"):
        return None
    asked = re.search(r"allocate ([0-9]+) bytes", message)
    if asked:
        from reports.units import size

        return f"an allocation of {size(int(asked.group(1)))} failed"
    return message.splitlines()[0] if message else type(error).__name__
