"""Reports: tables, figures and a self-contained HTML page built only from a study's store.

Reports read stored results (``reports.read``: sqlite3 and pandas) and never import torch, an
estimator or a problem, so a report can be built anywhere the store is. ``build_report`` is
imported on first use, so that ``reports.read`` and ``reports.units`` stay light (the command
line imports them on every call; matplotlib and seaborn load only when a report is built).

Example:
    >>> from reports import build_report
    >>> files = build_report("estibench-results")  # doctest: +SKIP
"""

__all__ = ["DEFAULT_FORMATS", "FORMATS", "build_report"]


def __getattr__(name: str):
    if name in __all__:
        from reports import build

        return getattr(build, name)
    raise AttributeError(f"module 'reports' has no attribute {name!r}")
