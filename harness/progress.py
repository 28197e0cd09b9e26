"""Progress bars for long loops: shown on an interactive terminal, silent otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator, Sized
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], *, description: str, enabled: bool = True,
             delay: float = 1.0) -> Iterator[T]:
    """Iterate over ``items`` with a bar (count, rate, ETA) on stderr when it is a terminal.

    The bar appears once the loop has run for ``delay`` seconds, so quick loops print nothing.
    Loops of one step, or with ``enabled=False``, or whose stderr is not a terminal (CI, pipes,
    log files) show nothing.
    """
    total = len(items) if isinstance(items, Sized) else None
    if not enabled or total == 1 or not sys.stderr.isatty():
        yield from items
        return
    iterator = iter(items)
    done = 0
    start = time.monotonic()
    for item in iterator:
        yield item
        done += 1
        if time.monotonic() - start >= delay:
            break
    else:
        return
    from rich.progress import Progress  # imported only when a bar is drawn

    with Progress(transient=True) as bar:
        task = bar.add_task(description, total=total, completed=done)
        for item in iterator:
            yield item
            bar.advance(task)
