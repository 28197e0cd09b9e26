"""Meta-tests: every registered entry is exercised by the conformance suite."""

from __future__ import annotations

import pytest

from estimators import ESTIMATORS
from harness import incompatibility
from problems import PROBLEMS
from tests.conformance.examples import ESTIMATOR_EXAMPLES, PROBLEM_EXAMPLES


@pytest.mark.parametrize("name", ESTIMATORS.names())
def test_every_estimator_has_an_example(name):
    assert ESTIMATOR_EXAMPLES.get(name), f"add an example spec for {name!r} to harness/examples.py"
    for spec in ESTIMATOR_EXAMPLES[name]:
        assert ESTIMATORS.make(spec).info.name == name


@pytest.mark.parametrize("name", PROBLEMS.names())
def test_every_problem_has_an_example(name):
    assert PROBLEM_EXAMPLES.get(name), f"add an example spec for {name!r} to harness/examples.py"
    for spec in PROBLEM_EXAMPLES[name]:
        assert PROBLEMS.make(spec).info.name == name


def test_examples_name_only_registered_entries():
    assert set(ESTIMATOR_EXAMPLES) <= set(ESTIMATORS.names())
    assert set(PROBLEM_EXAMPLES) <= set(PROBLEMS.names())


@pytest.mark.parametrize("name", ESTIMATORS.names())
def test_every_estimator_meets_a_compatible_problem(name):
    problems = [PROBLEMS.make(s) for specs in PROBLEM_EXAMPLES.values() for s in specs]
    estimator = ESTIMATORS.make(ESTIMATOR_EXAMPLES[name][0])
    assert any(incompatibility(p, estimator) is None for p in problems), (
        f"no example problem can run {name!r}: the conformance suite would never exercise it"
    )


@pytest.mark.parametrize("name", PROBLEMS.names())
def test_every_problem_meets_a_compatible_estimator(name):
    estimators = [ESTIMATORS.make(s) for specs in ESTIMATOR_EXAMPLES.values() for s in specs]
    problem = PROBLEMS.make(PROBLEM_EXAMPLES[name][0])
    assert any(incompatibility(problem, e) is None for e in estimators)


@pytest.mark.parametrize("registry", [ESTIMATORS, PROBLEMS], ids=["estimators", "problems"])
def test_every_entry_documents_itself(registry):
    for cls in registry:
        assert cls.info.description, f"{cls.info.name} has no description"
        assert cls.__doc__ or cls.__module__ and __import__(cls.__module__, fromlist=["x"]).__doc__
        for option in cls.info.options:
            assert option.doc, f"option {option.name!r} of {cls.info.name} has no doc"
