"""Reports: tables, figures and an HTML page built only from a study's store.

Reports read stored results and never import an estimator. The report builders arrive with
the studies and the store; this package is reserved for them.
"""
