"""Running studies: the store, resume after SIGKILL, executors that agree, stored failures."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from estimators.errors import UserError
from harness import runner
from harness.cli import main
from harness.runner import run_study
from harness.store import StoreError, database_path, export, load, load_skipped, study_info
from harness.study import TIMING_FIELDS, parse_study

ROOT = Path(__file__).parents[2]

SMALL = """
name = "small"
seed = 11
replicates = 100
timing = false
memory = false

[[grid]]
problems = ["bernoulli-toy:dim=2", "categorical-linear:k=4"]
estimators = ["reinforce", "reinforce:baseline=loo", "gumbel-softmax", "exact"]
num_samples = [1, 3]

[[training]]
problems = ["bernoulli-toy"]
estimators = ["reinforce:baseline=loo"]
num_samples = [4]
steps = 6
eval_every = 3
variance_replicates = 20
"""


def comparable(directory: Path, kind: str = "measure") -> list[dict]:
    """The stored results without fields that depend on the machine or the moment."""
    frame = load(directory, kind)
    drop = [c for c in frame.columns if c in TIMING_FIELDS or c in ("started", "finished")]
    frame = frame.drop(columns=drop)
    rows = [json.loads(frame.iloc[i].to_json()) for i in range(len(frame))]
    return sorted(rows, key=lambda row: json.dumps(row, sort_keys=True))


def test_inline_run_stores_every_cell_and_the_skipped_pairs(tmp_path):
    study = parse_study(SMALL)
    summary = run_study(study, tmp_path, executor="inline", show_progress=False)
    assert (summary.total, summary.done, summary.failed) == (len(study.cells()), summary.total, 0)
    frame = load(tmp_path)
    assert len(frame) == summary.total - 1 and set(frame.status) == {"ok"}
    assert {"bias_pvalue", "variance", "mse", "replicates", "cell_seed"} <= set(frame.columns)
    skipped = load_skipped(tmp_path)
    assert any("needs num_samples >= 2" in reason for reason in skipped.reason)
    curve = load(tmp_path, "train")
    assert list(curve.step) == [0, 3, 6]
    assert curve.objective_source.iloc[0] == "exact"
    assert study_info(tmp_path)["name"] == "small"


def test_second_run_does_nothing_and_a_partial_store_needs_resume(tmp_path):
    study = parse_study(SMALL)
    run_study(study, tmp_path, executor="inline", show_progress=False)
    again = run_study(study, tmp_path, executor="inline", resume=True, show_progress=False)
    assert again.done == 0 and again.already == again.total
    assert "nothing to do" in again.line("small", tmp_path)
    assert run_study(study, tmp_path, executor="inline", show_progress=False).done == 0
    grown = parse_study(SMALL.replace("num_samples = [1, 3]", "num_samples = [1, 2, 3]"))
    with pytest.raises(UserError, match="pass --resume"):
        run_study(grown, tmp_path, executor="inline", allow_changed=True, show_progress=False)


def test_changed_or_other_study_is_refused_unless_allowed(tmp_path):
    run_study(parse_study(SMALL), tmp_path, executor="inline", show_progress=False)
    changed = parse_study(SMALL.replace("num_samples = [1, 3]", "num_samples = [1, 2, 3]"))
    with pytest.raises(StoreError, match="changed since"):
        run_study(changed, tmp_path, executor="inline", resume=True, show_progress=False)
    summary = run_study(changed, tmp_path, executor="inline", resume=True, allow_changed=True,
                        show_progress=False)
    # only the N=2 cells ran: 2 problems × 4 estimators
    assert summary.done == 8 and summary.already == summary.total - 8
    other = parse_study(SMALL.replace('name = "small"', 'name = "other"'))
    with pytest.raises(StoreError, match="holds the results of study 'small'"):
        run_study(other, tmp_path, executor="inline", resume=True, show_progress=False)


def test_a_failing_cell_is_stored_with_its_error_and_the_others_finish(tmp_path, monkeypatch):
    import importlib

    measure_module = importlib.import_module("harness.measure")  # the module, not the function
    real = measure_module.measure

    def flaky(problem, estimator, **kwargs):
        if estimator.startswith("gumbel-softmax"):
            raise RuntimeError("boom in the estimator")
        return real(problem, estimator, **kwargs)

    monkeypatch.setattr(measure_module, "measure", flaky)
    summary = run_study(parse_study(SMALL), tmp_path, executor="inline", show_progress=False)
    frame = load(tmp_path)
    failed = frame[frame.status == "failed"]
    assert summary.failed == len(failed) == 4  # 2 problems × 2 num_samples
    assert set(failed.error) == {"RuntimeError: boom in the estimator"}
    assert (frame.status == "ok").sum() == summary.done - 1  # the training run is elsewhere
    monkeypatch.setattr(measure_module, "measure", real)
    retried = run_study(parse_study(SMALL), tmp_path, executor="inline", resume=True,
                        retry_failed=True, show_progress=False)
    assert retried.done == 4 and set(load(tmp_path).status) == {"ok"}


def test_process_executor_gives_the_inline_records(tmp_path):
    study = parse_study(SMALL)
    run_study(study, tmp_path / "inline", executor="inline", show_progress=False)
    run_study(study, tmp_path / "process", executor="process", workers=2, show_progress=False)
    for kind in ("measure", "train"):
        assert comparable(tmp_path / "inline", kind) == comparable(tmp_path / "process", kind)


def _killed_on_categorical(job):
    """Runs in a worker: SIGKILLs its own process on categorical cells (as the OOM killer)."""
    if job.cell.problem.startswith("categorical"):
        os.kill(os.getpid(), signal.SIGKILL)
    return runner.run_cell(job)  # the worker's own, unpatched


def test_a_killed_worker_fails_its_own_cell_only(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "run_cell", _killed_on_categorical)
    study = parse_study(SMALL.split("[[training]]")[0].replace(
        '"gumbel-softmax", "exact"', '"exact"').replace("[1, 3]", "[1]"))
    summary = run_study(study, tmp_path, executor="process", workers=2, show_progress=False)
    records = load(tmp_path)
    killed = records.problem.str.startswith("categorical")
    assert killed.any() and (~killed).any()
    assert set(records.status[killed]) == {"failed"}
    assert records.error[killed].str.contains("process running this cell died").all()
    assert set(records.status[~killed]) == {"ok"}  # bystanders of the broken pool re-ran
    assert summary.failed == int(killed.sum())


def test_ray_executor_gives_the_inline_records(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'estibench[ray]')")
    study = parse_study(SMALL)
    run_study(study, tmp_path / "inline", executor="inline", show_progress=False)
    # Ray's start-up hangs for minutes when loopback networking is down: bound it.
    path = tmp_path / "small.toml"
    path.write_text(SMALL)
    command = [sys.executable, "-m", "harness.cli", "study", "run", str(path), "--out",
               str(tmp_path / "ray"), "--executor", "ray", "--workers", "2"]
    try:
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired:
        pytest.skip("Ray did not start within 240 s on this machine")
    assert result.returncode == 0, result.stderr[-2000:]
    for kind in ("measure", "train"):
        assert comparable(tmp_path / "inline", kind) == comparable(tmp_path / "ray", kind)


def _finished_cells(directory: Path) -> int:
    path = database_path(directory)
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as connection:
            return connection.execute("SELECT COUNT(*) FROM cells").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


SLOW = """
name = "slow"
seed = 5
replicates = 20000
timing = false
memory = false

[[grid]]
problems = ["categorical-linear:k=20", "bernoulli-toy:dim=8"]
estimators = ["reinforce", "reinforce:baseline=loo", "gumbel-softmax", "straight-through"]
num_samples = [2, 4]
"""


def test_sigkill_mid_run_then_resume_equals_an_uninterrupted_run(tmp_path):
    path = tmp_path / "slow.toml"
    path.write_text(SLOW)
    total = len(parse_study(SLOW).cells())
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "study", "run", str(path), "--out", str(killed),
         "--executor", "inline"], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while _finished_cells(killed) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    interrupted_at = _finished_cells(killed)
    assert 2 <= interrupted_at < total, "the kill must land mid-way through the study"

    assert main(["study", "run", str(path), "--out", str(killed), "--resume",
                 "--executor", "inline"]) == 0
    whole = tmp_path / "whole"
    assert main(["study", "run", str(path), "--out", str(whole), "--executor", "inline"]) == 0
    assert len(load(killed)) == total
    assert comparable(killed) == comparable(whole)


def test_export_csv_and_parquet(tmp_path):
    run_study(parse_study(SMALL), tmp_path, executor="inline", show_progress=False)
    written = export(tmp_path, "csv", tmp_path / "csv")
    assert sorted(p.name for p in written) == ["results.csv", "training.csv"]
    import pandas as pd

    table = pd.read_csv(tmp_path / "csv" / "results.csv")
    assert len(table) == len(load(tmp_path))
    assert json.loads(table.true_gradient.iloc[0])  # vectors are JSON text
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match="pip install 'estibench\\[parquet\\]'"):
            export(tmp_path, "parquet")
    else:
        export(tmp_path, "parquet", tmp_path / "pq")
        assert len(pd.read_parquet(tmp_path / "pq" / "results.parquet")) == len(table)


def test_cli_errors_for_stores_and_executors(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nothing")]) == 2
    assert "holds no estibench store" in capsys.readouterr().err
    path = tmp_path / "s.toml"
    path.write_text(SMALL)
    assert main(["study", "run", str(path), "--out", str(tmp_path / "o"), "--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err
    cuda = SMALL.replace('seed = 11', 'seed = 11\ndevice = "cuda"')
    path.write_text(cuda)
    import torch

    if not torch.cuda.is_available():
        assert main(["study", "run", str(path), "--out", str(tmp_path / "c")]) == 2
        assert "CUDA is not available" in capsys.readouterr().err


def test_run_cell_restores_the_thread_count():
    import torch

    before = torch.get_num_threads()
    cell = parse_study(SMALL).cells()[0]
    result = runner.run_cell(runner.CellJob(cell, threads=1, timing=False, memory=False))
    assert result["status"] == "ok" and torch.get_num_threads() == before
