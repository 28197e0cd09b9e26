"""Sample distributions (``harness.sampling``): the closed forms against direct sums, rounding to
the nearest outcome, the record, [[sampling]] study tables, their store, export and report."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from estimators.errors import UserError
from estimators.exact import enumerate_joint
from harness.runner import run_study
from harness.sampling import (expected_total_variation, mean_absolute_deviation, nearest,
                              sample_distance, total_variation)
from harness.store import export
from harness.study import StudyError, parse_study
from problems import PROBLEMS
from reports.build import build_report
from reports.read import load

ALPHA = 1e-3
"""False-alarm rate of each statistical test here."""


@pytest.mark.parametrize("n", [1, 7, 50, 1000])
@pytest.mark.parametrize("p", [0.0, 1e-4, 0.03, 0.3, 0.5, 0.77, 1.0])
def test_de_moivres_mean_absolute_deviation_is_the_binomial_sum(n, p):
    """Against Σ_x C(n, x) p^x (1 − p)^(n − x) |x/n − p| in float64. The closed form is one exp
    of a sum of logs of magnitude L ≤ n·|log p| + log C(n, ν) < 10^4 here; each carries an
    error of a few ε·L, so the result has a relative error below 10^4 · 2.2e-16 · 10 ≈ 2e-11,
    and the direct sum of n + 1 terms below (n + 1) · 2.2e-16 · 10 < 3e-12."""
    terms = stats.binom.pmf(range(n + 1), n, p) * abs(torch.arange(n + 1).double().numpy() / n - p)
    direct = float(terms.sum())
    closed = float(mean_absolute_deviation(n, torch.tensor([p], dtype=torch.float64)))
    assert closed == pytest.approx(direct, rel=3e-11, abs=1e-300)


def test_total_variation_and_its_expectation():
    p = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
    assert total_variation(torch.tensor([2, 1, 1]), p) == 0.0
    assert total_variation(torch.tensor([4, 0, 0]), p) == 0.5
    # One exact sample: p̂ is a point mass, TV = 1 − p(z) for the drawn z, E TV = 1 − Σ p².
    assert expected_total_variation(1, p) == pytest.approx(1 - float((p**2).sum()), rel=1e-14)


def test_nearest_outcome_is_top_k_argmax_and_rounding():
    generator = torch.Generator().manual_seed(0)
    khots = enumerate_joint(PROBLEMS.make("subset-graded:n=6,k=3").distribution()).float()
    relaxed = torch.rand(200, 6, generator=generator)
    chosen = khots[nearest(relaxed, khots)]
    top = torch.zeros_like(relaxed).scatter_(-1, relaxed.topk(3).indices, 1.0)
    assert torch.equal(chosen, top)
    bits = enumerate_joint(PROBLEMS.make("bernoulli-toy:dim=4").distribution()).float()
    assert torch.equal(bits[nearest(relaxed[:, :4], bits)], (relaxed[:, :4] > 0.5).float())


@pytest.mark.parametrize("estimator", ["gumbel-softmax:temperature=0.5",
                                       "gumbel-softmax:temperature=5.0"])
@pytest.mark.parametrize("problem", ["categorical-linear:k=5", "bernoulli-toy:dim=3"])
def test_gumbel_softmax_rounds_to_its_exact_sample(problem, estimator):
    """argmax softmax(g/τ) = argmax g, and a binary concrete sample is above 1/2 exactly when its
    logistic key is above 0: rounding the relaxed sample gives the exact sample of the same
    noise at any τ, so both TVs are the same number. The counts follow p: a chi-square test at
    α = 1e-3."""
    record = sample_distance(problem, estimator, samples=4000, seed=3)
    assert record["total_variation"] == record["hard_total_variation"]
    counts = [round(f * 4000) for f in record["relaxed_frequencies"]]
    expected = [4000 * p for p in record["probabilities"]]
    _, p_value = stats.chisquare(counts, expected)
    assert p_value > ALPHA


def test_relaxed_topk_samples_follow_the_subset_distribution():
    """Xie & Ermon 2019's check at n = 4, k = 2. The relaxed samples' top-2 sets of 10,000 draws
    at τ = 1 against the exact six probabilities: chi-square test at α = 1e-3; and the record's
    probabilities are those of weighted sampling without replacement."""
    record = sample_distance("subset-graded:n=4,k=2", "relaxed-topk:temperature=1.0",
                             samples=10_000, seed=0)
    w = [0.1, 0.2, 0.3, 0.4]
    exact = sorted(w[i] * w[j] / (1 - w[i]) + w[j] * w[i] / (1 - w[j])
                   for i in range(4) for j in range(i + 1, 4))
    assert sorted(record["probabilities"]) == pytest.approx(exact, rel=1e-12)
    counts = [round(f * 10_000) for f in record["relaxed_frequencies"]]
    _, p_value = stats.chisquare(counts, [10_000 * p for p in record["probabilities"]])
    assert p_value > ALPHA
    probabilities = torch.tensor(record["probabilities"], dtype=torch.float64)
    assert record["exact_sampling_total_variation"] == pytest.approx(
        expected_total_variation(10_000, probabilities), rel=1e-12)


def test_same_seed_same_record_and_float64():
    first = sample_distance("subset-graded", "relaxed-topk", samples=500, seed=7, dtype="float64")
    second = sample_distance("subset-graded", "relaxed-topk", samples=500, seed=7, dtype="float64")
    assert first["relaxed_frequencies"] == second["relaxed_frequencies"]
    assert first["dtype"] == "float64" and math.isclose(sum(first["relaxed_frequencies"]), 1.0)


@pytest.mark.parametrize("problem, estimator, samples, message", [
    ("subset-graded", "reinforce", 100, "draws no relaxed samples"),
    ("subset-linear:n=20,k=3", "relaxed-topk", 100, "needs an enumerable support"),
    ("subset-graded", "relaxed-topk", 0, "samples must be a positive integer"),
    ("subset-linear:n=16,k=8", "relaxed-topk", 10, "more than the 4096 the sample distance"),
    ("subset-graded", "gumbel-softmax", 100, "does not support the subset family"),
])
def test_bad_input_is_one_user_error(problem, estimator, samples, message):
    with pytest.raises(UserError, match=message):
        sample_distance(problem, estimator, samples=samples)


STUDY = """
name = "sampled"
seed = 0

[[sampling]]
problems = ["subset-graded", "subset-linear:n=20,k=3"]
estimators = ["relaxed-topk", "reinforce"]
samples = 300
seeds = [0, 1]
sweep = { temperature = [0.5, 2.0] }

[[claim]]
name = "close"
claim = "Close to exact."
source = "a test"
published = "TV ≤ 0.5"
metric = "total_variation"
rule = "at-most"
value = 0.5
estimators = ["relaxed-topk:temperature=0.5"]
"""


def test_sampling_tables_expand_run_export_and_report(tmp_path):
    study = parse_study(STUDY)
    cells, skipped = study.expand()
    assert {c.kind for c in cells} == {"sample"} and len(cells) == 4
    assert {c.num_samples for c in cells} == {300}
    reasons = sorted(s.reason for s in skipped)
    assert any("no enumerable support" in r for r in reasons)
    assert any("draws no relaxed samples" in r for r in reasons)
    assert study.claims[0].kind == "sample"
    summary = run_study(study, tmp_path / "store", executor="inline", show_progress=False)
    assert (summary.done, summary.failed) == (4, 0)
    frame = load(tmp_path / "store", "sample")
    assert len(frame) == 4 and frame.total_variation.between(0, 1).all()
    written = export(tmp_path / "store", "csv", tmp_path / "export")
    assert sorted(p.name for p in written) == ["results.csv", "sampling.csv"]
    build_report(tmp_path / "store")
    tables = (tmp_path / "store" / "report" / "tables.md").read_text()
    assert "## Sample distributions" in tables and "No successful measurements" not in tables
    assert "**holds** (mean ≤ 0.5)" in tables
    page = (tmp_path / "store" / "report" / "index.html").read_text()
    assert '<h2 id="sample-distributions">' in page and "4 sample distributions" in page


@pytest.mark.parametrize("edit, message", [
    (('samples = 300', 'samples = 0'), r"sampling\[0\]\.samples .*expected an integer >= 1"),
    (('samples = 300', 'num_samples = [1]'), r"sampling\[0\]\.num_samples .*unknown key"),
    (('estimators = ["relaxed-topk", "reinforce"]', 'estimators = ["reinforce", "gumbel-softmax"]'),
     "empty grid"),
])
def test_a_bad_sampling_table_is_one_message(edit, message):
    with pytest.raises(StudyError, match=message):
        parse_study(STUDY.replace(*edit))


def test_a_claim_says_which_table_when_there_are_several():
    text = STUDY.replace("[[claim]]", '[[grid]]\nproblems = ["subset-graded"]\n'
                         'estimators = ["relaxed-topk"]\n\n[[claim]]')
    with pytest.raises(StudyError, match=r"claim\[0\]\.kind.*say which the claim reads"):
        parse_study(text)
    assert parse_study(text.replace('metric = "total', 'kind = "sample"\nmetric = "total')
                       ).claims[0].kind == "sample"
