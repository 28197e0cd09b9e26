"""The store: one SQLite database per study, ``DIR/results.sqlite``.

Tables:

- ``study``: one row, the study's name, fingerprint (``Study.fingerprint``) and file text.
- ``cells``: one row per finished cell, keyed by ``Cell.key``: kind (``measure``/``train``),
  problem, estimator, num_samples, seed, the cell's derived seed, settings (JSON), status
  (``ok`` or ``failed``), the record (JSON) or the error (one line) and its traceback, and when
  it ran.
- ``skipped``: the (problem, estimator) pairs a grid lists that cannot run, with the reason.
- ``samples``: per measurement cell, what ``estibench compare`` tests with: the R squared
  deviations ‖ĝ_r − ḡ‖² of the estimates from their mean and every timed repeat, as float32
  arrays (4 bytes a value: 4 KB a cell at R = 1000, 1.2 MB for the default study).
- ``labels``: each problem and estimator spec of the study and its label, the spec without the
  options left at their defaults (``Registry.short``): the one name reports and the console use.
- ``reference_gradients``: the reference gradient of each (problem, device) whose problem has
  no exact gradient (``harness.references``), shared by every cell on it.

Only the driver process writes. Every cell is written in its own transaction, in WAL mode with
``synchronous=FULL``, so killing the process at any moment loses no finished cell and leaves a
readable database. Closing the store (``Store.close``, or leaving ``with Store(...)``) folds
the write-ahead log into the database and returns it to rollback-journal mode, so a finished
store is the one file ``results.sqlite``: no ``-wal`` or ``-shm`` beside it, and none made later
by the read-only readers (which, on a database left in WAL mode, create both and cannot remove
them). ``load(DIR)`` reads it as a pandas DataFrame.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from estimators.errors import UserError
from reports.read import (
    DATABASE,
    StoreReadError,
    damage_reported,
    database_path,
    load,
    load_skipped,
    study_info,
)

__all__ = ["DATABASE", "Store", "StoreError", "StoreReadError", "database_path", "export",
           "load", "load_skipped", "study_info"]
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS study (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    schema_version INTEGER NOT NULL,
    name TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    source TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS cells (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    problem TEXT NOT NULL,
    estimator TEXT NOT NULL,
    num_samples INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    cell_seed INTEGER NOT NULL,
    settings TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    record TEXT,
    error TEXT,
    traceback TEXT,
    started REAL NOT NULL,
    finished REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS reference_gradients (
    key TEXT PRIMARY KEY,
    problem TEXT NOT NULL,
    device TEXT NOT NULL,
    gradient TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS skipped (
    kind TEXT NOT NULL,
    problem TEXT NOT NULL,
    estimator TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (kind, problem, estimator, reason)
);
CREATE TABLE IF NOT EXISTS samples (
    key TEXT PRIMARY KEY,
    squared_deviations BLOB NOT NULL,
    times BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS labels (
    spec TEXT PRIMARY KEY,
    label TEXT NOT NULL
);
"""


class StoreError(UserError):
    """The store directory holds something we cannot use (another study, a newer schema)."""


def connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=30, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    return connection


class Store:
    """The writer's handle on a study's database (used by the driver only)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(f"cannot create the output directory {directory}: {error}") from None
        self.path = database_path(self.directory)
        with damage_reported(self.path):
            self.connection = connect(self.path)
            try:
                self.connection.executescript(_SCHEMA)
                # Damaged pages now, in one message, rather than in the middle of a resumed run.
                (verdict,) = self.connection.execute("PRAGMA quick_check(1)").fetchone()
                if verdict != "ok":  # e.g. "*** in database main ***\nPage 5: btreeInitPage() ..."
                    detail = " ".join(verdict.replace("*** in database main ***", "").split())
                    raise sqlite3.DatabaseError(f"database disk image is malformed ({detail})")
            except BaseException:
                self.connection.close()
                raise

    def close(self) -> None:
        """Fold the write-ahead log into the database, leave WAL mode and close.

        Afterwards ``results.sqlite`` holds everything and no ``-wal``/``-shm`` file is left
        beside it. A reader that holds the database open at that moment keeps it in WAL mode
        (SQLite needs the only connection to leave it); that is harmless, the next writer's
        close tidies up.
        """
        connection = self.connection
        try:
            connection.execute("PRAGMA busy_timeout = 2000")  # a reader: wait briefly, not 30 s
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            connection.execute("PRAGMA journal_mode=DELETE")
        except sqlite3.Error:
            pass  # busy (a reader) or the disk failed: the data is safe in WAL mode all the same
        finally:
            connection.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- reference gradients ------------------------------------------------------------

    def reference(self, key: str) -> dict | None:
        """A stored reference gradient (``TrueGradient.to_json()``), or None."""
        row = self.connection.execute(
            "SELECT gradient FROM reference_gradients WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def write_reference(self, key: str, problem: str, device: str, gradient: dict) -> None:
        with self.transaction():
            self.connection.execute(
                "INSERT OR REPLACE INTO reference_gradients VALUES (?, ?, ?, ?, ?)",
                (key, problem, device, json.dumps(gradient, allow_nan=False), time.time()))

    # -- the study row --------------------------------------------------------------------

    def study_row(self) -> dict | None:
        row = self.connection.execute(
            "SELECT name, fingerprint, source, schema_version FROM study WHERE id = 1"
        ).fetchone()
        if row is None:
            return None
        return dict(zip(("name", "fingerprint", "source", "schema_version"), row))

    def bind(self, name: str, fingerprint: str, source: str, *, allow_changed: bool) -> None:
        """Tie the store to a study; refuse another study, or a changed one unless allowed."""
        existing = self.study_row()
        now = time.time()
        if existing is None:
            with self.transaction():
                self.connection.execute(
                    "INSERT INTO study VALUES (1, ?, ?, ?, ?, ?, ?)",
                    (SCHEMA_VERSION, name, fingerprint, source, now, now),
                )
            return
        if existing["schema_version"] > SCHEMA_VERSION:
            raise StoreError(f"{self.path} was written by a newer estibench (schema "
                             f"{existing['schema_version']}); upgrade estibench to read it")
        if existing["name"] != name:
            raise StoreError(
                f"{self.directory} holds the results of study {existing['name']!r}, not "
                f"{name!r}; choose another --out directory"
            )
        if existing["fingerprint"] != fingerprint:
            if not allow_changed:
                raise StoreError(
                    f"study {name!r} changed since {self.directory} was written (different "
                    "grids or settings); pass --allow-changed to keep the finished cells that "
                    "still belong to it and run the new ones, or choose another --out directory"
                )
        if existing["fingerprint"] != fingerprint or existing["source"] != source:
            # the same cells with another text (comments, claims) keep the newest text
            with self.transaction():
                self.connection.execute(
                    "UPDATE study SET fingerprint = ?, source = ?, updated = ? WHERE id = 1",
                    (fingerprint, source, now),
                )

    # -- cells ------------------------------------------------------------------------------

    def transaction(self):
        return _Transaction(self.connection)

    def finished(self) -> dict[str, str]:
        """key -> status of every stored cell."""
        return dict(self.connection.execute("SELECT key, status FROM cells"))

    def write(self, cell, result: dict) -> None:
        """Store one finished cell (replacing an earlier failure of it) in one transaction."""
        with self.transaction():
            self.connection.execute(
                "INSERT OR REPLACE INTO cells VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    cell.key, cell.kind, cell.problem, cell.estimator, cell.num_samples,
                    cell.seed, cell.cell_seed, json.dumps(dict(cell.settings)),
                    result["status"],
                    None if result.get("record") is None else json.dumps(result["record"]),
                    result.get("error"), result.get("traceback"),
                    result["started"], result["finished"],
                ),
            )
            if result.get("samples"):
                self.connection.execute(
                    "INSERT OR REPLACE INTO samples VALUES (?, ?, ?)",
                    (cell.key, _floats(result["samples"].get("squared_deviations", [])),
                     _floats(result["samples"].get("times", []))))

    def write_skipped(self, skipped: Iterable) -> None:
        with self.transaction():
            self.connection.executemany(
                "INSERT OR REPLACE INTO skipped VALUES (?, ?, ?, ?)",
                [(s.kind, s.problem, s.estimator, s.reason) for s in skipped],
            )

    def write_labels(self, labels: dict[str, str]) -> None:
        """spec -> label, for every spec the study names (cells and skipped pairs alike)."""
        with self.transaction():
            self.connection.executemany("INSERT OR REPLACE INTO labels VALUES (?, ?)",
                                        sorted(labels.items()))


def _floats(values) -> bytes:
    """float32, little-endian: the samples table's array format (``reports.read.load_samples``)."""
    return np.asarray(values, dtype="<f4").tobytes()


class _Transaction:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def __enter__(self):
        self.connection.execute("BEGIN IMMEDIATE")
        return self.connection

    def __exit__(self, exc_type, *exc) -> None:
        self.connection.execute("ROLLBACK" if exc_type else "COMMIT")


# ------------------------------------------------------------------------------------ reading
# The readers live in ``reports.read`` so that reports need neither torch nor the registries;
# they are re-exported here: ``harness.store.load(DIR)``.


def export(directory: str | Path, fmt: str, out: str | Path | None = None) -> list[Path]:
    """Write the measurement and training tables as CSV or Parquet; return the files written.

    Lists and dicts (gradients, configs) become JSON text, so every column is a plain type.
    """
    if fmt not in ("csv", "parquet"):
        raise UserError(f"unknown export format {fmt!r}: expected csv or parquet")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise UserError("Parquet export needs pyarrow: pip install 'estibench[parquet]'") from None
    out = Path(out) if out is not None else Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    names = {"measure": "results", "train": "training", "sample": "sampling"}
    for kind, name in names.items():
        frame = load(directory, kind)
        if kind != "measure" and frame.empty:
            continue
        for column in frame.columns:
            if frame[column].map(lambda v: isinstance(v, (list, dict))).any():
                frame[column] = frame[column].map(
                    lambda v: json.dumps(v) if isinstance(v, (list, dict)) else v
                )
        target = out / f"{name}.{fmt}"
        if fmt == "csv":
            frame.to_csv(target, index=False)
        else:
            frame.to_parquet(target, index=False)
        written.append(target)
    return written
