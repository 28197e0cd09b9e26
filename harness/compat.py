"""Whether an estimator can run on a problem, decided from their ``info`` alone."""

from __future__ import annotations

from estimators.base import Estimator
from problems.base import Problem


def incompatibility(problem: Problem, estimator: Estimator) -> str | None:
    """Why ``estimator`` cannot run on ``problem``, or ``None`` when it can."""
    p, e = problem.info, estimator.info
    missing = estimator.unavailable()
    if missing is not None:
        return missing
    if p.family not in e.families:
        return (
            f"estimator {e.name!r} does not support the {p.family} family of problem "
            f"{p.name!r} (it supports: {', '.join(e.families)})"
        )
    if e.needs_relaxable and not p.relaxable:
        return (
            f"estimator {e.name!r} evaluates the objective on relaxed samples, and the "
            f"objective of {p.name!r} accepts only discrete ones"
        )
    if e.needs_single_variable and not p.single_variable:
        return (
            f"estimator {e.name!r} works on one {p.family} variable, and {p.name!r} is a "
            "product of several (its joint domain cannot be sampled without replacement)"
        )
    if e.needs_enumerable and not p.enumerable:
        return (
            f"estimator {e.name!r} enumerates the support, and the support of "
            f"{problem.spec!r} is too large to enumerate"
        )
    return None
