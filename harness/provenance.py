"""Where a record came from: library versions and the git commit of the estibench source."""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import subprocess
from pathlib import Path


@functools.cache
def versions() -> dict[str, str]:
    """Versions of Python and of the libraries that change the numbers."""
    found = {"python": platform.python_version()}
    for name in ("estibench", "torch", "numpy", "scipy"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


@functools.cache
def git_commit() -> str | None:
    """The commit of the checkout estibench runs from ('-dirty' if it has local changes).

    ``None`` when estibench is not running from a git checkout (e.g. a wheel install).
    """
    source = Path(__file__).resolve().parent.parent
    try:
        top, commit = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "--show-toplevel", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.split()
        if Path(top).resolve() != source:  # installed copy inside some other checkout
            return None
        dirty = subprocess.run(
            ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return commit + ("-dirty" if dirty else "") if commit else None
