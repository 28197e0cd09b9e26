"""Progress bars appear on a terminal once a loop has run for a second, never before."""

from __future__ import annotations

import sys

import pytest
import rich.progress

from harness import progress as progress_module


class FakeBar:
    made: list[dict] = []

    def __init__(self, *args, **kwargs) -> None:
        self.advanced = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def add_task(self, description, total=None, completed=0):
        FakeBar.made.append({"description": description, "total": total, "completed": completed})
        return 0

    def advance(self, task) -> None:
        self.advanced += 1


@pytest.fixture
def terminal(monkeypatch):
    FakeBar.made = []
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(rich.progress, "Progress", FakeBar)
    clock = {"now": 0.0}
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock["now"])
    return clock


def test_a_slow_loop_gets_a_bar_after_one_second(terminal):
    seen = []
    for item in progress_module.progress(range(10), description="reference gradient"):
        seen.append(item)
        terminal["now"] += 0.4  # each step takes 0.4 s
    assert seen == list(range(10))
    # Steps 0, 1, 2 end at 0.4, 0.8, 1.2 s: the bar starts then, with 3 steps done.
    assert FakeBar.made == [{"description": "reference gradient", "total": 10, "completed": 3}]


def test_a_quick_loop_prints_nothing(terminal):
    assert list(progress_module.progress(range(10), description="replicates")) == list(range(10))
    assert FakeBar.made == []


def test_no_bar_when_not_a_terminal(terminal, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    for _ in progress_module.progress(range(5), description="x"):
        terminal["now"] += 2
    assert FakeBar.made == []
