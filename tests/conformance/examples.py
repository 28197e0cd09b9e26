"""The example specs the conformance suite runs: they live in ``harness/examples.py``, inside
the installed package, because ``estibench check`` meets a plug-in with them too. Add a new
entry's example there; this module re-exports them for the tests that import them from here.
"""

from harness.examples import (  # noqa: F401  (re-exported)
    ESTIMATOR_EXAMPLES,
    PROBLEM_EXAMPLES,
    all_estimator_examples,
    all_problem_examples,
)
