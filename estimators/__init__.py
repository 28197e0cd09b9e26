"""The estimator registry.

Importing this package registers every built-in estimator; third-party estimators come in
through the ``estibench.estimators`` entry-point group. See ``estimators.base`` for the contract.

Example:
    >>> from estimators import ESTIMATORS
    >>> ESTIMATORS.make("reinforce:baseline=loo").info.unbiased
    True
"""

from estimators import (  # noqa: F401  (importing registers)
    antithetic,
    counts,
    exact,
    exactk,
    gengs,
    gumbel_softmax,
    mvd,
    neuralsort,
    rebar,
    reinforce,
    relaxed_topk,
    sinkhorn,
    straight_through,
    unordered_set,
)
from estimators.base import ESTIMATORS, Estimator, EstimatorInfo, ExpectedFailure, register
from estimators.errors import IncompatibleError, SpecError, UserError
from estimators.families import FAMILIES, draw, family_of
from estimators.exactk import ExactK
from estimators.plackett_luce import PlackettLuce
from estimators.registry import Option
from estimators.subset import Subset

__all__ = [
    "ESTIMATORS",
    "FAMILIES",
    "Estimator",
    "EstimatorInfo",
    "ExactK",
    "ExpectedFailure",
    "IncompatibleError",
    "Option",
    "PlackettLuce",
    "SpecError",
    "Subset",
    "UserError",
    "draw",
    "family_of",
    "register",
]
