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
                 "bernoulli-toy", "categorical-linear", "k=10", "bernoulli, categorical"):
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
    "argv", [["measure", "bernoulli-toy", "reinforce", "--replicates", "many"], ["mesure"], []]
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
