"""Numbers as people read them: significant figures, seconds and bytes with units.

Shared by the command line and the reports; no imports beyond the standard library.
"""

from __future__ import annotations

import math


def as_number(value) -> float | None:
    """``value`` as a float; None when it is missing, not a number, or NaN."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def number(value, digits: int = 3) -> str:
    """``digits`` significant figures; 'n/a' for a missing or NaN value."""
    value = as_number(value)
    if value is None:
        return "n/a"
    return "0" if value == 0 else f"{value:.{digits}g}"


def seconds(value) -> str:
    """A duration with a unit: s, ms, µs or ns, three significant figures."""
    value = as_number(value)
    if value is None:
        return "n/a"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value * 1e9:.3g} ns"


def size(value) -> str:
    """A byte count with a binary unit: B, KiB, MiB or GiB."""
    value = as_number(value)
    if value is None:
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
