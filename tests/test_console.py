"""What the command line shows (issue 19, "Console"): progress lines in a log, ``estibench``
alone, ``estibench list`` piped, and a finished store that is one file.

The progress tests run on a fake clock that the loop body moves on: no sleeping, and the lines
printed for a simulated duration are exact.
"""

from __future__ import annotations

import io
import os
import sqlite3
import subprocess
import sys
import types
from pathlib import Path

import pytest

from estimators import ESTIMATORS
from harness import cli
from harness import progress as progress_module
from harness import runner
from harness.cli import main
from harness.progress import progress
from harness.runner import run_study
from harness.store import Store, database_path, export, load, study_info
from harness.study import parse_study
from problems import PROBLEMS

ROOT = Path(__file__).resolve().parent.parent

TINY = """
name = "tiny"
seed = 3
replicates = 20
timing = false
memory = false

[[grid]]
problems = ["bernoulli-toy:dim=2", "categorical-linear:k=3"]
estimators = ["reinforce", "exact"]
num_samples = [1, 2]
"""


# --------------------------------------------------------------------- progress in a log file


@pytest.fixture
def clock(monkeypatch):
    """A fake ``time.monotonic`` for harness.progress only; stderr is capsys's (not a tty)."""
    now = {"t": 0.0}
    monkeypatch.setattr(progress_module, "time", types.SimpleNamespace(monotonic=lambda: now["t"]))
    assert not sys.stderr.isatty()
    return now


def _err_lines(capsys) -> list[str]:
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err.splitlines()


def test_a_long_loop_prints_a_line_every_interval_and_one_at_the_end(clock, capsys):
    failed = 0
    for item in progress(range(277), description="study quick", unit="cells",
                         status=lambda: f"{failed} failed"):
        clock["t"] += 1.0  # each cell takes a second
        failed += item % 10 == 9  # cells 9, 19, 29, ... fail
    lines = _err_lines(capsys)
    # 277 s: a line after 30, 60, ..., 270 s (9 lines), and one when the loop ends.
    assert len(lines) == 10
    assert lines[0] == "study quick: 30/277 cells done, 3 failed, 30s elapsed, ETA 4m07s"
    assert lines[1] == "study quick: 60/277 cells done, 6 failed, 1m00s elapsed, ETA 3m37s"
    assert lines[-1] == "study quick: 277/277 cells done, 27 failed, 4m37s elapsed"


def test_the_interval_is_a_parameter_and_slow_items_give_at_most_one_line_each(clock, capsys):
    for _ in progress(range(10), description="d", interval=5.0):
        clock["t"] += 12.0  # every item is slower than the interval
    lines = _err_lines(capsys)
    assert len(lines) == 11  # one after each item, one at the end
    assert lines[0] == "d: 1/10 steps done, 12s elapsed, ETA 1m48s"
    assert lines[-1] == "d: 10/10 steps done, 2m00s elapsed"


def test_a_resumed_loop_counts_what_was_done_before_but_not_in_the_eta(clock, capsys):
    for _ in progress(iter(range(100)), description="study s", total=100, already=177,
                      unit="cells"):
        clock["t"] += 2.0
    lines = _err_lines(capsys)
    assert lines[0] == "study s: 192/277 cells done, 30s elapsed, ETA 2m50s"  # 85 left × 2 s


def test_without_a_total_there_is_a_count_and_no_eta(clock, capsys):
    for _ in progress(iter(range(40)), description="g"):
        clock["t"] += 1.0
    assert _err_lines(capsys) == ["g: 30 steps done, 30s elapsed", "g: 40 steps done, 40s elapsed"]


@pytest.mark.parametrize("steps, seconds_per_step", [(1000, 0.001), (29, 1.0)])
def test_a_loop_shorter_than_the_interval_prints_nothing(clock, capsys, steps, seconds_per_step):
    for _ in progress(range(steps), description="quick"):
        clock["t"] += seconds_per_step
    assert _err_lines(capsys) == []


def test_disabled_or_single_step_loops_print_nothing(clock, capsys):
    for _ in progress(range(100), description="off", enabled=False):
        clock["t"] += 10.0
    for _ in progress([1], description="one"):
        clock["t"] += 100.0
    assert _err_lines(capsys) == []


def test_a_loop_left_early_prints_no_last_line(clock, capsys):
    for item in progress(range(100), description="left"):
        clock["t"] += 1.0
        if item == 44:
            break
    assert _err_lines(capsys) == ["left: 30/100 steps done, 30s elapsed, ETA 1m10s"]


def test_a_study_run_in_a_log_reports_cells_done_and_failed(clock, capsys, tmp_path, monkeypatch):
    """The runner drives its cells through ``progress``: done, failed and ETA in the lines."""
    study = parse_study(TINY)
    cells = study.expand()[0]
    seen = []

    def fake_cell(job):
        clock["t"] += 10.0  # ten seconds a cell
        seen.append(job.cell.key)
        status = "failed" if len(seen) % 2 == 0 else "ok"  # every second cell fails
        return {"status": status, "record": {} if status == "ok" else None,
                "error": None if status == "ok" else "boom", "traceback": "",
                "started": 0.0, "finished": 0.0}

    monkeypatch.setattr(runner, "run_cell", fake_cell)
    summary = run_study(study, tmp_path, executor="inline")
    assert summary.done + summary.failed == len(cells) == 8
    lines = _err_lines(capsys)
    # 80 s: lines after cells 3, 6 (30 s, 60 s) and one at the end.
    assert lines == [
        "study tiny: 3/8 cells done, 1 failed, 30s elapsed, ETA 50s",
        "study tiny: 6/8 cells done, 3 failed, 1m00s elapsed, ETA 20s",
        "study tiny: 8/8 cells done, 4 failed, 1m20s elapsed",
    ]


class _Bar:
    """Stands in for rich's Progress: records the task and its updates."""

    def __init__(self, *columns, **options) -> None:
        self.columns, self.task, self.updates = columns, None, []
        _Bar.last = self

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def add_task(self, description, **fields):
        self.task = {"description": description, **fields}
        return 0

    def update(self, task, **fields) -> None:
        self.updates.append(fields)


def test_on_a_terminal_the_bar_carries_the_status_and_what_was_done_before(clock, monkeypatch,
                                                                          capsys):
    import rich.progress

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(rich.progress, "Progress", _Bar)
    failed = 0
    for _ in progress(iter(range(5)), description="study s", total=5, already=10,
                      status=lambda: f"{failed} failed"):
        clock["t"] += 0.6
        failed += 1
    # The bar starts after 2 steps (1.2 s >= 1 s): 12 of 15 done, 2 failed; 3 updates follow.
    assert _Bar.last.task == {"description": "study s", "total": 15, "completed": 12,
                              "status": "2 failed"}
    assert _Bar.last.updates[-1] == {"advance": 1, "status": "5 failed"}
    assert len(_Bar.last.updates) == 3
    assert _err_lines(capsys) == []  # the bar, not lines


# --------------------------------------------------------------------------- estibench alone


def test_estibench_alone_prints_the_help_and_exits_0(capsys):
    assert main([]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out.startswith("usage: estibench")
    for command in ("list", "measure", "study", "run", "report", "export"):
        assert f"\n    {command} " in captured.out


# ------------------------------------------------------------------------ estibench list piped


def _piped_list(capsys) -> str:
    assert main(["list"]) == 0
    return capsys.readouterr().out


def test_list_piped_is_one_entry_per_line(capsys):
    lines = _piped_list(capsys).splitlines()
    assert "\x1b" not in "".join(lines)  # no styling in a pipe
    for cls in ESTIMATORS:
        info = cls.info
        header = f"  {info.name}  ({', '.join(info.families)}; "
        assert any(line.startswith(header) and line.endswith(")") for line in lines), header
        assert f"      {info.description}" in lines
        for option in info.options:
            assert f"      {option.describe()}: {option.doc}" in lines
    for cls in PROBLEMS:
        assert any(line.startswith(f"  {cls.info.name}  ({cls.info.family}; ") for line in lines)
        assert f"      {cls.info.description}" in lines
    # Nothing wrapped: every line is a heading, an entry (2 spaces) or its details (6).
    for line in lines:
        assert line in ("estimators", "problems", "") or line.startswith("  "), line
        indent = len(line) - len(line.lstrip(" "))
        assert indent in (0, 2, 6), line


def _terminal_list(monkeypatch, width: int) -> str:
    from rich.console import Console

    screen = io.StringIO()
    monkeypatch.setattr(cli, "_console", lambda: Console(
        file=screen, force_terminal=True, color_system=None, width=width, highlight=False))
    assert main(["list"]) == 0
    return screen.getvalue()


def test_list_piped_has_the_layout_of_a_wide_enough_terminal(capsys, monkeypatch):
    piped = _piped_list(capsys)
    assert _terminal_list(monkeypatch, 10_000) == piped


def test_list_on_a_narrow_terminal_wraps_with_the_indent_kept(monkeypatch):
    lines = _terminal_list(monkeypatch, 60).splitlines()
    assert max(len(line) for line in lines) <= 60
    assert all(line == line.rstrip() for line in lines)
    continued = [line for line in lines if len(line) - len(line.lstrip(" ")) in (4, 8)]
    assert continued  # some entries wrapped, under their own indent
    assert all(line in ("estimators", "problems", "") or line.startswith("  ") for line in lines)


def test_list_through_a_real_pipe_ignores_the_columns_variable(capsys):
    """What ``estibench list | less`` gets: the in-process output, whatever COLUMNS says."""
    env = {**os.environ, "COLUMNS": "40"}
    env.pop("FORCE_COLOR", None)
    piped = subprocess.run([sys.executable, "-m", "harness.cli", "list"], cwd=ROOT, env=env,
                           capture_output=True, text=True, check=True, timeout=120)
    assert piped.stdout == _piped_list(capsys)


# ----------------------------------------------------------------- a finished store, one file


def _beside(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("results.sqlite"))


def test_a_finished_run_and_its_readers_leave_only_results_sqlite(tmp_path, capsys):
    study_file = tmp_path / "tiny.toml"
    study_file.write_text(TINY)
    out = tmp_path / "out"
    assert main(["study", "run", str(study_file), "--out", str(out), "--executor", "inline"]) == 0
    assert _beside(out) == ["results.sqlite"]
    # The readers open the database read-only; on a WAL database they would create -wal and
    # -shm and could not remove them. After a run it is in rollback-journal mode.
    assert len(load(out)) == 8 and study_info(out)["name"] == "tiny"
    export(out, "csv", tmp_path / "csv")
    assert main(["study", "run", str(study_file), "--out", str(out), "--resume"]) == 0
    assert _beside(out) == ["results.sqlite"]
    with sqlite3.connect(f"file:{database_path(out)}?mode=ro", uri=True) as reader:
        assert reader.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        assert reader.execute("SELECT count(*) FROM cells").fetchone() == (8,)
    reader.close()
    assert _beside(out) == ["results.sqlite"]


def test_a_reader_open_at_close_keeps_wal_mode_until_the_next_writer(tmp_path):
    with Store(tmp_path) as store:
        store.bind("tiny", "fingerprint", TINY, allow_changed=False)
        assert _beside(tmp_path) == ["results.sqlite", "results.sqlite-shm", "results.sqlite-wal"]
    reader = sqlite3.connect(f"file:{database_path(tmp_path)}?mode=ro", uri=True)
    store = Store(tmp_path)
    reader.execute("BEGIN")
    reader.execute("SELECT * FROM study").fetchall()  # a read transaction open at close
    store.close()  # cannot leave WAL mode now: no error, the data is stored all the same
    reader.close()
    assert study_info(tmp_path)["name"] == "tiny"
    with Store(tmp_path):
        pass
    assert _beside(tmp_path) == ["results.sqlite"]
