"""``estibench compare``: planted regressions are caught, clean reruns pass, and the variance
verdict's false-alarm rate is at most its α.

The studies here are run in-process (``executor="inline"``), so that a planted regression can
replace a registered estimator class for the NEW run while its spec, and so the cells' keys,
stay those of BASE.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from scipy import stats

from estimators import ESTIMATORS
from harness.cli import main
from harness.runner import run_study
from harness.study import parse_study
from reports.compare import compare, compare_frames

STUDY = """
name = "mini"
seed = {seed}
replicates = 400

[[grid]]
problems = ["bernoulli-toy:dim=3"]
estimators = ["reinforce", "gumbel-softmax"]
num_samples = [4]
"""


def run(directory, seed: int = 0) -> None:
    run_study(parse_study(STUDY.format(seed=seed)), directory, executor="inline")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    directory = tmp_path_factory.mktemp("base")
    run(directory)
    return directory


def _replace(monkeypatch, name: str, cls) -> None:
    ESTIMATORS.get(name)  # loaded
    monkeypatch.setitem(ESTIMATORS._entries, name, cls)


def _logits(dist):
    return dist.logits if hasattr(dist, "logits") else dist.base_dist.logits


def test_a_planted_variance_regression_fails_naming_the_cell(base, tmp_path, monkeypatch,
                                                             capsys):
    reinforce = ESTIMATORS.get("reinforce")

    class Noisy(reinforce):
        """REINFORCE plus zero-mean noise of standard deviation 0.5 per coordinate: unbiased,
        with variance 3 · 0.25 = 0.75 more than REINFORCE's (about 0.1 at N = 4), i.e. a
        ratio near 8, far beyond the factor 1.2."""

        def surrogate(self, dist, f, *, num_samples, generator):
            value = super().surrogate(dist, f, num_samples=num_samples, generator=generator)
            logits = _logits(dist)
            noise = 0.5 * torch.randn(logits.shape, generator=generator, dtype=logits.dtype,
                                      device=logits.device)
            return value + (noise * logits).reshape(*value.shape, -1).sum(-1)

    _replace(monkeypatch, "reinforce", Noisy)
    run(tmp_path, seed=1)
    monkeypatch.undo()
    code = main(["compare", str(base), str(tmp_path), "--no-time"])
    captured = capsys.readouterr()
    assert code == 1, captured.out + captured.err
    assert "worse: bernoulli-toy:dim=3 × reinforce, N=4" in captured.err
    assert "variance ×" in captured.err
    assert "gumbel-softmax" not in captured.err  # the untouched cell is not blamed


def test_an_unchanged_rerun_compares_clean(base, tmp_path, capsys):
    """Two independent runs (study seeds 0 and 1): exit 0, except with probability at most
    α = 1e-3 (the family-wise rate over the variance and bias tests). Times are compared too,
    but left out of the verdict here: two runs on a shared test machine differ in load."""
    run(tmp_path, seed=1)
    result = compare(base, tmp_path, timing=False)
    assert len(result.cells) == 2 and not result.only_base and not result.only_new
    assert result.exit_code == 0, [c.reasons for c in result.worse]
    assert all(c.time_ratio is not None for c in result.cells)  # reported all the same
    assert main(["compare", str(base), str(tmp_path), "--no-time", "--format", "json"]) == 0
    assert '"worse": []' in capsys.readouterr().out


def test_a_planted_slowdown_is_reported(base, tmp_path, monkeypatch):
    gumbel = ESTIMATORS.get("gumbel-softmax")
    pause = {}

    class Slow(gumbel):
        """Gumbel-softmax that waits as long again as one estimate took in BASE (at least
        1 ms), so NEW takes at least twice as long."""

        def surrogate(self, dist, f, *, num_samples, generator):
            time.sleep(pause["s"])
            return super().surrogate(dist, f, num_samples=num_samples, generator=generator)

    from reports.read import load

    frame = load(base)
    pause["s"] = max(1e-3, float(frame[frame.estimator_label == "gumbel-softmax"]
                                 .time_per_estimate_s.iloc[0]))
    _replace(monkeypatch, "gumbel-softmax", Slow)
    run(tmp_path, seed=1)
    monkeypatch.undo()
    result = compare(base, tmp_path)
    slow = next(c for c in result.cells if c.estimator == "gumbel-softmax")
    assert slow.time_ratio > 1.9, slow
    assert slow.worse and any(reason.startswith("time ×") for reason in slow.reasons)


def test_usage_errors_exit_2(base, tmp_path, capsys):
    assert main(["compare", str(base), str(tmp_path / "missing")]) == 2
    assert "holds no estibench store" in capsys.readouterr().err
    assert main(["compare", str(base), str(base), "--variance-factor", "0.5"]) == 2
    assert "variance factor must be a number >= 1" in capsys.readouterr().err
    other = tmp_path / "other"
    run_study(parse_study(STUDY.format(seed=0).replace('"mini"', '"other"')), other,
              executor="inline")
    assert main(["compare", str(base), str(other)]) == 2
    assert "compare two runs of the same study" in capsys.readouterr().err


def _frame(keys, seed_offset):
    import pandas as pd

    return pd.DataFrame({"key": keys, "kind": "measure", "status": "ok",
                         "problem_label": [k.split("|")[0] for k in keys],
                         "estimator_label": [k.split("|")[1] for k in keys],
                         "num_samples": 1, "seed": seed_offset, "bias_pvalue": 1.0,
                         "variance": 1.0, "peak_memory_bytes": 1.0})


@pytest.mark.statistical
def test_the_variance_verdict_false_alarm_rate_is_at_most_alpha():
    """200 clean comparisons of a two-cell study, at the boundary of H0 (factor 1: the test's
    size is largest there) and α = 0.05: the count of comparisons that flag a cell is
    Binomial(200, r) with r ≤ 0.05 if the verdict keeps its promise. It fails when the count
    exceeds c, the smallest count with P(Binomial(200, 0.05) > c) ≤ 1e-4: a false alarm of this
    test at most 1e-4. The cells are REINFORCE on the skewed ``categorical-linear:k=6,seed=2``
    (a category of probability 0.045: heavy-tailed squared deviations) and Gumbel-softmax on
    ``bernoulli-toy``, R = 200 replicates each, their squared deviations computed as the
    harness does (``harness.stats.cell_statistics``). The bias test is the subject of its own
    calibration test; here the records say p = 1 so that only the variance verdict speaks."""
    from harness.measure import batched_estimates
    from harness.stats import cell_statistics
    from problems import PROBLEMS

    comparisons, replicates = 200, 200
    cells = dict.fromkeys(["categorical-linear:k=6,seed=2|reinforce",
                           "bernoulli-toy:dim=3|gumbel-softmax"])
    for key in cells:
        problem, estimator = key.split("|")
        generator = torch.Generator().manual_seed(7)
        g = batched_estimates(PROBLEMS.make(problem), ESTIMATORS.make(estimator), num_samples=1,
                              replicates=2 * comparisons * replicates, generator=generator)
        g = g.reshape(2 * comparisons, replicates, -1)
        cells[key] = cell_statistics(g, torch.zeros(g.shape[-1]), None,
                                     eps=torch.finfo(g.dtype).eps).squared_deviations.numpy()
    keys = list(cells)
    alarms = 0
    for i in range(comparisons):
        samples = [{k: {"squared_deviations": cells[k][2 * i + side], "times": np.ones(3)}
                    for k in keys} for side in (0, 1)]
        result = compare_frames(_frame(keys, 0), _frame(keys, 0), samples[0], samples[1],
                                variance_factor=1.0, alpha=0.05, timing=False)
        alarms += bool(result.worse)
    limit = int(stats.binom.isf(1e-4, comparisons, 0.05))
    assert stats.binom.sf(limit, comparisons, 0.05) <= 1e-4
    assert alarms <= limit, f"{alarms} of {comparisons} clean comparisons flagged (limit {limit})"


def test_the_report_gains_a_base_vs_new_page(base, tmp_path):
    from reports import build_report

    run(tmp_path, seed=1)
    written = build_report(tmp_path, tmp_path / "report", ("html", "md"), baseline=base)
    names = {p.name for p in written}
    assert {"compare.html", "compare.md", "index.html"} <= names
    page = (tmp_path / "report" / "compare.html").read_text()
    assert "mini: BASE vs NEW" in page and "2 matched measurement cells" in page
    assert page.count("<tr><td class=\"name\">bernoulli-toy:dim=3</td>") + page.count(
        "<tr class=\"failed\"><td class=\"name\">bernoulli-toy:dim=3</td>") == 2
    assert 'href="compare.html"' in (tmp_path / "report" / "index.html").read_text()


def test_the_ci_recipe_is_one_workflow():
    """The workflow in docs/compare.md and its copy in docs/ci/ are the same valid YAML, and
    its steps run the commands this package has."""
    from pathlib import Path

    import yaml

    docs = Path(__file__).resolve().parents[2] / "docs"
    block = (docs / "compare.md").read_text(encoding="utf-8").split("```yaml\n")[1] \
        .split("```")[0]
    assert block == (docs / "ci" / "estimator-regressions.yml").read_text(encoding="utf-8")
    steps = yaml.safe_load(block)["jobs"]["compare"]["steps"]
    commands = " ".join(step.get("run", "") for step in steps)
    assert "pip install torch==2.13.0" in commands and "estibench compare" in commands
    assert commands.count("estibench study run studies/ci.toml") == 2
