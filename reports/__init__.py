"""Reports: tables, figures and a self-contained HTML page built only from a study's store.

Reports read stored results (``reports.read``: sqlite3 and pandas) and never import torch, an
estimator or a problem, so a report can be built anywhere the store is.

Example:
    >>> from reports import build_report
    >>> files = build_report("estibench-results")  # doctest: +SKIP
"""

from reports.build import DEFAULT_FORMATS, FORMATS, build_report

__all__ = ["DEFAULT_FORMATS", "FORMATS", "build_report"]
