"""The memory estimate bounds what a batched pass holds, and the budget is enforced.

The harness draws as many replicates per pass as ``replicate_bytes`` says fit in its budget, so
that estimate must bound the real cost of a replicate. Measured here as the torch profiler sees
it (``harness.memory``, the peak running sum of tensor allocations): the peak of a pass of R₂
replicates minus that of R₁ replicates, divided by R₂ − R₁, is what one replicate adds; it must
not exceed the estimate. This is an exact (deterministic) check: the profiler counts bytes.
"""

from __future__ import annotations

import pytest
import torch

from estimators import ESTIMATORS
from harness import measure as measure_function
from harness.budget import MemoryBudgetError, parse_size
from harness.compat import incompatibility
from harness.measure import batched_estimates, replicate_bytes
from harness.memory import peak_memory
from problems import PROBLEMS
from tests.conformance.examples import PROBLEM_EXAMPLES, all_estimator_examples

ESTIMATOR_SPECS = all_estimator_examples()
SUBSET_ONLY = ["reinforce:baseline=loo,set_probability=ordered",
               "reinforce:baseline=loo,set_probability=unordered"]
# One example of every registered problem, and the sizes where the 2^k programme, the
# relaxation's steps and the GenGS support dominate.
PROBLEM_SPECS = [specs[0] for specs in PROBLEM_EXAMPLES.values()] + [
    "subset-linear:n=40,k=8", "subset-linear:n=2000,k=100", "poisson-quadratic:dim=20,rate=50",
    "negbinomial-quadratic:dim=20", "categorical-linear:k=500", "permutation-sort:n=20",
]
PAIRS = [
    (p, e) for p in PROBLEM_SPECS
    for e in ESTIMATOR_SPECS + (SUBSET_ONLY if PROBLEMS.make(p).info.family == "subset" else [])
    if incompatibility(PROBLEMS.make(p), ESTIMATORS.make(e)) is None
    and not (e.endswith("=unordered") and "k=100" in p)  # k > 16: refused (test_reinforce_*)
]


def _pass_peak(problem, estimator, replicates: int) -> int:
    generator = torch.Generator().manual_seed(0)
    return peak_memory(lambda: batched_estimates(
        problem, estimator, num_samples=3, replicates=replicates, generator=generator,
        chunk_size=replicates, memory_budget=2**40), torch.device("cpu"))[0]


@pytest.mark.parametrize("problem_spec, estimator_spec", PAIRS)
def test_replicate_bytes_bounds_what_one_replicate_adds(problem_spec, estimator_spec):
    problem = PROBLEMS.make(problem_spec).to("cpu", torch.float32)
    estimator = ESTIMATORS.make(estimator_spec)
    small, large = 2, 6
    added = (_pass_peak(problem, estimator, large) - _pass_peak(problem, estimator, small)) / (
        large - small)
    assert added <= replicate_bytes(problem, estimator, 3)


def test_torch_path_of_relaxed_topk_is_bounded_too(monkeypatch):
    monkeypatch.setenv("ESTIBENCH_KERNELS", "off")
    problem = PROBLEMS.make("subset-linear:n=1000,k=36").to("cpu", torch.float32)  # 6 segments
    for spec in ("relaxed-topk", "st-relaxed-topk"):
        estimator = ESTIMATORS.make(spec)
        added = (_pass_peak(problem, estimator, 4) - _pass_peak(problem, estimator, 2)) / 2
        assert added <= replicate_bytes(problem, estimator, 3)


def test_a_cell_over_the_budget_stops_before_allocating_with_one_line():
    with pytest.raises(MemoryBudgetError) as raised:
        measure_function("subset-linear:n=100,k=9", "reinforce:set_probability=unordered",
                         num_samples=16, replicates=10, memory_budget="1MB",
                         timing=False, memory_profile=False)
    message = str(raised.value)
    assert "\n" not in message and "1MB" not in message  # the size is shown in binary units
    assert "memory budget of 976.6 KiB" in message and "--memory-budget" in message


def test_the_budget_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("ESTIBENCH_MEMORY_BUDGET", "2KiB")
    with pytest.raises(MemoryBudgetError, match=r"ESTIBENCH_MEMORY_BUDGET"):
        measure_function("categorical-linear:k=500", "reinforce", num_samples=4, replicates=2,
                         timing=False, memory_profile=False)


@pytest.mark.parametrize("text, expected", [("4GB", 4 * 10**9), ("512MiB", 2**29), ("1e9", 10**9),
                                            (2048, 2048), (" 1.5 kib ", 1536)])
def test_sizes_parse(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "-1GB", "lots", "0", "nan", "1 parsec", True])
def test_bad_sizes_are_one_clear_error(text):
    from estimators.errors import UserError

    with pytest.raises(UserError, match="memory budget must be"):
        parse_size(text)


def test_reinforce_refuses_the_set_probability_beyond_k_16():
    from estimators.errors import UserError

    with pytest.raises(UserError, match="set_probability=ordered"):
        measure_function("subset-linear:n=40,k=17", "reinforce:set_probability=unordered",
                         replicates=2, timing=False, memory_profile=False)


def test_streamed_moments_equal_the_whole_sample_ones():
    from harness.measure import streamed_moments

    x = torch.randn(1001, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = 3 * x + 1e3  # an offset that a naive sum of squares would cancel badly
    mean, variance, count = streamed_moments(x.split(37))
    assert count == 1001
    # Both are sums of 1001 terms of size ~1e3: round-off ~ 1001 ε 1e3 in the mean, and the
    # deviations (~3) are formed after subtracting block means accurate to the same order.
    eps = torch.finfo(torch.float64).eps
    torch.testing.assert_close(mean, x.mean(0), rtol=0, atol=1001 * eps * 1e3)
    torch.testing.assert_close(variance, x.var(0), rtol=1001 * eps * 1e3, atol=0)


def test_the_statistics_of_many_estimates_of_many_coordinates_count_against_the_budget():
    with pytest.raises(MemoryBudgetError, match="estimates of 10000 coordinates"):
        measure_function("subset-linear:n=10000,k=100", "relaxed-topk", replicates=10_000,
                         memory_budget="2GB", timing=False, memory_profile=False)


def test_a_problem_too_large_to_allocate_is_one_line(capsys):
    from harness.cli import main

    # 8e17 bytes: beyond any 64-bit machine's address space (2^57 at most), whatever the
    # kernel's overcommit policy.
    assert main(["measure", "bernoulli-toy:dim=100000000000000000", "reinforce",
                 "--replicates", "2", "--no-timing", "--no-memory"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("estibench: error: out of memory (an allocation of 745058059.7 GiB "
                          "failed)")


def test_training_variance_is_streamed(monkeypatch):
    """Training's gradient variance reduces the estimates pass by pass (never R x D at once)."""
    import importlib

    from harness.training import train

    training = importlib.import_module("harness.training")
    blocks = []
    chunks = training.estimate_chunks
    monkeypatch.setattr(training, "estimate_chunks", lambda *a, **kw: (
        block for block in chunks(*a, **kw) if not blocks.append(block.shape[0])))
    monkeypatch.setattr(importlib.import_module("harness.measure"), "PASS_BYTES", 1)
    record = train("bernoulli-toy", "reinforce", num_samples=1, steps=1, eval_every=1,
                   variance_replicates=5)
    assert blocks == [1] * 10  # 2 evaluations x 5 one-replicate passes
    assert all(point["gradient_variance"] > 0 for point in record["curve"])
