"""Where estibench keeps files between runs: one rule for every on-disk cache.

A cache lives in the directory named by its environment variable when that is set, else in
``$XDG_CACHE_HOME/estibench/<name>`` (``~/.cache/estibench/<name>``). Setting the variable to
``off`` (or ``0``, ``false``, ``no``, ``none``, or the empty string) turns the cache off.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

OFF = ("off", "0", "false", "no", "none", "")


def cache_off(variable: str) -> bool:
    """Whether ``variable`` turns its cache off (cheap: one environment lookup)."""
    chosen = os.environ.get(variable)
    return chosen is not None and chosen.strip().lower() in OFF


def cache_dir(variable: str, name: str) -> Path | None:
    """The cache's directory (not created), or None when ``variable`` turns it off."""
    if cache_off(variable):
        return None
    chosen = os.environ.get(variable)
    if chosen is not None:
        return Path(chosen).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "estibench" / name


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A fresh temporary file beside ``path`` to write; on a clean exit it atomically replaces
    ``path``, so readers (other processes too) see the old file or the whole new one, never a
    partial one. The temporary file is removed whatever happens."""
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(handle)
    partial = Path(name)
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
