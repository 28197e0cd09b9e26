"""The README, the front page: its Python examples (lines starting with >>>) run and print what
they say, and CI runs its test command. The reference pages are tested in tests/test_docs.py."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def test_readme_examples(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = doctest.testfile(str(README), module_relative=False, encoding="utf-8",
                              optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_ci_runs_the_readme_test_command():
    quick_start = README.read_text(encoding="utf-8").split("## Quick start", 1)[1]
    commands = re.findall(r"```bash\n(.*?)\n```", quick_start.split("\n## ", 1)[0], re.DOTALL)
    assert len(commands) == 2, "the Quick start has two commands: the main job, then the tests"
    assert commands[0].endswith("estibench run") and commands[1].endswith("pytest")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert commands[1] in ci, ".ci/run must run the README's test command verbatim"
