"""Study files: TOML grids of problems × estimators × settings × seeds, expanded into cells.

A study file looks like this (every key but ``name`` and the grids' ``problems`` and
``estimators`` has a default)::

    name = "temperature-sweep"      # letters, digits, '-', '_', '.'
    seed = 0                        # the study seed: every cell's seed derives from it
    device = "cpu"                  # cpu, cuda or cuda:N
    dtype = "float32"               # float32 or float64
    replicates = 1000               # R, independent estimates per measurement cell
    threads = 1                     # torch threads per cell (1 keeps cells reproducible)
    timing = true                   # time one estimate
    memory = true                   # peak memory of one estimate

    [[grid]]                        # bias/variance measurements
    problems = ["bernoulli-toy:dim=3"]
    estimators = ["reinforce", "gumbel-softmax"]
    num_samples = [1, 10]
    seeds = [0, 1]
    sweep = { temperature = [0.1, 0.5, 1.0] }  # swept in every estimator that has the option

    [[training]]                    # optimisation runs
    problems = ["bernoulli-toy:dim=3"]
    estimators = ["reinforce:baseline=loo"]
    optimizer = "adam"              # adam or sgd
    learning_rate = 0.05
    steps = 200
    eval_every = 20                 # evaluate the objective and gradient variance every N steps
    variance_replicates = 100       # R for the gradient variance at an evaluation
    seeds = [0, 1, 2]

    [[sampling]]                    # distributions of relaxed samples (harness.sampling)
    problems = ["subset-graded:n=4,k=2"]
    estimators = ["relaxed-topk"]   # relaxations only
    samples = 10000                 # relaxed samples drawn per cell
    seeds = [0, 1, 2]
    sweep = { temperature = [0.1, 1.0, 10.0] }

``load_study`` checks everything and returns a :class:`Study`; a mistake raises
:class:`StudyError` with the file, the key path (``grid[0].num_samples[1]``) and, where the key
can be found in the text, its line. ``Study.cells()`` expands the grids; a pair the estimator
cannot run on is not a cell but a :class:`Skipped` entry with the reason.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from estimators import ESTIMATORS, Estimator
from estimators.errors import UserError
from estimators.registry import format_spec, split_spec
from harness.claims import parse_claims
from harness.compat import incompatibility
from harness.measure import DTYPES
from harness.training import OPTIMIZERS
from problems import PROBLEMS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


class StudyError(UserError):
    """A mistake in a study file; the message names the file and the key path."""


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
TIMING_FIELDS = ("time_per_estimate_s", "peak_memory_bytes", "peak_memory_method",
                 "wall_time_s", "versions", "git_commit", "torch_version")
"""Record fields that depend on the machine and the moment, not on the numbers."""


@dataclasses.dataclass(frozen=True)
class Cell:
    """One unit of work: a measurement, a training run or a sample distribution, with
    everything that defines it."""

    kind: str  # "measure", "train" or "sample"
    problem: str  # canonical spec
    estimator: str  # canonical spec
    num_samples: int  # samples per estimate; of a "sample" cell: the samples drawn
    seed: int  # the grid's seed (the cell's generator seed is ``cell_seed``)
    settings: tuple[tuple[str, Any], ...]  # replicates, device, dtype, optimiser, ...
    study_seed: int = 0

    @property
    def key(self) -> str:
        """A canonical text that identifies the cell within its study."""
        return json.dumps(
            {"kind": self.kind, "problem": self.problem, "estimator": self.estimator,
             "num_samples": self.num_samples, "seed": self.seed, **dict(self.settings)},
            sort_keys=True,
        )

    @property
    def cell_seed(self) -> int:
        """The seed of this cell's random streams: a hash of the study seed and the key, so
        a cell gives the same numbers whichever executor, worker or order runs it."""
        digest = hashlib.sha256(f"{self.study_seed}\n{self.key}".encode()).digest()
        return int.from_bytes(digest[:8], "little") >> 1

    def setting(self, name: str) -> Any:
        return dict(self.settings)[name]


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A (problem, estimator) pair of a grid that cannot run, and why."""

    kind: str
    problem: str
    estimator: str
    reason: str


@dataclasses.dataclass
class Study:
    name: str
    seed: int
    device: str
    dtype: str
    replicates: int
    threads: int
    timing: bool
    memory: bool
    grids: list[dict]
    training: list[dict]
    source: str = ""  # the file's text
    path: str = "<string>"
    claims: list = dataclasses.field(default_factory=list)  # harness.claims.Claim
    sampling: list[dict] = dataclasses.field(default_factory=list)

    def expand(self) -> tuple[list[Cell], list[Skipped]]:
        """Every cell of every grid, in file order, duplicates removed; and the skipped pairs."""
        cells: dict[str, Cell] = {}
        skipped: dict[tuple, Skipped] = {}
        for kind, grids in (("measure", self.grids), ("train", self.training),
                            ("sample", self.sampling)):
            for grid in grids:
                for problem, estimator in itertools.product(grid["problems"], grid["estimators"]):
                    reason = grid["incompatible"].get((problem, estimator))
                    if reason is not None:
                        skipped.setdefault((kind, problem, estimator),
                                           Skipped(kind, problem, estimator, reason))
                        continue
                    fewest = grid["fewest"][estimator]
                    most = grid["most"].get((problem, estimator))
                    for num_samples, seed in itertools.product(grid["num_samples"],
                                                               grid["seeds"]):
                        reason = None
                        if num_samples < fewest:
                            reason = f"needs num_samples >= {fewest}"
                        elif most is not None and num_samples > most:
                            reason = (f"takes at most {most} on {problem} (distinct outcomes "
                                      "drawn without replacement)")
                        if reason is not None:
                            skipped.setdefault(
                                (kind, problem, estimator, num_samples),
                                Skipped(kind, problem, estimator,
                                        f"num_samples={num_samples}: {estimator} {reason}"))
                            continue
                        cell = Cell(kind, problem, estimator, num_samples, seed,
                                    tuple(sorted(grid["settings"].items())), self.seed)
                        cells.setdefault(cell.key, cell)
        return list(cells.values()), list(skipped.values())

    def cells(self) -> list[Cell]:
        return self.expand()[0]

    def fingerprint(self) -> str:
        """A hash of what the study computes (its settings and cells), not of its formatting:
        editing a comment keeps it, changing a grid or a setting changes it."""
        cells, _ = self.expand()
        content = json.dumps({"name": self.name, "seed": self.seed,
                              "timing": self.timing, "memory": self.memory,
                              "threads": self.threads,
                              "cells": sorted(cell.key for cell in cells)}, sort_keys=True)
        return hashlib.sha256(content.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------- checking


class _Checker:
    """Reads a parsed TOML document key by key; every complaint names the key path."""

    def __init__(self, path: str, text: str) -> None:
        self.path, self.text = path, text

    def fail(self, where: str, message: str) -> StudyError:
        line = self._line_of(where)
        at = f" (line {line})" if line else ""
        return StudyError(f"{self.path}: {where}{at}: {message}")

    def _line_of(self, where: str) -> int | None:
        """The line of the last key named in ``where``, when it occurs exactly once."""
        key = re.sub(r"\[\d+\]", "", where).split(".")[-1]
        if not key:
            return None
        hits = [i + 1 for i, line in enumerate(self.text.splitlines())
                if re.match(rf"\s*\"?{re.escape(key)}\"?\s*=", line)]
        return hits[0] if len(hits) == 1 else None

    def keys(self, table: dict, where: str, allowed: dict[str, str]) -> None:
        for key in table:
            if key not in allowed:
                near = ", ".join(sorted(allowed))
                raise self.fail(f"{where}{key}" if where else key,
                                f"unknown key {key!r}; allowed keys here: {near}")

    def integer(self, value: Any, where: str, minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(where, f"expected an integer >= {minimum}, got {value!r}")
        return value

    def number(self, value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise self.fail(where, f"expected a number > 0, got {value!r}")
        if value == float("inf"):
            raise self.fail(where, f"expected a finite number, got {value!r}")
        return float(value)

    def boolean(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, f"expected true or false, got {value!r}")
        return value

    def string(self, value: Any, where: str, choices: tuple[str, ...] | None = None) -> str:
        if not isinstance(value, str):
            raise self.fail(where, f"expected a string, got {value!r}")
        if choices is not None and value not in choices:
            raise self.fail(where, f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    def listed(self, value: Any, where: str, item: Callable[[Any, str], Any]) -> list:
        """A non-empty list (a single value counts as a list of one), each item checked."""
        values = value if isinstance(value, list) else [value]
        if not values:
            raise self.fail(where, "expected a non-empty list")
        return [item(v, f"{where}[{i}]") for i, v in enumerate(values)]


_TOP = {
    "name": "study name", "description": "free text", "seed": "study seed",
    "device": "cpu, cuda or cuda:N", "dtype": "float32 or float64",
    "replicates": "R per measurement", "threads": "torch threads per cell",
    "timing": "time one estimate", "memory": "peak memory of one estimate",
    "grid": "measurement grids", "training": "training grids",
    "sampling": "distributions of relaxed samples",
    "claim": "published claims the study checks (estibench reproduce)",
}
_GRID = {"name": "label", "problems": "problem specs", "estimators": "estimator specs",
         "num_samples": "samples per estimate", "seeds": "seeds", "replicates": "R override",
         "sweep": "estimator options to sweep"}
_TRAINING = {**_GRID, "optimizer": "adam or sgd", "learning_rate": "step size",
             "steps": "optimisation steps", "eval_every": "evaluation interval",
             "variance_replicates": "R at each evaluation"}
del _TRAINING["replicates"]
_SAMPLING = {"name": "label", "problems": "problem specs (enumerable)", "estimators":
             "relaxations", "samples": "relaxed samples per cell", "seeds": "seeds",
             "sweep": "estimator options to sweep"}
_TABLES = {"measure": ("grid", _GRID), "train": ("training", _TRAINING),
           "sample": ("sampling", _SAMPLING)}


def _registry_make(check: _Checker, registry, value: Any, where: str):
    spec = check.string(value, where)
    try:
        return registry.make(spec)
    except UserError as error:
        raise check.fail(where, str(error)) from None


def _swept_estimators(check: _Checker, estimators: list, sweep: Any, where: str) -> list:
    """Each (built) estimator once per combination of the swept options it declares."""
    if not isinstance(sweep, dict):
        raise check.fail(where, f"expected a table of option = [values], got {sweep!r}")
    values = {option: check.listed(given, f"{where}.{option}", lambda v, w: v)
              for option, given in sweep.items()}
    if not sweep:
        return estimators
    expanded = {}
    used: set[str] = set()
    for estimator in estimators:
        name, given = split_spec(estimator.spec)
        declared = {opt.name for opt in ESTIMATORS.get(name).info.options}
        mine = [option for option in sweep if option in declared]
        used.update(mine)
        grids = [[(option, v) for v in values[option]] for option in mine]
        for combination in itertools.product(*grids):
            try:
                swept = ESTIMATORS.make(format_spec(name, {**given, **dict(combination)}))
                expanded.setdefault(swept.spec, swept)
            except UserError as error:
                raise check.fail(where, f"{dict(combination)} on {name!r}: {error}") from None
    unused = [option for option in sweep if option not in used]
    if unused:
        raise check.fail(f"{where}.{unused[0]}",
                         "no estimator of this grid has this option, so sweeping it does nothing")
    return list(expanded.values())


def _grid(check: _Checker, table: Any, where: str, study: dict, kind: str) -> dict:
    key, allowed = _TABLES[kind]
    if not isinstance(table, dict):
        raise check.fail(where, f"expected a table ([[{key}]])")
    check.keys(table, f"{where}.", allowed)
    for required in ("problems", "estimators"):
        if required not in table:
            raise check.fail(f"{where}.{required}", "missing: every grid lists its "
                             "problems and estimators")
    built = check.listed(table["problems"], f"{where}.problems",
                         lambda v, w: _registry_make(check, PROBLEMS, v, w))
    problems = [problem.spec for problem in built]
    built_problems = {problem.spec: problem for problem in built}
    built = check.listed(table["estimators"], f"{where}.estimators",
                         lambda v, w: _registry_make(check, ESTIMATORS, v, w))
    built = _swept_estimators(check, built, table.get("sweep", {}), f"{where}.sweep")
    estimators = [estimator.spec for estimator in built]
    built_estimators = {estimator.spec: estimator for estimator in built}
    if kind == "sample":
        num_samples = [check.integer(table.get("samples", 10_000), f"{where}.samples", 1)]
    else:
        num_samples = check.listed(table.get("num_samples", [1]), f"{where}.num_samples",
                                   lambda v, w: check.integer(v, w, 1))
    seeds = check.listed(table.get("seeds", [0]), f"{where}.seeds",
                         lambda v, w: check.integer(v, w, 0))
    settings: dict[str, Any] = {"device": study["device"], "dtype": study["dtype"]}
    if kind == "train":
        settings.update(
            optimizer=check.string(table.get("optimizer", "adam"), f"{where}.optimizer",
                                   tuple(OPTIMIZERS)),
            learning_rate=check.number(table.get("learning_rate", 0.05),
                                       f"{where}.learning_rate"),
            steps=check.integer(table.get("steps", 100), f"{where}.steps", 1),
            eval_every=check.integer(table.get("eval_every", 10), f"{where}.eval_every", 1),
            variance_replicates=check.integer(table.get("variance_replicates", 100),
                                              f"{where}.variance_replicates", 2),
        )
    elif kind == "measure":
        settings["replicates"] = check.integer(table.get("replicates", study["replicates"]),
                                               f"{where}.replicates", 2)
    incompatible = {}
    for problem, estimator in itertools.product(problems, estimators):
        reason = incompatibility(built_problems[problem], built_estimators[estimator])
        if reason is None and kind == "sample":
            reason = _unsampleable(built_problems[problem], built_estimators[estimator])
        if reason is not None:
            incompatible[(problem, estimator)] = reason
    if len(incompatible) == len(problems) * len(estimators):
        raise check.fail(where, "empty grid: no estimator of this grid can run on any of its "
                         "problems (" + next(iter(incompatible.values())) + ")")
    if kind == "sample":  # the samples of a cell are drawn one by one: no per-estimate bounds
        fewest, most = dict.fromkeys(built_estimators, 1), {}
    else:
        fewest = {spec: e.min_samples() for spec, e in built_estimators.items()}
        most = _most_samples(built_problems, built_estimators, incompatible)
    return {"name": table.get("name", ""), "problems": problems, "estimators": estimators,
            "num_samples": num_samples, "seeds": seeds, "settings": settings,
            "incompatible": incompatible, "fewest": fewest, "most": most}


def _unsampleable(problem, estimator) -> str | None:
    """Why a [[sampling]] pair cannot run (``harness.sampling``), or None."""
    from estimators.relaxation import Relaxation

    if not isinstance(estimator, Relaxation):
        return f"{estimator.spec} draws no relaxed samples (not a relaxation)"
    if not problem.info.enumerable:
        return f"{problem.spec} has no enumerable support to compare the samples with"
    return None


def _most_samples(problems: dict, estimators: dict, incompatible: dict) -> dict:
    """{(problem, estimator): the most num_samples the estimator takes on the problem} for the
    compatible pairs whose estimator has such a limit (``Estimator.max_samples``); only those
    build the problem's distribution."""
    most = {}
    for (problem, p), (estimator, e) in itertools.product(problems.items(), estimators.items()):
        if (problem, estimator) in incompatible or type(e).max_samples is Estimator.max_samples:
            continue
        limit = e.max_samples(p.distribution())
        if limit is not None:
            most[(problem, estimator)] = limit
    return most


def parse_study(text: str, path: str = "<string>") -> Study:
    """Check a study file's text; raise :class:`StudyError` naming the first mistake."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise StudyError(f"{path}: not valid TOML: {error}") from None
    check = _Checker(path, text)
    check.keys(document, "", _TOP)
    if "name" not in document:
        raise check.fail("name", "missing: a study needs a name (letters, digits, - _ .)")
    name = check.string(document["name"], "name")
    if not _NAME.match(name):
        raise check.fail("name", f"{name!r} is not a valid name: use letters, digits, - _ .")
    study = {
        "device": check.string(document.get("device", "cpu"), "device"),
        "dtype": check.string(document.get("dtype", "float32"), "dtype", tuple(DTYPES)),
        "replicates": check.integer(document.get("replicates", 1000), "replicates", 2),
    }
    if not re.fullmatch(r"cpu|cuda(:\d+)?", study["device"]):
        raise check.fail("device", f"expected cpu, cuda or cuda:N, got {study['device']!r}")
    tables = {}
    for kind, (key, _) in _TABLES.items():
        tables[kind] = document.get(key, [])
        if not isinstance(tables[kind], list):
            raise check.fail(key, f"expected an array of tables ([[{key}]]), got "
                             f"{tables[kind]!r}")
    if not any(tables.values()):
        raise check.fail("grid", "the study has no [[grid]], [[training]] or [[sampling]] "
                         "table: nothing to run")
    built = {kind: [_grid(check, g, f"{_TABLES[kind][0]}[{i}]", study, kind)
                    for i, g in enumerate(given)] for kind, given in tables.items()}
    result = Study(
        name=name,
        seed=check.integer(document.get("seed", 0), "seed", 0),
        threads=check.integer(document.get("threads", 1), "threads", 1),
        timing=check.boolean(document.get("timing", True), "timing"),
        memory=check.boolean(document.get("memory", True), "memory"),
        grids=built["measure"],
        training=built["train"],
        sampling=built["sample"],
        source=text,
        path=path,
        **study,
    )
    every = [grid for grids in built.values() for grid in grids]
    kinds = tuple(kind for kind, given in tables.items() if given)
    result.claims = parse_claims(check, document, {s for g in every for s in g["estimators"]},
                                 {s for g in every for s in g["problems"]}, kinds)
    cells, skipped = result.expand()
    if not cells:
        reasons = "; ".join(sorted({s.reason for s in skipped}))
        raise StudyError(f"{path}: empty study: every cell is skipped ({reasons})")
    return result


def load_study(path: str | Path) -> Study:
    """Read and check a study file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StudyError(f"{path}: no such study file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise StudyError(f"{path}: cannot read the study file: {error}") from None
    return parse_study(text, str(path))


DEFAULT_STUDY = Path(__file__).with_name("default_study.toml")


def default_study() -> Study:
    """The study ``estibench run`` runs with no arguments (shipped inside the package)."""
    return parse_study(DEFAULT_STUDY.read_text(encoding="utf-8"), "default study")
