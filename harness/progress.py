"""Progress of long loops: a bar on an interactive terminal, a line now and then elsewhere.

On a terminal, a bar (count, rate, ETA) appears once the loop has run ``delay`` seconds. On any
other stderr (a batch job's log, CI, a pipe) one plain line is printed every ``interval``
seconds, the first once the loop has run that long, and a last one when such a loop ends::

    study quick: 120/277 cells done, 0 failed, 1m20s elapsed, ETA 1m45s

Quick loops print nothing either way.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], *, description: str, enabled: bool = True,
             delay: float = 1.0, interval: float = 30.0, total: int | None = None,
             already: int = 0, unit: str = "steps",
             status: Callable[[], str] | None = None) -> Iterator[T]:
    """Iterate over ``items``, showing how far the loop has got on stderr.

    Args:
        items: what to iterate over; its length is the total unless ``total`` is given.
        description: what the loop does, first on the bar and on each line.
        enabled: False shows nothing at all.
        delay: seconds before the terminal's bar appears.
        interval: on a stderr that is not a terminal, seconds between two lines (and before
            the first: a loop shorter than that prints nothing).
        total: how many items this loop has (needed for iterators without a length, such as
            generators; the ETA needs it).
        already: items finished before this loop (a resumed run): added to the count and the
            total shown, not part of the rate behind the ETA.
        unit: what an item is, for the lines ("cells").
        status: called after each item; a short text shown on the bar and in the lines, e.g.
            ``lambda: f"{failed} failed"``.

    Loops of one item, or with ``enabled=False``, show nothing.

    Example:
        >>> [x for x in progress(range(3), description="squares", enabled=False)]
        [0, 1, 2]
    """
    if total is None and isinstance(items, Sized):
        total = len(items)
    if not enabled or total == 1:
        yield from items
        return
    if not sys.stderr.isatty():
        yield from _lines(items, description, interval, total, already, unit, status)
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
    from rich import progress as rich_progress  # imported only when a bar is drawn

    columns = () if status is None else (  # rich's defaults, or: done/total, status, times
        rich_progress.TextColumn("[progress.description]{task.description}"),
        rich_progress.BarColumn(), rich_progress.MofNCompleteColumn(),
        rich_progress.TextColumn("{task.fields[status]}", markup=False),
        rich_progress.TimeElapsedColumn(), rich_progress.TextColumn("ETA"),
        rich_progress.TimeRemainingColumn())
    with rich_progress.Progress(*columns, transient=True) as bar:
        fields = {} if status is None else {"status": status()}
        task = bar.add_task(description, total=None if total is None else total + already,
                            completed=done + already, **fields)
        for item in iterator:
            yield item
            if status is None:
                bar.advance(task)
            else:
                bar.update(task, advance=1, status=status())


def _lines(items: Iterable[T], description: str, interval: float, total: int | None,
           already: int, unit: str, status: Callable[[], str] | None) -> Iterator[T]:
    """``items``, with one line on stderr every ``interval`` seconds and one at the end."""
    start = time.monotonic()
    next_line = start + interval
    done = 0
    printed = False
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if now >= next_line:
            _print_line(description, done, now - start, total, already, unit, status, eta=True)
            printed = True
            next_line = now + interval
    if printed:  # a loop long enough to be reported says when it ended
        _print_line(description, done, time.monotonic() - start, total, already, unit, status,
                    eta=False)


def _print_line(description: str, done: int, elapsed: float, total: int | None, already: int,
                unit: str, status: Callable[[], str] | None, *, eta: bool) -> None:
    count = f"{done + already}" if total is None else f"{done + already}/{total + already}"
    parts = [f"{count} {unit} done"]
    if status is not None:
        parts.append(status())
    parts.append(f"{duration(elapsed)} elapsed")
    if eta and total is not None:
        parts.append(f"ETA {duration(elapsed / done * max(total - done, 0))}")
    print(f"{description}: {', '.join(parts)}", file=sys.stderr, flush=True)


def duration(seconds: float) -> str:
    """A duration for a progress line: ``45s``, ``1m20s``, ``2h05m``.

    Example:
        >>> duration(80), duration(7500)
        ('1m20s', '2h05m')
    """
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
