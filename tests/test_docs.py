"""The pages under docs/: their examples run, their tables cover the registries, every page is
in the index, and every relative link leads somewhere.

Every page opens with an example that runs: its ``>>>`` lines run with doctest (ELLIPSIS,
NORMALIZE_WHITESPACE) as the docstring examples do, in a fresh temporary directory, so an
example may write ``results/...``. A page without one fails.
"""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
INDEX = DOCS / "README.md"
PENDING = {"docs/check.md"}
"""Pages linked from the index that other authors are writing; a missing one is allowed."""

OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def run_examples(page: Path) -> doctest.TestResults:
    return doctest.testfile(str(page), module_relative=False, optionflags=OPTIONS,
                            encoding="utf-8")


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_page_examples(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_examples(page)
    assert result.attempted > 0, f"docs/{page.name} needs an example (>>> lines) that runs"
    assert result.failed == 0


def first_cells(page: Path) -> list[str]:
    """The first cell of every table row of a page."""
    return [line.split("|")[1] for line in page.read_text(encoding="utf-8").splitlines()
            if line.startswith("| `")]


def test_every_estimator_has_a_row_in_the_estimators_table():
    from estimators import ESTIMATORS

    rows = first_cells(DOCS / "estimators.md")
    missing = [name for name in ESTIMATORS.names()
               if not any(f"`{name}`" in cell for cell in rows)]
    assert not missing, f"add rows to the table in docs/estimators.md for {missing}"


def test_every_problem_has_a_row_in_the_problems_tables():
    from problems import PROBLEMS

    rows = first_cells(DOCS / "problems.md")
    missing = [name for name in PROBLEMS.names()
               if not any(f"`{name}`" in cell for cell in rows)]
    assert not missing, f"add rows to the tables in docs/problems.md for {missing}"


LINK = re.compile(r"\]\(([^)\s]+)\)")


def links(page: Path) -> list[str]:
    """Relative link targets of a page, outside code blocks."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    return [target for target in LINK.findall(text)
            if not re.match(r"[a-z]+:", target)]  # http:, https:, mailto:


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    return {anchor(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


@pytest.mark.parametrize("page", [ROOT / "README.md", *PAGES],
                         ids=["README.md", *(f"docs/{page.name}" for page in PAGES)])
def test_links_lead_somewhere(page):
    broken = []
    for target in links(page):
        path, _, fragment = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        name = destination.relative_to(ROOT).as_posix() if destination.is_relative_to(ROOT) \
            else str(destination)
        if not destination.exists():
            if name not in PENDING:
                broken.append(target)
        elif fragment and destination.suffix == ".md" and fragment not in anchors(destination):
            broken.append(target)
    assert not broken, f"links in {page.relative_to(ROOT)} that lead nowhere: {broken}"


def test_every_page_is_in_the_index():
    linked = {(DOCS / target.partition("#")[0]).resolve() for target in links(INDEX)}
    missing = [page.name for page in PAGES if page != INDEX and page.resolve() not in linked]
    assert not missing, f"list {missing} in docs/README.md"
    assert "docs/README.md" in links(ROOT / "README.md")
