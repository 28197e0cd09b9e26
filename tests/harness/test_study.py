"""Study files: expansion into cells, seeds, sweeps, skips, and one message per mistake."""

from __future__ import annotations

import pytest

from estimators import ESTIMATORS
from harness.cli import main
from harness.study import StudyError, default_study, load_study, parse_study
from problems import PROBLEMS

GOOD = """
name = "good"
seed = 7
replicates = 50

[[grid]]
problems = ["bernoulli-toy", "subset-linear:n=5,k=2"]
estimators = ["reinforce", "reinforce:baseline=loo", "gumbel-softmax"]
num_samples = [1, 4]
seeds = [0, 1]
sweep = { temperature = [0.5, 1.0] }

[[training]]
problems = ["bernoulli-toy"]
estimators = ["reinforce:baseline=loo"]
num_samples = 4
steps = 10
"""


def test_expansion_counts_cells_skips_and_sweeps():
    study = parse_study(GOOD)
    cells, skipped = study.expand()
    measure = [c for c in cells if c.kind == "measure"]
    # bernoulli-toy: reinforce 2 N × 2 seeds, loo (N=4 only) × 2 seeds, gumbel 2 τ × 2 N × 2 seeds
    # subset-linear: reinforce 4, loo 2; gumbel-softmax does not support subsets.
    assert len(measure) == (4 + 2 + 8) + (4 + 2)
    assert len([c for c in cells if c.kind == "train"]) == 1
    temperatures = {c.estimator for c in measure if c.estimator.startswith("gumbel")}
    assert temperatures == {"gumbel-softmax:temperature=0.5", "gumbel-softmax:temperature=1.0"}
    reasons = " ".join(s.reason for s in skipped)
    assert "does not support the subset family" in reasons
    assert "needs num_samples >= 2" in reasons
    assert all(c.setting("replicates") == 50 for c in measure)


def test_cell_seeds_are_distinct_and_depend_on_the_study_seed_only_through_the_key():
    cells = parse_study(GOOD).cells()
    seeds = [c.cell_seed for c in cells]
    assert len(set(seeds)) == len(seeds)
    assert all(0 <= s < 2**63 for s in seeds)
    again = parse_study(GOOD).cells()
    assert [c.cell_seed for c in again] == seeds
    other = parse_study(GOOD.replace("seed = 7", "seed = 8")).cells()
    assert not set(c.cell_seed for c in other) & set(seeds)


def test_fingerprint_ignores_comments_but_not_settings():
    base = parse_study(GOOD).fingerprint()
    assert parse_study("# a comment\n" + GOOD).fingerprint() == base
    assert parse_study(GOOD.replace("replicates = 50", "replicates = 60")).fingerprint() != base


def test_default_study_covers_every_estimator_and_every_exact_problem():
    study = default_study()
    cells = study.cells()
    estimators = {ESTIMATORS.make(c.estimator).info.name for c in cells}
    problems = {PROBLEMS.make(c.problem).info.name for c in cells}
    assert estimators == set(ESTIMATORS.names())
    # Real tasks need the optional data extra and train checkpoints: the main job leaves them
    # to studies/real-tasks.toml so that it runs with the base install.
    synthetic = {cls.info.name for cls in PROBLEMS
                 if cls.info.exact and not cls.__module__.startswith("problems.real")}
    assert problems == synthetic
    assert any(c.kind == "train" for c in cells)


@pytest.mark.parametrize(
    "text, message",
    [
        ("name = 'x'\n[[grid]\n", "not valid TOML"),
        ("seed = 1\n[[grid]]\nproblems=['bernoulli-toy']\nestimators=['reinforce']\n",
         "s.toml: name: missing"),
        ("name = 'x y'\n[[grid]]\nproblems=['bernoulli-toy']\nestimators=['reinforce']\n",
         "not a valid name"),
        ("name = 'x'\nreplicate = 5\n[[grid]]\nproblems=['bernoulli-toy']\nestimators=['reinforce']\n",
         "replicate (line 2): unknown key 'replicate'"),
        ("name = 'x'\n[[grid]]\nproblems=['bernoulli-toy']\nestimator=['reinforce']\n",
         "grid[0].estimator (line 4): unknown key"),
        ("name = 'x'\n[[grid]]\nproblems=['bernoulli-toy']\n", "grid[0].estimators"),
        ("name = 'x'\n[[grid]]\nproblems=['bernouli-toy']\nestimators=['reinforce']\n",
         "grid[0].problems[0] (line 3): unknown problem 'bernouli-toy'; did you mean"),
        ("name = 'x'\n[[grid]]\nproblems=['bernoulli-toy']\nestimators=['reinforce:baseline=avg']\n",
         "grid[0].estimators[0]"),
        ("name = 'x'\n[[grid]]\nproblems=['bernoulli-toy']\nestimators=['reinforce']\n"
         "num_samples=[1, 'ten']\n", "grid[0].num_samples[1] (line 5): expected an integer >= 1"),
        ("name = 'x'\nreplicates = 1.5\n[[grid]]\nproblems=['bernoulli-toy']\nestimators=['reinforce']\n",
         "replicates (line 2): expected an integer >= 2"),
        ("name = 'x'\n[[grid]]\nproblems=[]\nestimators=['reinforce']\n",
         "grid[0].problems (line 3): expected a non-empty list"),
        ("name = 'x'\n", "nothing to run"),
        ("name = 'x'\n[[grid]]\nproblems=['subset-linear']\nestimators=['gumbel-softmax']\n",
         "empty grid"),
        ("name = 'x'\n[[grid]]\nproblems=['bernoulli-toy']\nestimators=['reinforce']\n"
         "sweep={temperature=[0.5]}\n", "no estimator of this grid has this option"),
        ("name = 'x'\n[[grid]]\nproblems=['bernoulli-toy']\nestimators=['gumbel-softmax']\n"
         "sweep={temperature=[0.5, -1]}\n", "expected a finite number > 0"),
        ("name = 'x'\ndevice = 'tpu'\n[[grid]]\nproblems=['bernoulli-toy']\nestimators=['reinforce']\n",
         "device (line 2): expected cpu, cuda or cuda:N"),
        ("name = 'x'\n[[training]]\nproblems=['bernoulli-toy']\nestimators=['reinforce']\n"
         "optimizer='lbfgs'\n", "training[0].optimizer (line 5): expected one of adam, sgd"),
        ("name = 'x'\n[[training]]\nproblems=['bernoulli-toy']\nestimators=['reinforce']\n"
         "learning_rate=0\n", "expected a number > 0"),
        ("name = 'x'\n[[grid]]\nproblems=['bernoulli-toy']\nestimators=['reinforce:baseline=loo']\n"
         "num_samples=[1]\n", "every cell is skipped"),
    ],
)
def test_each_mistake_is_one_message_with_its_key_path(text, message):
    with pytest.raises(StudyError) as caught:
        parse_study(text, "s.toml")
    assert str(caught.value).startswith("s.toml: ")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_validate_command_prints_the_count_and_skips(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text(GOOD)
    assert main(["study", "validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "is valid: 21 cells (20 measurements, 1 training runs)" in out
    assert "does not support the subset family" in out


def test_validate_command_mistake_is_one_line_exit_2(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text("name = 'x'\n[[grid]]\nproblems=['bernoulli-toy']\nestimators=['reinforc']\n")
    assert main(["study", "validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("estibench: error: ") and "did you mean 'reinforce'" in err
    assert err.count("\n") == 1
    assert main(["study", "validate", str(tmp_path / "missing.toml")]) == 2
    assert "no such study file" in capsys.readouterr().err


def test_shipped_example_studies_are_valid():
    from pathlib import Path

    studies = sorted((Path(__file__).parents[2] / "studies").glob("*.toml"))
    assert studies, "studies/ ships example study files"
    for path in studies:
        assert load_study(path).cells()
