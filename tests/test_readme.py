"""The README's Python examples (lines starting with >>>) run and print what they say."""

from __future__ import annotations

import doctest
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_examples():
    result = doctest.testfile(str(README), module_relative=False,
                              optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_every_estimator_and_problem_has_a_row_in_the_readme():
    from estimators import ESTIMATORS
    from problems import PROBLEMS

    rows = [line.split("|")[1] for line in README.read_text(encoding="utf-8").splitlines()
            if line.startswith("| `")]  # the first cell of every table row
    missing = [name for name in ESTIMATORS.names() + PROBLEMS.names()
               if not any(f"`{name}`" in cell for cell in rows)]
    assert not missing, f"add rows to the README's tables for {missing}"
