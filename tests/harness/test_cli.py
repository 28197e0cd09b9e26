"""The command line: list, measure (table and JSON), and one-line errors with exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from harness.cli import main
from harness.record import FIELDS


def test_list_shows_names_families_defaults_and_descriptions(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for text in ("reinforce", "baseline=none (none|loo)", "gumbel-softmax", "temperature=0.5",
                 "bernoulli-toy", "categorical-linear", "k=10", "bernoulli, categorical",
                 "f evaluations: 1 per sample", "f evaluations: one per support point"):
        assert text in out


def test_list_one_registry(capsys):
    assert main(["list", "problems"]) == 0
    out = capsys.readouterr().out
    assert "bernoulli-toy" in out and "straight-through" not in out


def test_measure_prints_a_readable_table(capsys):
    code = main(["measure", "bernoulli-toy:dim=2", "reinforce:baseline=loo", "--num-samples", "4",
                 "--replicates", "200", "--no-memory"])
    assert code == 0
    out = capsys.readouterr().out
    for text in ("reinforce:baseline=loo", "bias p-value", "variance (trace)", "time per estimate",
                 "per coordinate", "exact"):
        assert text in out


def test_measure_json_is_one_record(capsys):
    assert main(["measure", "categorical-linear:k=4", "exact", "--replicates", "3", "--json",
                 "--no-timing", "--no-memory"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert tuple(record) == FIELDS and record["variance"] == 0.0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["measure", "bernouli-toy", "reinforce"], "did you mean 'bernoulli-toy'"),
        (["measure", "bernoulli-toy", "reinforce:baseline=avg"], "expected one of none, loo"),
        (["measure", "bernoulli-toy", "gumbel-softmax:temperature=0"], "expected a finite number > 0"),
        (["measure", "bernoulli-toy:dim=40", "exact"], "too large to enumerate"),
        (["measure", "bernoulli-toy", "reinforce", "--replicates", "1"], "replicates must be"),
        (["measure", "bernoulli-toy", "reinforce", "--device", "npu"], "device"),
    ],
)
def test_user_mistakes_are_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("estibench: error: ") and message in lines[0]
    assert "Traceback" not in captured.err and captured.out == ""


@pytest.mark.parametrize(
    "argv", [["measure", "bernoulli-toy", "reinforce", "--replicates", "many"], ["mesure"],
             ["study"]]  # (estibench alone prints the help: tests/test_console.py)
)
def test_usage_mistakes_are_one_line_too(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("estibench: error: ")


def test_console_script_runs_in_a_fresh_process():
    """The installed entry point, with an unavailable device: one line, exit 2, no traceback."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, "-m", "harness.cli", "measure", "bernoulli-toy", "reinforce", "--device", "cuda"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("estibench: error: device 'cuda' requested")
    assert "Traceback" not in result.stderr


# -- paths a user gets wrong: one line, exit 2 (issue 15) -------------------------------------

TINY_STUDY = """name = "tiny"
replicates = 2

[[grid]]
problems = ["bernoulli-toy:dim=2"]
estimators = ["reinforce"]
"""


@pytest.fixture
def store(tmp_path):
    """A store with its study row and no cells: enough for report and export."""
    from harness.store import Store

    with Store(tmp_path / "store") as opened:
        opened.bind("tiny", "fingerprint", TINY_STUDY, allow_changed=False)
    return tmp_path / "store"


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("estibench: error: "), captured.err
    return lines[0]


@pytest.mark.parametrize("command", ["report", "export"])
def test_a_file_given_as_the_store_directory(command, tmp_path, capsys):
    """Was NotADirectoryError (report) and FileExistsError (export) from mkdir."""
    (tmp_path / "notes.txt").write_text("hello")
    assert main([command, str(tmp_path / "notes.txt")]) == 2
    assert "is a file, not a store directory" in _one_error_line(capsys)


def test_report_of_a_missing_store_creates_nothing(tmp_path, capsys):
    assert main(["report", str(tmp_path / "typo")]) == 2
    assert "holds no estibench store" in _one_error_line(capsys)
    assert not (tmp_path / "typo").exists()


@pytest.mark.parametrize("command", ["report", "export"])
@pytest.mark.parametrize(
    "out, message",
    [
        ("notes.txt", "notes.txt is a file, not a directory"),  # was FileExistsError
        ("notes.txt/sub", "notes.txt is a file, not a directory"),  # was NotADirectoryError
        ("/proc/estibench-x", "cannot create the directory /proc/estibench-x"),  # root can't either
        ("/proc", "cannot create files in /proc"),  # exists, but not even root writes there
    ],
)
def test_an_output_directory_that_cannot_be_written(command, out, message, store, capsys):
    (store.parent / "notes.txt").write_text("hello")
    out = out if out.startswith("/") else str(store.parent / out)
    assert main([command, str(store), "--out", out]) == 2
    line = _one_error_line(capsys)
    assert message in line and "--out must name a directory that can be created and written" in line


def test_export_into_a_writable_directory_still_works(store, tmp_path, capsys):
    assert main(["export", str(store), "--out", str(tmp_path / "csv")]) == 0
    assert (tmp_path / "csv" / "results.csv").is_file()


def test_resume_on_a_store_with_damaged_pages(store, tmp_path, capsys):
    """Was sqlite3.DatabaseError from the first query; report and export said it in one line,
    and now so does study run --resume (before running anything)."""
    from harness.store import Store

    with Store(store) as opened:  # some pages beyond the first to damage
        opened.write_skipped([_Skip("measure", f"p{i}", "e", "x" * 200) for i in range(100)])
    data = bytearray((store / "results.sqlite").read_bytes())
    assert len(data) > 3 * 4096
    data[4096:] = b"\xab" * (len(data) - 4096)
    (store / "results.sqlite").write_bytes(data)
    (tmp_path / "tiny.toml").write_text(TINY_STUDY)
    argv = ["study", "run", str(tmp_path / "tiny.toml"), "--out", str(store), "--resume",
            "--executor", "inline"]
    assert main(argv) == 2
    assert "is not a readable estibench store: database disk image is malformed" in (
        _one_error_line(capsys))
    for command in (["report", str(store)], ["export", str(store)]):  # the same sentence
        assert main(command) == 2
        assert "is not a readable estibench store" in _one_error_line(capsys)


class _Skip:
    def __init__(self, kind, problem, estimator, reason):
        self.kind, self.problem, self.estimator, self.reason = kind, problem, estimator, reason
