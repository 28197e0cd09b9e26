"""The harness: measuring cells, and the command line.

Knows both registries; the estimators and problems know nothing of it.

Example:
    >>> from harness import measure
    >>> record = measure("categorical-linear:k=5", "exact", replicates=2, timing=False,
    ...                  memory_profile=False)
    >>> record["variance"]
    0.0
"""

from harness.compat import incompatibility
from harness.measure import measure
from harness.record import FIELDS, METRICS

__all__ = ["FIELDS", "METRICS", "incompatibility", "measure"]
