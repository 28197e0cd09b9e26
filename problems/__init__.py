"""The problem registry.

Importing this package registers every built-in problem; third-party problems come in through
the ``estibench.problems`` entry-point group. See ``problems.base`` for the contract.

Example:
    >>> from problems import PROBLEMS
    >>> PROBLEMS.make("bernoulli-toy:dim=3").spec
    'bernoulli-toy:dim=3,target=0.45,logit=0.0'
"""

from problems import (  # noqa: F401  (importing registers)
    bernoulli_toy,
    categorical_linear,
    counts,
    permutations,
    polynomial,
    real,
    subsets,
)
from problems.base import PROBLEMS, Problem, ProblemInfo, register

__all__ = ["PROBLEMS", "Problem", "ProblemInfo", "register"]
