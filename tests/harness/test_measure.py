"""The harness: record fields, batching, closed-form variance, bias detection, memory, errors.

Statistical checks follow tests/statistical.py: fixed seeds, thresholds from α = 1e-4.
"""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
from scipy import integrate, stats

from estimators import ESTIMATORS, IncompatibleError, UserError
from harness import FIELDS, measure
from estimators.base import SAMPLE_COPIES
from harness.measure import batched_estimates
from harness.memory import peak_memory
from harness.stats import bias_test
from problems import PROBLEMS
from problems.bernoulli_toy import BernoulliToy
from tests.statistical import ALPHA, z_threshold

QUIET = {"timing": False, "memory_profile": False}


def test_record_has_exactly_the_documented_fields_and_is_json():
    record = measure("bernoulli-toy:dim=2", "reinforce", replicates=50, timing=True)
    assert tuple(record) == FIELDS
    assert json.loads(json.dumps(record, allow_nan=False)) == record
    assert record["true_gradient_source"] == "exact" and record["true_gradient_stderr"] is None
    assert len(record["parameters"]) == len(record["mean_gradient"]) == 2
    assert record["time_per_estimate_s"] > 0 and record["peak_memory_bytes"] >= 0
    assert record["problem"] == "bernoulli-toy:dim=2,target=0.45,logit=0.0"
    assert record["estimator"] == "reinforce:baseline=none,set_probability=auto"
    assert record["objective_evaluations"] == 1


def test_objective_evaluations_per_estimate_in_the_record():
    """num_samples · evaluations per sample; the exact estimator evaluates the whole support
    (2^3 points for three Bernoulli variables) whatever num_samples is."""
    loo = measure("bernoulli-toy:dim=3", "reinforce:baseline=loo", num_samples=4, replicates=20,
                  **QUIET)
    exact = measure("bernoulli-toy:dim=3", "exact", num_samples=4, replicates=20, **QUIET)
    assert (loo["objective_evaluations"], exact["objective_evaluations"]) == (4, 8)


def test_same_seed_same_record_and_other_seed_other_numbers():
    a = measure("categorical-linear", "gumbel-softmax", replicates=64, seed=3, **QUIET)
    b = measure("categorical-linear", "gumbel-softmax", replicates=64, seed=3, **QUIET)
    c = measure("categorical-linear", "gumbel-softmax", replicates=64, seed=4, **QUIET)
    assert a == b
    assert a["mean_gradient"] != c["mean_gradient"]


def test_chunking_does_not_change_the_estimates():
    import importlib

    measure_module = importlib.import_module("harness.measure")  # the package exports a function
    problem = PROBLEMS.make("categorical-linear:k=6")
    estimator = ESTIMATORS.make("reinforce:baseline=loo")
    whole = batched_estimates(problem, estimator, num_samples=1 + 1, replicates=50,
                              generator=torch.Generator().manual_seed(0))
    # Chunks of 10 replicates draw [S, 10, k] noise five times; one pass draws [S, 50, k]. The
    # streams coincide only for S = 1, so compare S = 1 for equality...
    one = ESTIMATORS.make("reinforce")
    whole1 = batched_estimates(problem, one, num_samples=1, replicates=50,
                               generator=torch.Generator().manual_seed(0))
    chunked1 = batched_estimates(problem, one, num_samples=1, replicates=50, chunk_size=10,
                                 generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(whole1, chunked1, rtol=0, atol=0)
    # ...and for S = 2 check that chunks are reproducible and of the right shape.
    assert whole.shape == (50, 6) and torch.isfinite(whole).all()
    # Any memory budget of at least PASS_BYTES leaves the passes, hence the numbers, alone
    # (a smaller budget can split them: docs/measurements.md, "Memory budget").
    for budget in (measure_module.PASS_BYTES, 2**40):
        again = batched_estimates(problem, estimator, num_samples=2, replicates=50,
                                  generator=torch.Generator().manual_seed(0),
                                  memory_budget=budget)
        torch.testing.assert_close(again, whole, rtol=0, atol=0)


def count_passes(monkeypatch, estimator) -> list[int]:
    """The replicates of every batched pass ``estimator`` runs, as they happen."""
    passes = []
    surrogate = estimator.surrogate
    monkeypatch.setattr(estimator, "surrogate", lambda dist, *a, **kw: (
        passes.append(dist.batch_shape[0]), surrogate(dist, *a, **kw))[1])
    return passes


def test_large_objectives_are_drawn_in_smaller_chunks(monkeypatch):
    import importlib

    measure_module = importlib.import_module("harness.measure")  # the package exports a function
    problem = PROBLEMS.make("categorical-linear:k=6")
    one = ESTIMATORS.make("reinforce")
    passes = count_passes(monkeypatch, one)
    whole = batched_estimates(problem, one, num_samples=1, replicates=50,
                              generator=torch.Generator().manual_seed(0))
    assert passes == [50]
    # A problem that says each sample creates 1,000 numbers, with passes of at most 8 replicates'
    # bytes: 8 per pass.
    monkeypatch.setattr(problem, "sample_elements", lambda: 1000)
    per_replicate = measure_module.replicate_bytes(problem, one, 1)
    assert per_replicate == (1000 + 6 * SAMPLE_COPIES) * 8  # float64
    monkeypatch.setattr(measure_module, "PASS_BYTES", 8 * per_replicate + 7)
    passes.clear()
    bounded = batched_estimates(problem, one, num_samples=1, replicates=50,
                                generator=torch.Generator().manual_seed(0))
    assert passes == [8] * 6 + [2]
    torch.testing.assert_close(bounded, whole, rtol=0, atol=0)


def test_the_budget_bounds_the_replicates_per_pass(monkeypatch):
    from harness.measure import replicate_bytes

    problem = PROBLEMS.make("categorical-linear:k=6")
    estimator = ESTIMATORS.make("reinforce")
    passes = count_passes(monkeypatch, estimator)
    per_replicate = replicate_bytes(problem, estimator, 2)
    batched_estimates(problem, estimator, num_samples=2, replicates=30,
                      generator=torch.Generator().manual_seed(0),
                      memory_budget=7 * per_replicate + 1)
    assert passes == [7, 7, 7, 7, 2]


def test_real_tasks_bound_their_batched_passes():
    pytest.importorskip("sklearn")
    vae = PROBLEMS.make("vae-bernoulli:batch=4,hidden=64")
    assert vae.sample_elements() == 4 * 4 * (64 + 64)  # 8×8 digits, four copies
    topic = PROBLEMS.make("topic-poisson:batch=4")
    assert topic.sample_elements() == 4 * 4 * (64 + 4258)


def _single_estimate_distribution_bernoulli(t: float, p: float, num_samples: int, loo: bool):
    """Exact distribution of the REINFORCE estimate on bernoulli-toy (dim 1), by enumeration.

    Returns (values, probabilities) over all 2^S sample configurations, using the formula
    ĝ = (1/S) Σ_s (f_s − b_s)(z_s − p), b_s = 0 or the mean of the other samples' f.
    """
    values, probs = [], []
    for zs in itertools.product([0.0, 1.0], repeat=num_samples):
        f = [(z - t) ** 2 for z in zs]
        g = 0.0
        for s, z in enumerate(zs):
            baseline = (sum(f) - f[s]) / (num_samples - 1) if loo else 0.0
            g += (f[s] - baseline) * (z - p)
        values.append(g / num_samples)
        probs.append(math.prod(p if z else 1 - p for z in zs))
    return values, probs


def _variance_check(values, probs, record):
    """|s² − σ²| ≤ z_{α/2} · sd(s²), with sd(s²)² = (μ4 − σ⁴ (R−3)/(R−1)) / R exactly."""
    mu = sum(v * q for v, q in zip(values, probs))
    var = sum((v - mu) ** 2 * q for v, q in zip(values, probs))
    mu4 = sum((v - mu) ** 4 * q for v, q in zip(values, probs))
    r = record["replicates"]
    sd = math.sqrt((mu4 - var**2 * (r - 3) / (r - 1)) / r)
    assert abs(record["variance"] - var) <= z_threshold() * sd, (record["variance"], var, sd)
    assert abs(record["mean_gradient"][0] - mu) <= z_threshold() * math.sqrt(var / r)
    return var


@pytest.mark.statistical
@pytest.mark.parametrize("num_samples, baseline", [(1, "none"), (4, "none"), (2, "loo"), (5, "loo")])
@pytest.mark.parametrize("logit", [0.0, 1.5])
def test_reinforce_variance_matches_exact_enumeration(num_samples, baseline, logit):
    t = 0.45
    record = measure(f"bernoulli-toy:logit={logit},target={t}", f"reinforce:baseline={baseline}",
                     num_samples=num_samples, replicates=4000, seed=11, dtype="float64", **QUIET)
    p = 1 / (1 + math.exp(-logit))
    values, probs = _single_estimate_distribution_bernoulli(t, p, num_samples, baseline == "loo")
    _variance_check(values, probs, record)


def test_reinforce_closed_form_variance_one_sample():
    """Var ĝ = p(1−p)[(1−t)⁴(1−p) + t⁴p] − (p(1−p)(1−2t))², and the enumeration agrees."""
    t, p = 0.45, 0.5
    closed = p * (1 - p) * ((1 - t) ** 4 * (1 - p) + t**4 * p) - (p * (1 - p) * (1 - 2 * t)) ** 2
    values, probs = _single_estimate_distribution_bernoulli(t, p, 1, False)
    mu = sum(v * q for v, q in zip(values, probs))
    assert math.isclose(sum((v - mu) ** 2 * q for v, q in zip(values, probs)), closed, rel_tol=1e-12)


@pytest.mark.statistical
@pytest.mark.parametrize("spec", ["reinforce", "reinforce:baseline=loo"])
def test_unbiased_estimators_pass_the_bias_test(spec):
    for problem in ("bernoulli-toy", "categorical-linear"):
        record = measure(problem, spec, num_samples=2, replicates=20000, seed=5, **QUIET)
        assert record["bias_pvalue"] > ALPHA, (problem, record["bias_pvalue"])


def binary_concrete_expected_gradient(theta: float, t: float, tau: float) -> float:
    """E[2(y − t) y(1 − y)/τ], y = σ((θ + log u − log(1 − u))/τ), by quadrature over u."""

    def integrand(u: float) -> float:
        y = 1 / (1 + math.exp(-(theta + math.log(u) - math.log1p(-u)) / tau))
        return 2 * (y - t) * y * (1 - y) / tau

    value, error = integrate.quad(integrand, 0, 1, epsabs=1e-13, epsrel=1e-12, limit=200)
    assert error < 1e-10
    return value


@pytest.mark.statistical
@pytest.mark.parametrize("logit", [0.0, -1.0])
def test_gumbel_softmax_bias_is_detected_and_equals_quadrature(logit):
    t, tau = 0.45, 0.5
    record = measure(f"bernoulli-toy:logit={logit}", f"gumbel-softmax:temperature={tau}",
                     replicates=200_000, seed=5, dtype="float64", **QUIET)
    assert record["bias_pvalue"] < ALPHA
    expected = binary_concrete_expected_gradient(logit, t, tau)
    s = 1 / (1 + math.exp(-logit))
    exact_bias = expected - (1 - 2 * t) * s * (1 - s)
    # Power: the exact bias is over 2 thresholds away from 0, so a miss is rarer than α.
    assert abs(exact_bias) > 2 * z_threshold() * record["bias_stderr"][0]
    assert abs(record["bias"][0] - exact_bias) <= z_threshold() * record["bias_stderr"][0]


def test_exact_estimator_has_zero_variance_and_no_bias():
    for dtype in ("float32", "float64"):
        record = measure("categorical-linear:k=8", "exact", replicates=10, dtype=dtype, **QUIET)
        assert record["variance"] == 0.0 and record["bias_pvalue"] == 1.0
        assert record["snr"] is None and record["cosine"] == pytest.approx(1.0)


def test_bias_test_agrees_with_scipy_on_one_coordinate():
    x = torch.randn(200, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.2
    mean, se = x.mean(0), x.std(0) / math.sqrt(200)
    ours = bias_test(mean, se, 200, tolerance=torch.zeros(1))
    assert ours == pytest.approx(stats.ttest_1samp(x[:, 0].numpy(), 0.0).pvalue, rel=1e-10)


def test_bias_test_zero_variance_coordinates():
    zero = torch.zeros(2)
    assert bias_test(torch.tensor([0.0, 1e-9]), zero, 10, tolerance=torch.full((2,), 1e-8)) == 1.0
    assert bias_test(torch.tensor([0.0, 1e-3]), zero, 10, tolerance=torch.full((2,), 1e-8)) == 0.0


class NoExactToy(BernoulliToy):
    """bernoulli-toy pretending its expectation is intractable (not registered)."""

    def expected_objective(self):
        raise NotImplementedError


@pytest.mark.statistical
def test_reference_gradient_stands_in_when_there_is_no_exact_one():
    problem = NoExactToy(dim=2, logit=0.5)
    record = measure(problem, "reinforce", replicates=2000, reference_replicates=20000, **QUIET)
    assert record["true_gradient_source"].startswith("reference:reinforce:baseline=loo")
    exact = measure("bernoulli-toy:dim=2,logit=0.5", "reinforce", replicates=2, **QUIET)
    bonferroni = z_threshold(ALPHA / 2)
    for ref, se, true in zip(record["true_gradient"], record["true_gradient_stderr"],
                             exact["true_gradient"]):
        assert abs(ref - true) <= bonferroni * se
    assert record["bias_pvalue"] > ALPHA


def test_cpu_peak_memory_responds_to_a_known_allocation():
    n = 2**21  # 8 MiB of float32
    one, _ = peak_memory(lambda: torch.ones(n), torch.device("cpu"))
    both, _ = peak_memory(lambda: (torch.ones(n), torch.ones(n)), torch.device("cpu"))
    sequential, _ = peak_memory(lambda: [torch.ones(n).sum() for _ in range(3)], torch.device("cpu"))
    assert 4 * n <= one < 4 * n + 4096
    assert 8 * n <= both < 8 * n + 4096
    assert 4 * n <= sequential < 8 * n  # freed before the next: the peak is one tensor


def test_measured_memory_grows_with_the_problem():
    small = measure("categorical-linear:k=10", "gumbel-softmax", num_samples=100, replicates=2, timing=False)
    large = measure("categorical-linear:k=1000", "gumbel-softmax", num_samples=100, replicates=2, timing=False)
    # The relaxed sample alone is S·k float32 values.
    assert large["peak_memory_bytes"] >= 100 * 1000 * 4 > small["peak_memory_bytes"]


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"problem": "bernoulli-toy:dim=40", "estimator": "exact"}, IncompatibleError, "too large to enumerate"),
        ({"replicates": 1}, UserError, "replicates must be an integer >= 2"),
        ({"num_samples": 0}, UserError, "num_samples must be an integer >= 1"),
        ({"dtype": "float16"}, UserError, "unsupported dtype"),
        ({"device": "tpu"}, UserError, "device"),
        ({"estimator": "reinforce:baseline=loo", "num_samples": 1}, UserError, "num_samples >= 2"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, error, message):
    args = {"problem": "bernoulli-toy", "estimator": "reinforce", **QUIET, **kwargs}
    with pytest.raises(error, match=message):
        measure(**args)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when CUDA is absent")
def test_unavailable_cuda_is_a_clear_error():
    with pytest.raises(UserError, match="CUDA is not available"):
        measure("bernoulli-toy", "reinforce", device="cuda", **QUIET)


@pytest.mark.statistical
@pytest.mark.parametrize("seed", [0, 1])
def test_reinforce_variance_on_categorical_matches_enumeration(seed):
    """One-sample REINFORCE on categorical-linear takes K values ĝ_j = c_j (e_j − p), w.p. p_j.

    The sample trace-variance s² estimates σ² = E‖ĝ − μ‖²; to leading order its standard
    deviation is sd(‖ĝ − μ‖²)/√R, both computed exactly over the K outcomes.
    """
    problem = PROBLEMS.make(f"categorical-linear:k=5,seed={seed}")
    p = torch.softmax(problem.logits.detach(), -1)
    c = problem.costs
    values = c[:, None] * (torch.eye(5, dtype=torch.float64) - p)  # row j: ĝ when z = e_j
    mu = (p[:, None] * values).sum(0)
    y = ((values - mu) ** 2).sum(1)
    var, var_y = float((p * y).sum()), float((p * y**2).sum() - (p * y).sum() ** 2)
    record = measure(problem.spec, "reinforce", replicates=20000, seed=seed, dtype="float64", **QUIET)
    assert abs(record["variance"] - var) <= z_threshold() * math.sqrt(var_y / 20000)


def test_roundoff_scale_spread_is_judged_like_zero_variance():
    """Straight-through is exact for a linear f, so in float32 its estimates differ only by
    round-off (variance ≈ 5e-19 at N = 16): a t-test against that spread called it biased
    (p = 0). Coordinates with a standard error that round-off explains are judged against the
    round-off tolerance instead."""
    record = measure("categorical-linear", "straight-through", num_samples=16, **QUIET)
    assert record["dtype"] == "float32" and 0 < record["variance"] < 1e-12
    assert record["bias_pvalue"] == 1.0


def test_bias_test_roundoff_scale_spread():
    spread, replicates = torch.full((2,), 1e-6), 101
    tiny = torch.full((2,), 1e-7 / math.sqrt(replicates - 1))  # std 1e-7: within round-off
    # Within the tolerance: unbiased; beyond it: certainly biased, however small the spread.
    assert bias_test(torch.tensor([3e-8, -5e-7]), tiny, replicates, tolerance=spread,
                     spread=spread) == 1.0
    assert bias_test(torch.tensor([3e-8, 2e-6]), tiny, replicates, tolerance=spread,
                     spread=spread) == 0.0
    # A standard error above spread/√(R − 1) is more than round-off: the t-test decides.
    wide = torch.full((2,), 2e-6 / math.sqrt(replicates - 1))
    bias = torch.tensor([0.0, 1e-6])
    expected = min(1.0, 2 * 2 * stats.t.sf(1e-6 / float(wide[1]), df=replicates - 1))
    assert bias_test(bias, wide, replicates, tolerance=spread, spread=spread) == pytest.approx(
        expected)
