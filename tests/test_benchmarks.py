"""Meta-tests of the asv suites: every registered estimator is benchmarked for every family it
supports, on a problem of that family, and the benchmark modules import.

The suites' ``params`` are fixed lists (asv requires the same parameters whatever is
installed), so a new estimator or family must be added there by hand; these tests fail until
it is. They run no benchmark (speed is measured by asv, never in tests).
"""

from __future__ import annotations

import importlib
import pathlib

import pytest

from estimators import ESTIMATORS, FAMILIES
from problems import PROBLEMS

from benchmarks import bench_estimators

BENCHMARK_DIR = pathlib.Path(bench_estimators.__file__).parent


@pytest.mark.parametrize("name", ESTIMATORS.names())
def test_every_estimator_is_benchmarked_for_each_of_its_families(name):
    for family in ESTIMATORS.get(name).info.families:
        assert name in bench_estimators.FAMILY_ESTIMATORS.get(family, []), (
            f"add {name!r} to FAMILY_ESTIMATORS[{family!r}] in benchmarks/bench_estimators.py"
        )
    assert name in bench_estimators.Variance.params[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_has_a_representative_problem(family):
    for n in bench_estimators.SIZES:
        problem = PROBLEMS.make(bench_estimators.FAMILY_PROBLEMS[family].format(n=n))
        assert problem.info.family == family
    assert PROBLEMS.make(bench_estimators.VARIANCE_PROBLEMS[family]).info.family == family


def test_suites_list_only_supported_pairs():
    for family, names in bench_estimators.FAMILY_ESTIMATORS.items():
        for name in names:
            assert family in ESTIMATORS.get(name).info.families, (name, family)


def test_every_suite_lists_both_devices():
    for cls in vars(bench_estimators).values():
        if isinstance(cls, type) and not cls.__name__.startswith("_") and "device" in getattr(
            cls, "param_names", []
        ):
            assert list(cls.params[cls.param_names.index("device")]) == ["cpu", "cuda"]


@pytest.mark.parametrize(
    "module", sorted(path.stem for path in BENCHMARK_DIR.glob("*.py") if path.stem != "__init__")
)
def test_benchmark_modules_import(module):
    importlib.import_module(f"benchmarks.{module}")
