"""GenGS (Joo et al. 2020): truncation level and bias, relaxed means, large rates, errors.

The bias of GenGS has two parts. Truncation: the estimator relaxes the truncated categorical π
on 0..K, not the count distribution p, so as τ → 0 its expected gradient tends to ∇_θ E_π f,
not ∇_θ E_p f; that limit is computed exactly here by summing over the truncated support, by
hand from scipy's pmf (d p(k)/dθ = p(k)(k − λ) for Poisson(λ = e^θ)), independently of the
estimator. Relaxation: what remains at τ > 0, shrinking as τ falls.

Statistical checks follow tests/statistical.py: fixed seeds, false-alarm rate α = 1e-4 per
check, z = z_threshold(α) ≈ 3.89. "a falls below b" is asserted as |b̂| − |â| > z √(s_a² + s_b²)
from independent estimates (different seeds): a one-sided test that rejects "no decrease" at
level α/2. The settings give every such gap over twice its threshold (from runs of 100,000
replicates), so a correct implementation misses one with probability below α.

Measured on poisson-quadratic:dim=1,rate=5,target=4 (true gradient λ(1 + 2(λ − c)) = 15),
20,000 float64 replicates (bias ± standard error; truncation bias exact):

    tail 0.05, lump (K = 9, truncation −4.285):  τ = 2: −9.69 ± 0.03, τ = 1: −6.99 ± 0.08,
                                                 τ = 0.5: −5.52 ± 0.15
    τ = 0.25, lump:  tail 0.2 (K = 7, −10.878): −10.55 ± 0.13; tail 0.05: −5.35 ± 0.23;
                     tail 1e-4 (K = 15, −0.027): −1.60 ± 0.38
    τ = 0.25, renormalize, tail 0.2 (−13.867): −13.52 ± 0.09
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats
from torch.distributions import Binomial, Geometric, NegativeBinomial, Poisson

from estimators import ESTIMATORS, SpecError, UserError
from harness import measure
from tests.problems.test_counts import closed_form_gradient
from tests.statistical import ALPHA, z_threshold

QUIET = {"timing": False, "memory_profile": False, "dtype": "float64"}
RATE, TARGET = 5.0, 4.0
PROBLEM = f"poisson-quadratic:dim=1,rate={RATE},target={TARGET}"
TRUE_GRADIENT = RATE * (1 + 2 * (RATE - TARGET))  # d/dθ [λ + (λ − c)²], λ = e^θ
REPLICATES = 20_000


def poisson_truncation_bias(tail: float, remainder: str, rate: float = RATE,
                            target: float = TARGET) -> tuple[int, float]:
    """(K, ∇_θ E_π f − ∇_θ E_p f) for f(z) = (z − c)², by hand from scipy's pmf.

    K = the smallest k with P(X ≤ k) ≥ 1 − tail (scipy's ppf). With f_k = (k − c)² and
    dp_k = p_k (k − λ):
    lump: E_π f = Σ_{k<K} p_k f_k + (1 − Σ_{k<K} p_k) f_K, so ∇ = Σ_{k<K} dp_k (f_k − f_K);
    renormalize: E_π f = Σ_{k≤K} p_k f_k / P, P = Σ_{k≤K} p_k, so ∇ = (Σ dp_k f_k − E_π f Σ dp_k) / P.
    """
    level = int(stats.poisson.ppf(1 - tail, rate))
    k = list(range(level + 1))
    p = stats.poisson.pmf(k, rate)
    f = [(i - target) ** 2 for i in k]
    dp = [p[i] * (i - rate) for i in k]
    if remainder == "lump":
        grad = sum(dp[i] * (f[i] - f[level]) for i in k[:-1])
    else:
        mass = sum(p)
        value = sum(p[i] * f[i] for i in k) / mass
        grad = (sum(dp[i] * f[i] for i in k) - value * sum(dp)) / mass
    return level, grad - rate * (1 + 2 * (rate - target))


def _bias(tail: float, tau: float, seed: int, remainder: str = "lump") -> tuple[float, float]:
    record = measure(PROBLEM, f"gengs:temperature={tau},tail={tail},remainder={remainder}",
                     replicates=REPLICATES, seed=seed, **QUIET)
    assert record["true_gradient"] == pytest.approx([TRUE_GRADIENT], rel=1e-12)
    assert record["estimator_config"]["diagnostics"]["truncation_K"] == [
        poisson_truncation_bias(tail, remainder)[0]
    ]
    return record["bias"][0], record["bias_stderr"][0]


def _falls(high: tuple[float, float], low: tuple[float, float], target: float = 0.0) -> None:
    """|high − target| exceeds |low − target| by more than z times their joint stderr."""
    gap = abs(high[0] - target) - abs(low[0] - target)
    threshold = z_threshold() * math.hypot(high[1], low[1])
    assert gap > threshold, (high, low, target, threshold)


@pytest.mark.parametrize("remainder", ["lump", "renormalize"])
def test_truncation_bias_matches_the_sum_over_the_truncated_support(remainder):
    """Exact: the estimator's log π, summed against f and differentiated, gives the hand
    formula's truncation bias; a larger tail gives a larger bias, and lump ≠ renormalize."""
    biases = []
    for tail in (0.2, 0.05, 1e-4):
        estimator = ESTIMATORS.make(f"gengs:tail={tail},remainder={remainder}")
        theta = torch.tensor([math.log(RATE)], dtype=torch.float64, requires_grad=True)
        values, log_pi, level = estimator.truncated_log_probs(Poisson(theta.exp()))
        expected_f = (log_pi.exp() * (values - TARGET) ** 2).sum()
        (grad,) = torch.autograd.grad(expected_f, theta)
        hand_level, hand_bias = poisson_truncation_bias(tail, remainder)
        assert level.tolist() == [hand_level] and len(values) == hand_level + 1
        assert float(grad) - TRUE_GRADIENT == pytest.approx(hand_bias, rel=1e-10, abs=1e-12)
        biases.append(abs(hand_bias))
    assert biases[0] > biases[1] > biases[2] and biases[2] < 0.2, biases
    other = "renormalize" if remainder == "lump" else "lump"
    assert abs(poisson_truncation_bias(0.2, remainder)[1]
               - poisson_truncation_bias(0.2, other)[1]) > 2.0


@pytest.mark.statistical
def test_at_fixed_tail_the_bias_falls_with_the_temperature_towards_the_truncation_bias():
    """tail 0.05 (truncation bias −4.285): τ = 2, 1, 0.5. Each step lowers the bias norm and
    the distance to the truncation bias; at τ = 0.5 the truncation part is the larger one."""
    tail = 0.05
    _, truncation = poisson_truncation_bias(tail, "lump")
    cells = [_bias(tail, tau, seed=seed) for seed, tau in enumerate((2.0, 1.0, 0.5))]
    for high, low in zip(cells, cells[1:]):
        _falls(high, low)
        _falls(high, low, target=truncation)
    bias, stderr = cells[-1]
    assert abs(truncation) - abs(bias - truncation) > z_threshold() * stderr, (cells, truncation)


@pytest.mark.statistical
def test_at_small_temperature_the_bias_falls_with_the_tail():
    """τ = 0.25: tail 0.2 → 0.05 → 1e-4 (truncation biases −10.88, −4.29, −0.03) lowers the
    bias norm at each step; with the remainder renormalised instead of lumped, tail 0.2 has
    the larger truncation bias (−13.87), and the measurement follows it."""
    tau = 0.25
    cells = [_bias(tail, tau, seed=10 + i) for i, tail in enumerate((0.2, 0.05, 1e-4))]
    for high, low in zip(cells, cells[1:]):
        _falls(high, low)
    renormalized = _bias(0.2, tau, seed=20, remainder="renormalize")
    _falls(renormalized, cells[0])


def _scipy_twin(dist):
    """The same distribution in scipy (torch's NegativeBinomial counts successes before
    total_count failures; its Geometric counts failures before the first success)."""
    if isinstance(dist, Poisson):
        return stats.poisson(float(dist.rate))
    if isinstance(dist, Binomial):
        return stats.binom(int(dist.total_count), float(dist.probs))
    if isinstance(dist, NegativeBinomial):
        return stats.nbinom(float(dist.total_count), 1 - float(dist.probs))
    return stats.geom(float(dist.probs), loc=-1)


DISTRIBUTIONS = {
    "poisson": lambda t: Poisson(torch.tensor(5.0, dtype=t)),
    "binomial": lambda t: Binomial(10, logits=torch.tensor(-0.8, dtype=t)),
    "negbinomial": lambda t: NegativeBinomial(2.5, logits=torch.tensor(-0.3, dtype=t)),
    "geometric": lambda t: Geometric(logits=torch.tensor(0.4, dtype=t)),
}


@pytest.mark.statistical
@pytest.mark.parametrize("tail", [1e-4, 0.05])
@pytest.mark.parametrize("family", sorted(DISTRIBUTIONS))
def test_relaxed_samples_have_the_distributions_mean_as_the_temperature_falls(family, tail):
    """At τ = 1e-3 the relaxed sample mean m is within the stated tolerance of the mean μ:

        |m − μ| ≤ z · SE + |μ_π − μ| + mean |z_τ − z_hard|,

    z = z_threshold(α); SE = sd / √S of the hard samples z_hard (the argmax of the same
    perturbed log π: exact draws from π, Gumbel-max, so their mean is within z · SE of μ_π);
    μ_π − μ = −E[(X − K)⁺] (lump), the known truncation contribution, from scipy; the last term
    bounds |m − mean(z_hard)| on these very samples and shrinks with τ (checked: by more than 5
    per decade, and to under a tenth of z · SE at τ = 1e-3)."""
    dist = DISTRIBUTIONS[family](torch.float64)
    twin = _scipy_twin(dist)
    level = int(twin.ppf(1 - tail))
    support = torch.arange(level + 200, dtype=torch.float64)
    pmf = torch.as_tensor(twin.pmf(support.numpy()))
    truncation = -float(((support - level).clamp(min=0) * pmf).sum())  # μ_π − μ
    assert float(dist.mean) == pytest.approx(twin.mean(), rel=1e-12)
    samples = 20_000
    gaps = []
    for tau in (1.0, 1e-1, 1e-2, 1e-3):
        estimator = ESTIMATORS.make(f"gengs:temperature={tau},tail={tail}")
        assert estimator.diagnostics(dist)["truncation_K"] == [level]
        relaxed, hard = estimator.relaxed(dist, samples, torch.Generator().manual_seed(3))
        assert relaxed.shape == hard.shape == (samples,)
        gaps.append(float((relaxed - hard).abs().mean()))
    stderr = float(hard.std()) / math.sqrt(samples)
    tolerance = z_threshold() * stderr + abs(truncation) + gaps[-1]
    assert abs(float(relaxed.mean()) - float(dist.mean)) <= tolerance
    # The sharper form: centred on the truncated mean μ_π.
    assert abs(float(relaxed.mean()) - (float(dist.mean) + truncation)) <= (
        z_threshold() * stderr + gaps[-1])
    assert all(b < a / 5 for a, b in zip(gaps, gaps[1:])), gaps
    assert gaps[-1] < 0.1 * stderr * z_threshold()


def test_poisson_rate_1000_uses_a_bounded_window_in_float32_and_float64():
    """Rate 1000, default tail 1e-4: K is scipy's 1120 (the CDF is summed in float64 even for
    float32 rates; in float32 it drifts by ~1e-4 and gave 1114), one sample holds 1121 support
    points (not Cantelli's 4164), the mass beyond K is at most the tail, gradients are finite."""
    estimator = ESTIMATORS.make("gengs")
    level = int(stats.poisson.ppf(1 - 1e-4, 1000.0))
    for dtype in (torch.float32, torch.float64):
        rate = torch.tensor([1000.0], dtype=dtype, requires_grad=True)
        dist = Poisson(rate)
        values, log_pi, found = estimator.truncated_log_probs(dist)
        assert found.tolist() == [level] and values.shape == (level + 1,)
        assert values.dtype == log_pi.dtype == dtype
        diagnostics = estimator.diagnostics(dist)
        assert 0 < diagnostics["mass_beyond_K"][0] <= 1e-4
        surrogate = estimator.surrogate(dist, lambda z: ((z - 990) ** 2).sum(-1),
                                        num_samples=8, generator=torch.Generator().manual_seed(0))
        (grad,) = torch.autograd.grad(surrogate, rate)
        assert torch.isfinite(surrogate) and torch.isfinite(grad).all()


def test_cantelli_window_is_trimmed_to_the_largest_truncation_level():
    """A batch of rates 1 and 5 at tail 1e-4: the support is 0..max K = 15, not Cantelli's
    0..229, and the rate-1 row has −inf past its own K = 7."""
    estimator = ESTIMATORS.make("gengs")
    values, log_pi, level = estimator.truncated_log_probs(
        Poisson(torch.tensor([1.0, 5.0], dtype=torch.float64)))
    expected = [int(stats.poisson.ppf(1 - 1e-4, r)) for r in (1.0, 5.0)]
    assert level.tolist() == expected and values.tolist() == list(range(expected[1] + 1))
    assert torch.isinf(log_pi[0, expected[0] + 1:]).all()
    assert torch.isfinite(log_pi[0, : expected[0] + 1]).all() and torch.isfinite(log_pi[1]).all()
    torch.testing.assert_close(log_pi.exp().sum(-1), torch.ones(2, dtype=torch.float64))


def test_a_support_beyond_max_support_is_refused_with_a_message_naming_the_limit():
    estimator = ESTIMATORS.make("gengs:max_support=1000")
    dist = Poisson(torch.tensor([1000.0]))
    with pytest.raises(UserError, match=r"max_support=1000 support points.*raise max_support"):
        estimator.relaxed(dist, 1, torch.Generator())
    # Enough room for K = 1120 (fewer points than Cantelli's window of 4164): it works.
    relaxed, _ = ESTIMATORS.make("gengs:max_support=1121").relaxed(dist, 4, torch.Generator())
    assert torch.isfinite(relaxed).all()
    with pytest.raises(UserError, match="max_support=1120"):
        ESTIMATORS.make("gengs:max_support=1120").relaxed(dist, 1, torch.Generator())
    with pytest.raises(UserError, match="max_support"):
        measure("poisson-quadratic:dim=1,rate=1000.0", "st-gengs:max_support=500",
                replicates=2, timing=False, memory_profile=False)


@pytest.mark.parametrize("spec, message", [
    ("gengs:temperature=nan", "option 'temperature'.*a finite number > 0"),
    ("gengs:temperature=0", "option 'temperature'.*a finite number > 0"),
    ("gengs:tail=nan", "option 'tail'.*strictly between 0 and 1"),
    ("gengs:tail=0", "option 'tail'.*strictly between 0 and 1"),
    ("st-gengs:tail=1", "option 'tail'.*strictly between 0 and 1"),
    ("gengs:remainder=drop", "option 'remainder'.*one of lump, renormalize"),
    ("gengs:max_support=1", "option 'max_support'.*an integer >= 2"),
])
def test_invalid_options_are_refused_in_one_sentence(spec, message):
    with pytest.raises(SpecError, match=message):
        ESTIMATORS.make(spec)


@pytest.mark.parametrize("rate", [math.nan, math.inf])
def test_non_finite_parameters_are_refused_even_without_validation(rate):
    dist = Poisson(torch.tensor([rate]), validate_args=False)
    for spec in ("gengs", "st-gengs"):
        with pytest.raises(UserError, match="non-finite"):
            ESTIMATORS.make(spec).relaxed(dist, 1, torch.Generator())


@pytest.mark.statistical
@pytest.mark.parametrize("problem", ["poisson-quadratic:rate=3.0", "binomial-quadratic:total_count=8,logit=-0.5",
                                     "negbinomial-quadratic:total_count=2.5,logit=-0.3",
                                     "geometric-quadratic:logit=0.4"])
@pytest.mark.parametrize("spec, num_samples", [("reinforce", 1), ("reinforce:baseline=loo", 2)])
def test_reinforce_is_unbiased_on_every_count_problem(problem, spec, num_samples):
    """The harness's bias test (Bonferroni over the 3 coordinates) keeps p > α, and each
    coordinate's mean is within z_threshold(α / 3) standard errors of the hand-derived
    gradient (tests/problems/test_counts.py checks those formulas against autograd)."""
    record = measure(problem, spec, num_samples=num_samples, replicates=20_000, seed=7, **QUIET)
    assert record["bias_pvalue"] > ALPHA, record["bias_pvalue"]
    expected = closed_form_gradient(problem)
    dim = len(expected)
    for mean, exact, stderr in zip(record["mean_gradient"], expected, record["bias_stderr"]):
        assert abs(mean - exact) <= z_threshold(ALPHA / dim) * stderr, (mean, exact, stderr)
