"""``estibench check SPEC`` and the importable checks (``harness.checks``), on a third-party
package that registers through the entry points, as a plug-in's author would use them.

The package is written to a temporary directory as ``estibench_demo_plugin/`` beside an
``estibench_demo_plugin-0.1.dist-info/`` whose ``entry_points.txt`` names its classes in the
groups ``estibench.estimators`` and ``estibench.problems``: with the directory on the path
(``PYTHONPATH`` for a command, ``sys.path`` in this process) ``importlib.metadata`` finds it
exactly as it finds an installed distribution. It holds one correct estimator, three broken
ones (each must fail, saying why), two that declare an expected failure, and one problem.

Statistical note: the biased variant's baseline includes its own sample, so its expectation is
(1 − 1/S) ∇ = ½ ∇ at the S = 2 samples the unbiasedness check draws, a bias of −½ ∇. On
``bernoulli-toy`` (∇ = 0.025) that is −0.0125 against a standard error of 8.8e-5 at 20,000
replicates: t ≈ 140, where the check rejects from t ≈ 3.9 (α = 1e-4); a t-statistic whose mean
is 140 falls below 3.9 with probability far below 1e-300.
``test_biased_variant_is_far_beyond_the_threshold`` measures it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from estimators import ESTIMATORS
from harness import checks
from harness.checks import Case, CheckFailed, CheckSkipped, cases, outcome, pytest_params
from harness.cli import main
from problems import PROBLEMS
from tests.statistical import ALPHA, z_threshold

ROOT = Path(__file__).resolve().parent.parent

PLUGIN = '''
"""A third-party estibench plug-in, written the way a user would write one."""

import dataclasses

import torch
from torch.distributions import Bernoulli, Independent

from estimators import Estimator, EstimatorInfo, ExpectedFailure, draw
from problems import Problem, ProblemInfo


class ScoreFunction(Estimator):
    """f(z) ∇log p(z), no baseline: correct and unbiased."""

    info = EstimatorInfo(name="demo-score-function", description="REINFORCE, no baseline.",
                         families=("bernoulli",), unbiased=True, pathwise=False)

    def surrogate(self, dist, f, *, num_samples, generator):
        self.check_inputs(dist, num_samples)
        z = self.sample(dist, num_samples, generator)  # [S, *batch, d]
        values, log_p = f(z), dist.log_prob(z)  # [S, *batch]
        return self.combine(values, log_p)

    def sample(self, dist, num_samples, generator):
        return draw(dist, num_samples, generator)

    def combine(self, values, log_p):
        return (values + values.detach() * (log_p - log_p.detach())).mean(0)  # [*batch]


def variant(base, name, **changes):
    return dataclasses.replace(base.info, name=name, description=f"{name} (a test variant).",
                               **changes)


class GlobalRng(ScoreFunction):
    """Bug: draws its uniforms from torch's global generator."""

    info = variant(ScoreFunction, "demo-global-rng")

    def sample(self, dist, num_samples, generator):
        probs = dist.base_dist.probs  # [*batch, d]
        u = torch.rand((num_samples, *probs.shape), dtype=probs.dtype)  # no generator=
        return (u < probs.detach()).to(probs.dtype)


class WrongShape(ScoreFunction):
    """Bug: returns one surrogate per sample, [S, *batch], instead of their mean."""

    info = variant(ScoreFunction, "demo-wrong-shape")

    def combine(self, values, log_p):
        return values + values.detach() * (log_p - log_p.detach())


class Biased(ScoreFunction):
    """Bug: the baseline is the mean of all S values, its own included: E = (1 - 1/S) grad."""

    info = variant(ScoreFunction, "demo-biased")

    def min_samples(self):
        return 2

    def combine(self, values, log_p):
        weight = values.detach() - values.detach().mean(0)
        return (values + weight * (log_p - log_p.detach())).mean(0)


class DeclaredBiased(Biased):
    """The same bias, declared: an expected failure."""

    info = variant(Biased, "demo-declared-biased", expected_failures=(
        ExpectedFailure("unbiased", "the baseline includes the sample itself"),))


class DeclaredNeedlessly(ScoreFunction):
    """Declares a failure that does not happen: strict, so a failure."""

    info = variant(ScoreFunction, "demo-declared-needlessly", expected_failures=(
        ExpectedFailure("unbiased", "thought to be biased"),))


class Coin(Problem):
    """Two independent coins, f(z) = (z_1 - 2 z_2)^2 (exact)."""

    info = ProblemInfo(name="demo-coin", description="Two coins, f(z) = (z_1 - 2 z_2)^2.",
                       family="bernoulli", exact=True, relaxable=True, enumerable=True)
    parameter_names = ("logits",)

    def __init__(self, **options):
        super().__init__(**options)
        self.logits = torch.tensor([0.5, -1.0], dtype=torch.float64, requires_grad=True)

    def distribution(self):
        return Independent(Bernoulli(logits=self.logits), 1)

    def objective(self, z):
        return (z[..., 0] - 2 * z[..., 1]) ** 2  # [S, *batch, 2] -> [S, *batch]

    def expected_objective(self):
        p = torch.sigmoid(self.logits)  # E z_i^2 = p_i, E z_1 z_2 = p_1 p_2
        return p[..., 0] + 4 * p[..., 1] - 4 * p[..., 0] * p[..., 1]
'''

ENTRY_POINTS = """\
[estibench.estimators]
demo-score-function = estibench_demo_plugin:ScoreFunction
demo-global-rng = estibench_demo_plugin:GlobalRng
demo-wrong-shape = estibench_demo_plugin:WrongShape
demo-biased = estibench_demo_plugin:Biased
demo-declared-biased = estibench_demo_plugin:DeclaredBiased
demo-declared-needlessly = estibench_demo_plugin:DeclaredNeedlessly

[estibench.problems]
demo-coin = estibench_demo_plugin:Coin
"""


def write_plugin(root: Path) -> Path:
    """The package and its dist-info, as pip would leave them in site-packages."""
    (root / "estibench_demo_plugin").mkdir(parents=True)
    (root / "estibench_demo_plugin" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    info = root / "estibench_demo_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: estibench-demo-plugin\n"
                                   "Version: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    return root


@pytest.fixture(scope="module")
def plugin_root(tmp_path_factory) -> Path:
    return write_plugin(tmp_path_factory.mktemp("site"))


@pytest.fixture
def plugin(plugin_root, monkeypatch):
    """The plug-in on this process's path, found by the registries' entry-point discovery as
    a fresh process finds it (their cache of what was loaded is reset, and restored after)."""
    monkeypatch.syspath_prepend(str(plugin_root))
    for registry in (ESTIMATORS, PROBLEMS):
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
        monkeypatch.setattr(registry, "_entry_points_loaded", False)
    yield plugin_root
    sys.modules.pop("estibench_demo_plugin", None)


def estibench(plugin_root: Path, *argv: str) -> subprocess.CompletedProcess:
    """``estibench ARGV`` in a new process with the plug-in on its PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(plugin_root), str(ROOT),
                                         env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run([sys.executable, "-m", "harness.cli", *argv], env=env,
                          capture_output=True, text=True, timeout=300)


def lines(text: str, status: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(status + " ")]


# -- the command -----------------------------------------------------------------------------


def test_a_correct_plugin_estimator_passes_against_every_compatible_problem(plugin_root):
    result = estibench(plugin_root, "check", "demo-score-function")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.startswith("checking estimator demo-score-function: ")
    assert not lines(out, "FAIL") and "0 failed" in out.splitlines()[-1]
    partners = {line.split()[2] for line in lines(out, "PASS") if "unbiased" in line}
    # every registered Bernoulli problem took part, the plug-in's own problem too
    assert {"bernoulli-toy", "bernoulli-toy:dim=3,target=0.499,logit=0.5", "demo-coin",
            "vae-bernoulli:latent=4,batch=2,train_steps=40"} <= partners
    for check in ("info", "shapes[float32,cpu]", "shapes[float64,cpu]", "finite_gradients[float32]",
                  "determinism", "objective_evaluations", "independence", "batched_loop",
                  "global_rng", "unbiased"):
        assert any(line.split()[1] == check for line in lines(out, "PASS")), check
    for line in lines(out, "SKIP"):  # only CUDA, where there is none
        assert "cuda" in line and "needs a CUDA device" in line


@pytest.mark.parametrize("spec, check, reason", [
    ("demo-global-rng", "global_rng", "the estimator draws from torch's global generator"),
    ("demo-wrong-shape", "shapes[float64,cpu]", "the surrogate has shape (3, 7); expected (7,)"),
    ("demo-biased", "unbiased", "info says unbiased, and the test of no bias rejects"),
], ids=["global-rng", "wrong-shape", "biased"])
def test_a_broken_plugin_estimator_fails_saying_why(plugin, capsys, spec, check, reason):
    code = main(["check", spec, "--partner", "bernoulli-toy"])
    captured = capsys.readouterr()
    assert code == 1
    failed = [line for line in lines(captured.out, "FAIL") if line.split()[1] == check]
    assert failed and reason in failed[0], captured.out
    assert f"{check}" in captured.out.split("failures:")[1]  # repeated at the end
    assert "conformance checks failed" in captured.err


def test_the_global_rng_variant_is_also_not_deterministic(plugin, capsys):
    assert main(["check", "demo-global-rng", "--partner", "demo-coin",
                 "--checks", "determinism,global_rng"]) == 1
    out = capsys.readouterr().out
    assert [line.split()[1] for line in lines(out, "FAIL")] == ["determinism", "global_rng"]


def test_a_plugin_problem_passes_against_registered_estimators(plugin_root):
    result = estibench(plugin_root, "check", "demo-coin", "--partner", "reinforce:baseline=loo",
                       "--partner", "gumbel-softmax", "--partner", "demo-score-function")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("checking problem demo-coin: ")
    assert "PASS   unbiased" in result.stdout and not lines(result.stdout, "FAIL")


def test_a_declared_expected_failure_is_honoured_strictly(plugin, capsys):
    assert main(["check", "demo-declared-biased", "--partner", "bernoulli-toy",
                 "--checks", "unbiased"]) == 0
    out = capsys.readouterr().out
    assert "XFAIL  unbiased  bernoulli-toy: the baseline includes the sample itself" in out
    assert "1 expected failure in" in out
    assert main(["check", "demo-declared-needlessly", "--partner", "bernoulli-toy",
                 "--checks", "unbiased"]) == 1
    out = capsys.readouterr().out
    assert "declared an expected failure (thought to be biased) and passed" in out


@pytest.mark.parametrize("argv, message", [
    (["nonexistent"], "unknown estimator or problem 'nonexistent'"),
    (["gumbel-softmx"], "did you mean 'gumbel-softmax'"),
    (["reinforce:baseline=maybe"], "bad value 'maybe' for option 'baseline'"),
    (["reinforce", "--checks", "shape"], "unknown check 'shape'; checks: info, shapes"),
    (["reinforce", "--partner", "bernouli-toy"], "did you mean 'bernoulli-toy'"),
    (["gumbel-softmax", "--partner", "poisson-quadratic"], "cannot meet estimator"),
    (["reinforce", "--kind", "problem"], "unknown problem 'reinforce'"),
])
def test_usage_errors_are_one_line_and_exit_2(capsys, argv, message):
    assert main(["check", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("estibench: error: ") and message in err[0], err


# -- the importable checks -------------------------------------------------------------------


def test_the_checks_are_functions_of_two_specs(plugin):
    checks.check_shapes("demo-score-function", "demo-coin", dtype="float32")
    checks.check_global_rng("demo-score-function", "bernoulli-toy")
    with pytest.raises(CheckFailed, match="torch's global generator"):
        checks.check_global_rng("demo-global-rng", "bernoulli-toy")
    with pytest.raises(CheckFailed, match=r"shape \(3, 7\)"):
        checks.check_shapes("demo-wrong-shape", "demo-coin")
    with pytest.raises(CheckSkipped, match="does not support the count family"):
        checks.check_determinism("demo-score-function", "poisson-quadratic")
    with pytest.raises(CheckSkipped, match="needs a CUDA device") if not _cuda() else _nothing():
        checks.check_shapes("demo-score-function", "demo-coin", device="cuda")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_cases_parametrise_a_plugin_suite(plugin):
    found = cases("demo-declared-biased", partners=["bernoulli-toy", "demo-coin"])
    assert found[0] == Case("info", estimator="demo-declared-biased")
    labels = [case.label for case in found]
    assert labels.count("unbiased") == 2 and labels[-2:] == ["unbiased", "unbiased"]
    assert labels.count("shapes[float32,cuda]") == 2
    params = pytest_params(found)
    assert len({p.id for p in params}) == len(params)  # unique ids
    assert "shapes[float32,cpu]:bernoulli-toy|demo-declared-biased" in {p.id for p in params}
    xfails = [p for p in params if p.marks]
    assert [p.values[0].check for p in xfails] == ["unbiased", "unbiased"]
    mark = xfails[0].marks[0]
    assert mark.name == "xfail" and mark.kwargs["strict"] and mark.kwargs["raises"] is CheckFailed
    assert mark.kwargs["reason"] == "the baseline includes the sample itself"


PLUGIN_SUITE = """
import pytest
from harness.checks import cases, pytest_params

@pytest.mark.parametrize("case", pytest_params(cases("demo-declared-biased",
                                                     partners=["bernoulli-toy"])))
def test_estibench_conformance(case):
    case.run()
"""


def test_a_plugin_pytest_suite_runs_the_checks(plugin_root, tmp_path):
    """The plug-in's own tests, as its author writes them: passes, CUDA and not-applicable
    skips, and its declared failure as an xfail."""
    suite = tmp_path / "test_plugin_conformance.py"
    suite.write_text(PLUGIN_SUITE)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(plugin_root), str(ROOT)])
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "--rootdir", str(tmp_path), str(suite)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    assert "1 xfailed" in summary and "failed" not in summary.replace("xfailed", ""), summary
    assert "passed" in summary and "skipped" in summary, summary


def test_an_entry_no_partner_can_meet_fails(plugin):
    found = cases("demo-score-function", partners=[], checks=["shapes"])
    assert [case.check for case in found] == ["partners"]
    result = outcome(found[0])
    assert result.status == "FAIL" and "no registered problem is compatible" in result.reason


def test_info_names_unknown_expected_failures(plugin, monkeypatch):
    import dataclasses

    from estimators import ExpectedFailure

    cls = ESTIMATORS.get("demo-score-function")
    monkeypatch.setattr(cls, "info", dataclasses.replace(
        cls.info, expected_failures=(ExpectedFailure("unbiassed", "typo"),)))
    with pytest.raises(CheckFailed, match="'unbiassed', which does not exist"):
        checks.check_info("demo-score-function")


def test_the_checks_use_the_suites_false_alarm_rate():
    assert checks.ALPHA == ALPHA


def test_biased_variant_is_far_beyond_the_threshold(plugin):
    """The module docstring's numbers: |bias| / s.e. ≈ 140 on bernoulli-toy, threshold ≈ 3.9."""
    from harness import measure

    record = measure("bernoulli-toy", "demo-biased", num_samples=2,
                     replicates=checks.UNBIASED_REPLICATES, seed=checks.UNBIASED_SEED,
                     timing=False, memory_profile=False)
    t = abs(record["bias"][0]) / record["bias_stderr"][0]
    assert record["bias"][0] == pytest.approx(-0.5 * record["true_gradient"][0], rel=0.05)
    assert t > 10 * z_threshold(ALPHA)
