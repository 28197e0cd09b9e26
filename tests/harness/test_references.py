"""Reference gradients in a study: computed once per (problem, device), stored, reused."""

from __future__ import annotations

import sqlite3

import pytest

from harness import measure as measure_module_function  # noqa: F401  (the package's function)
from harness.runner import run_study
from harness.store import database_path, load
from harness.study import parse_study

STUDY = """
name = "references"
seed = 3
replicates = 50
timing = false
memory = false

[[grid]]
problems = ["subset-linear:n=20,k=3", "bernoulli-toy"]
estimators = ["reinforce:baseline=loo", "relaxed-topk", "gumbel-softmax"]
num_samples = [2, 4]
seeds = [0, 1]
"""


@pytest.fixture
def counted(monkeypatch):
    """Count the calls of harness.measure.true_gradient that draw a reference."""
    import importlib

    measure_module = importlib.import_module("harness.measure")
    calls = []
    original = measure_module.true_gradient

    def counting(problem, **kwargs):
        result = original(problem, **kwargs)
        if result.stderr is not None:
            calls.append(problem.spec)
        return result

    monkeypatch.setattr(measure_module, "true_gradient", counting)
    return calls


def test_a_reference_is_drawn_once_per_problem_and_shared_by_its_cells(tmp_path, counted):
    study = parse_study(STUDY)
    summary = run_study(study, tmp_path, executor="inline", show_progress=False)
    assert summary.failed == 0
    # One reference for subset-linear:n=20 (8 cells: 2 estimators x 2 sizes x 2 seeds); the
    # exact bernoulli-toy needs none.
    assert counted == ["subset-linear:n=20,k=3,seed=0"]
    frame = load(tmp_path)
    subset = frame[frame.problem.str.startswith("subset-linear")]
    assert len(subset) == 8
    assert subset.true_gradient.map(tuple).nunique() == 1
    assert subset.true_gradient_stderr.map(tuple).nunique() == 1
    assert (subset.true_gradient_source.str.contains("set_probability=unordered")).all()
    with sqlite3.connect(database_path(tmp_path)) as connection:
        rows = connection.execute("SELECT problem, device FROM reference_gradients").fetchall()
    assert rows == [("subset-linear:n=20,k=3,seed=0", "cpu")]


def test_a_resumed_run_reuses_the_stored_reference(tmp_path, counted):
    study = parse_study(STUDY)
    first = parse_study(STUDY.replace("seeds = [0, 1]", "seeds = [0]"))
    run_study(first, tmp_path, executor="inline", show_progress=False, allow_changed=True)
    assert len(counted) == 1
    run_study(study, tmp_path, executor="inline", show_progress=False, resume=True,
              allow_changed=True)
    assert len(counted) == 1  # the second run found it in the store
    frame = load(tmp_path)
    subset = frame[frame.problem.str.startswith("subset-linear")]
    assert len(subset) == 8 and subset.true_gradient.map(tuple).nunique() == 1


def test_a_reference_that_cannot_be_drawn_fails_its_cells_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("ESTIBENCH_MEMORY_BUDGET", "20KB")
    study = parse_study(STUDY.replace('"bernoulli-toy"', ""))
    summary = run_study(study, tmp_path, executor="inline", show_progress=False)
    frame = load(tmp_path)
    assert summary.failed == len(frame) > 0
    assert frame.error.str.contains("memory budget").all()
    assert not frame.error.str.contains("\n").any()


def test_a_study_reference_is_drawn_again_alone_from_the_seed_in_its_record(tmp_path):
    study = parse_study(STUDY.replace("seeds = [0, 1]", "seeds = [0]"))
    run_study(study, tmp_path, executor="inline", show_progress=False)
    row = load(tmp_path).query("problem.str.startswith('subset-linear')").iloc[0]
    seed = int(row.true_gradient_source.rsplit("seed=", 1)[1].rstrip(")"))
    alone = measure_module_function(row.problem, row.estimator, num_samples=int(row.num_samples),
                                    replicates=50, timing=False, memory_profile=False,
                                    reference_seed=seed)
    assert alone["true_gradient_source"] == row.true_gradient_source
    assert alone["true_gradient"] == list(row.true_gradient)
    assert alone["true_gradient_stderr"] == list(row.true_gradient_stderr)


def test_a_non_finite_reference_is_one_clear_error(monkeypatch):
    import importlib

    import torch

    from estimators.errors import UserError

    measure_module = importlib.import_module("harness.measure")
    monkeypatch.setattr(measure_module, "estimate_chunks",
                        lambda *a, **kw: iter([torch.full((3, 20), float("nan"))]))
    with pytest.raises(UserError, match="non-finite estimates"):
        measure_module.true_gradient(measure_module.PROBLEMS.make("subset-linear:n=20,k=3"),
                                     device=torch.device("cpu"), seed=0)
