"""Reading a study's store (``DIR/results.sqlite``) into pandas, with only sqlite3 and pandas.

The writer is ``harness.store``; this module is the reading side, kept free of torch and of the
registries so that reports are built from stored results alone. ``harness.store`` re-exports
these functions.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DATABASE = "results.sqlite"


class StoreReadError(ValueError):
    """The directory holds no readable store; the message says which and why."""


def database_path(directory: str | Path) -> Path:
    return Path(directory) / DATABASE


@contextlib.contextmanager
def damage_reported(path: Path) -> Iterator[None]:
    """An SQLite error inside (a damaged or foreign file) becomes a StoreReadError naming it;
    the writer (``harness.store.Store``) uses it too."""
    try:
        yield
    except sqlite3.DatabaseError as error:
        raise StoreReadError(f"{path} is not a readable estibench store: {error}") from None


@contextlib.contextmanager
def _reading(directory: str | Path) -> Iterator[sqlite3.Connection]:
    if Path(directory).exists() and not Path(directory).is_dir():
        raise StoreReadError(f"{directory} is a file, not a store directory (one that holds "
                             f"{DATABASE})")
    path = database_path(directory)
    if not path.is_file():
        raise StoreReadError(f"{directory} holds no estibench store ({DATABASE} not found)")
    with damage_reported(path):
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            connection.execute("SELECT 1 FROM cells LIMIT 1")
            yield connection
        finally:
            connection.close()


def study_info(directory: str | Path) -> dict:
    """The study row: name, fingerprint and the study file's text."""
    with _reading(directory) as connection:
        row = connection.execute("SELECT name, fingerprint, source FROM study").fetchone()
    if row is None:
        raise StoreReadError(f"{directory}: the store has no study row")
    return dict(zip(("name", "fingerprint", "source"), row))


def _rows(directory: str | Path, kind: str) -> list[dict[str, Any]]:
    with _reading(directory) as connection:
        cursor = connection.execute(
            "SELECT key, kind, problem, estimator, num_samples, seed, cell_seed, settings, "
            "status, record, error, started, finished FROM cells WHERE kind = ? ORDER BY rowid",
            (kind,),
        )
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor]


def load_labels(directory: str | Path) -> dict[str, str]:
    """spec -> label: the spec with only the options that differ from their defaults, as the
    harness wrote it (``Registry.short``); empty for a store written before labels were kept,
    whose reports then show the canonical specs."""
    with _reading(directory) as connection:
        if connection.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                              "AND name = 'labels'").fetchone() is None:
            return {}
        return dict(connection.execute("SELECT spec, label FROM labels"))


def _with_labels(frame, labels: dict[str, str]):
    """``problem_label`` and ``estimator_label`` columns: each spec's label, or the spec."""
    for column in ("problem", "estimator"):
        frame[column + "_label"] = [labels.get(spec, spec) for spec in frame[column]]
    return frame


def load(directory: str | Path, kind: str = "measure"):
    """The study's cells as a pandas DataFrame.

    ``kind="measure"``: one row per measurement: identity columns (problem, estimator,
    num_samples, seed, cell_seed, settings such as replicates), ``status`` and ``error``, then
    every record field (``harness.record``); vectors stay lists. ``kind="train"``: one row per
    evaluation of every training run (step, objective, objective_stderr, gradient_variance,
    wall_time_s, ...); a failed run is one row with its error. ``kind="sample"``: one row per
    sampling cell (``harness.sampling``: total_variation, ...). All carry ``problem_label`` and
    ``estimator_label`` (``load_labels``), the names every report and the console use.
    """
    import pandas as pd

    if kind not in ("measure", "train", "sample"):
        raise ValueError(f"kind must be 'measure', 'train' or 'sample', got {kind!r}")
    rows = []
    for row in _rows(directory, kind):
        settings = json.loads(row.pop("settings"))
        record = json.loads(row.pop("record")) if row["record"] is not None else {}
        base = {**row, **settings}
        extra = {k: v for k, v in record.items() if k not in base and k != "curve"}
        curve = record.get("curve", []) if kind == "train" else []
        if not curve:
            rows.append({**base, **extra})
        for point in curve:
            rows.append({**base, **extra, **point})
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame(columns=["key", "kind", "problem", "estimator", "num_samples",
                                      "seed", "status", "error"])
    return _with_labels(frame, load_labels(directory))


def load_skipped(directory: str | Path):
    """The skipped pairs as a DataFrame: kind, problem, estimator, reason."""
    import pandas as pd

    with _reading(directory) as connection:
        rows = connection.execute("SELECT kind, problem, estimator, reason FROM skipped").fetchall()
    frame = pd.DataFrame(rows, columns=["kind", "problem", "estimator", "reason"])
    return _with_labels(frame, load_labels(directory))


def load_samples(directory: str | Path) -> dict[str, dict]:
    """key -> {"squared_deviations", "times"} (numpy float64 arrays) of every measurement cell
    that kept them (``harness.store``'s ``samples`` table); empty for a store written before
    they were kept."""
    import numpy as np

    with _reading(directory) as connection:
        if connection.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                              "AND name = 'samples'").fetchone() is None:
            return {}
        rows = connection.execute("SELECT key, squared_deviations, times FROM samples")
        return {key: {"squared_deviations": np.frombuffer(deviations, "<f4").astype(float),
                      "times": np.frombuffer(times, "<f4").astype(float)}
                for key, deviations, times in rows}
