"""BASE vs NEW: two stores of one study, cell by cell, with statistical verdicts.

``compare(base, new)`` matches cells by key (the same problem, estimator, num_samples, seed and
settings; the study's seed may differ, so the two runs are independent draws) and tests, per
matched measurement cell:

- **variance**: the ratio V_new / V_base of the traces of the estimates' covariance. Each store
  keeps the R squared deviations q_r = ‖ĝ_r − ḡ‖² of a cell (``samples`` table), whose sum over
  R − 1 is the variance. log V has the delta-method standard error sd(q) / (mean(q) √R), which
  uses the sample's own fourth moment (the q_r's spread), so it stays valid for the heavy
  tails of score-function estimators as long as their fourth moment is finite; the chi-square
  interval that assumes Gaussian estimates is too narrow there. H0 "V_new ≤ factor · V_base" is
  rejected when the one-sided normal p-value of (log ratio − log factor) / se is below the
  corrected α.
- **bias**: NEW's bias test (``bias_pvalue``) against the corrected α, and whether it changed
  from BASE's: a bias detected in NEW but not in BASE is a regression.
- **time**: the ratio of the geometric means of the timed repeats (one-estimate wall times),
  with Welch's t interval on the log times; H0 "ratio ≤ time factor" is rejected as above.
  Timings of one cell are repeats under one machine load, so their interval is narrower than
  run-to-run noise: treat a time verdict on a shared machine as a warning (``--time-factor``
  large, or ``--no-time``).
- **memory**: the ratio of peak memories, reported.

Per training run (problem, estimator, num_samples; seeds pooled): the difference of the mean
final objectives with Welch's t interval, reported.

**Multiple comparisons.** A verdict uses α / m (Bonferroni), m = the number of tests made
(variance, bias, time for every matched measurement cell), so a comparison of two clean runs
flags any cell with probability at most α, whatever the dependence between cells.

Example:
    >>> from reports.compare import compare                                 # doctest: +SKIP
    >>> result = compare("results/base", "results/new")                    # doctest: +SKIP
    >>> result.worse                                                        # doctest: +SKIP
    []
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
from scipy import stats

from reports.read import load, load_samples, study_info
from reports.units import as_number, number

VARIANCE_FACTOR = 1.2
TIME_FACTOR = 1.5
ALPHA = 1e-3


@dataclasses.dataclass
class CellComparison:
    key: str
    problem: str
    estimator: str
    num_samples: int
    seed: int
    variance_ratio: float | None = None
    variance_interval: tuple[float, float] | None = None  # 95 %
    variance_pvalue: float | None = None  # of "ratio ≤ factor"
    base_bias_pvalue: float | None = None
    new_bias_pvalue: float | None = None
    time_ratio: float | None = None
    time_interval: tuple[float, float] | None = None  # 95 %
    time_pvalue: float | None = None  # of "ratio ≤ factor"
    memory_ratio: float | None = None
    reasons: list[str] = dataclasses.field(default_factory=list)  # why it is worse

    @property
    def worse(self) -> bool:
        return bool(self.reasons)


@dataclasses.dataclass
class TrainingComparison:
    problem: str
    estimator: str
    num_samples: int
    base_seeds: int
    new_seeds: int
    difference: float  # mean final objective, NEW − BASE (lower is better)
    interval: tuple[float, float] | None  # 95 %, Welch


@dataclasses.dataclass
class Comparison:
    base: str
    new: str
    study: str
    alpha: float
    variance_factor: float
    time_factor: float
    tests: int  # m, the Bonferroni divisor
    cells: list[CellComparison]
    training: list[TrainingComparison]
    only_base: list[str]  # keys (labels) of cells in one store only
    only_new: list[str]
    failed: list[str]  # matched cells failed in either store

    @property
    def worse(self) -> list[CellComparison]:
        return [cell for cell in self.cells if cell.worse]

    @property
    def exit_code(self) -> int:
        return 1 if self.worse else 0

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self) | {"worse": [c.key for c in self.worse]},
                          indent=1, default=_plain)


def _plain(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(type(value))


def log_variance_ratio(base: np.ndarray, new: np.ndarray) -> tuple[float, float]:
    """(log(V_new / V_base), its delta-method standard error) from the squared deviations."""
    terms = []
    for q in (base, new):
        mean = q.mean()
        terms.append(q.var(ddof=1) / (len(q) * mean * mean))
    log_ratio = (math.log(new.sum() / (len(new) - 1)) - math.log(base.sum() / (len(base) - 1)))
    return log_ratio, math.sqrt(terms[0] + terms[1])


def welch(base: np.ndarray, new: np.ndarray) -> tuple[float, float, float]:
    """(mean(new) − mean(base), its standard error, Welch's degrees of freedom)."""
    va, vb = base.var(ddof=1) / len(base), new.var(ddof=1) / len(new)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(base) - 1) + vb ** 2 / (len(new) - 1)) if se > 0 \
        else math.inf
    return float(new.mean() - base.mean()), se, df


def compare(base: str | Path, new: str | Path, *, variance_factor: float = VARIANCE_FACTOR,
            time_factor: float = TIME_FACTOR, alpha: float = ALPHA,
            timing: bool = True) -> Comparison:
    """Compare the stores at ``base`` and ``new`` (see the module's docstring)."""
    if not (0 < alpha < 1):
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    for name, factor in (("variance factor", variance_factor), ("time factor", time_factor)):
        if not (factor >= 1 and math.isfinite(factor)):
            raise ValueError(f"the {name} must be a number >= 1, got {factor}")
    base_info, new_info = study_info(base), study_info(new)
    if base_info["name"] != new_info["name"]:
        raise ValueError(f"{base} holds study {base_info['name']!r} and {new} holds "
                         f"{new_info['name']!r}: compare two runs of the same study")
    result = compare_frames(load(base), load(new), load_samples(base), load_samples(new),
                            variance_factor=variance_factor, time_factor=time_factor,
                            alpha=alpha, timing=timing)
    return dataclasses.replace(result, base=str(base), new=str(new), study=new_info["name"],
                               training=_training(load(base, "train"), load(new, "train")))


def compare_frames(b, n, b_samples: dict, n_samples: dict, *,
                   variance_factor: float = VARIANCE_FACTOR, time_factor: float = TIME_FACTOR,
                   alpha: float = ALPHA, timing: bool = True) -> Comparison:
    """The comparison of two loaded stores: ``load`` frames and ``load_samples`` dicts (the
    stores' names and training runs are ``compare``'s to fill in)."""
    b_measure, n_measure = b.set_index("key"), n.set_index("key")
    base_keys, new_keys = set(b_measure.index), set(n_measure.index)
    shared = [k for k in n_measure.index if k in base_keys]
    only_base = sorted(_describe(b_measure, k) for k in base_keys - new_keys)
    only_new = sorted(_describe(n_measure, k) for k in new_keys - base_keys)
    failed = [_describe(n_measure, k) for k in shared
              if b_measure.loc[k, "status"] != "ok" or n_measure.loc[k, "status"] != "ok"]
    ok = [k for k in shared
          if b_measure.loc[k, "status"] == "ok" and n_measure.loc[k, "status"] == "ok"]
    tests = max(1, sum((1 + (k in b_samples and k in n_samples) * (1 + timing)) for k in ok))
    level = alpha / tests
    cells = []
    for key in ok:
        old, cur = b_measure.loc[key], n_measure.loc[key]
        cell = CellComparison(key, cur.problem_label, cur.estimator_label, int(cur.num_samples),
                              int(cur.seed))
        cell.base_bias_pvalue = as_number(old.bias_pvalue)
        cell.new_bias_pvalue = as_number(cur.bias_pvalue)
        if cell.new_bias_pvalue is not None and cell.new_bias_pvalue < level and not (
                cell.base_bias_pvalue is not None and cell.base_bias_pvalue < level):
            cell.reasons.append(f"bias detected in NEW (p = {number(cell.new_bias_pvalue)}), "
                                 f"not in BASE (p = {number(cell.base_bias_pvalue)})")
        if key in b_samples and key in n_samples:
            _variance(cell, b_samples[key]["squared_deviations"],
                      n_samples[key]["squared_deviations"], variance_factor, level)
            _time(cell, b_samples[key]["times"], n_samples[key]["times"], time_factor,
                  level if timing else 0.0)  # without timing: reported, never a verdict
        memory = [as_number(row.get("peak_memory_bytes")) for row in (old, cur)]
        if memory[0] and memory[1] is not None:
            cell.memory_ratio = memory[1] / memory[0]
        cells.append(cell)
    return Comparison("", "", "", alpha, variance_factor, time_factor, tests, cells, [],
                      only_base, only_new, failed)


def _describe(frame, key) -> str:
    row = frame.loc[key]
    return (f"{row.problem_label} × {row.estimator_label}, N={row.num_samples}, "
            f"seed={row.seed} ({row.kind})")


def _variance(cell: CellComparison, base: np.ndarray, new: np.ndarray, factor: float,
              level: float) -> None:
    if len(base) < 2 or len(new) < 2:
        return
    zero_base, zero_new = not base.any(), not new.any()
    if zero_base or zero_new:  # an exact or deterministic estimate
        if zero_base and not zero_new:
            cell.variance_ratio = math.inf
            cell.reasons.append("variance: zero in BASE, positive in NEW")
        elif zero_base and zero_new:
            cell.variance_ratio = 1.0
        else:
            cell.variance_ratio = 0.0
        return
    log_ratio, se = log_variance_ratio(base, new)
    cell.variance_ratio = math.exp(log_ratio)
    cell.variance_interval = (math.exp(log_ratio - 1.96 * se), math.exp(log_ratio + 1.96 * se))
    cell.variance_pvalue = float(stats.norm.sf((log_ratio - math.log(factor)) / se)) \
        if se > 0 else float(log_ratio > math.log(factor))
    if cell.variance_pvalue < level:
        cell.reasons.append(f"variance ×{number(cell.variance_ratio)} (95% interval "
                             f"{number(cell.variance_interval[0])}–"
                             f"{number(cell.variance_interval[1])}; > {factor:g} at p = "
                             f"{number(cell.variance_pvalue)})")


def _time(cell: CellComparison, base: np.ndarray, new: np.ndarray, factor: float,
          level: float) -> None:
    base, new = base[base > 0], new[new > 0]
    if len(base) < 2 or len(new) < 2:
        return
    difference, se, df = welch(np.log(base), np.log(new))
    cell.time_ratio = math.exp(difference)
    if se == 0:
        cell.time_pvalue = float(difference > math.log(factor))
        cell.time_interval = (cell.time_ratio, cell.time_ratio)
    else:
        t = stats.t.ppf(0.975, df)
        cell.time_interval = (math.exp(difference - t * se), math.exp(difference + t * se))
        cell.time_pvalue = float(stats.t.sf((difference - math.log(factor)) / se, df))
    if cell.time_pvalue < level:
        cell.reasons.append(f"time ×{number(cell.time_ratio)} (95% interval "
                             f"{number(cell.time_interval[0])}–{number(cell.time_interval[1])};"
                             f" > {factor:g} at p = {number(cell.time_pvalue)})")


def _training(base, new) -> list[TrainingComparison]:
    if base.empty or new.empty or "final_objective" not in base or "final_objective" not in new:
        return []
    result = []
    keys = ["problem_label", "estimator_label", "num_samples"]
    finals = [f[f.status == "ok"].drop_duplicates("key") for f in (base, new)]
    new_groups = dict(list(finals[1].groupby(keys, sort=False)))
    for group_key, old in finals[0].groupby(keys, sort=False):
        if group_key not in new_groups:
            continue
        a = old.final_objective.astype(float).to_numpy()
        b = new_groups[group_key].final_objective.astype(float).to_numpy()
        interval = None
        if len(a) > 1 and len(b) > 1:
            difference, se, df = welch(a, b)
            if se > 0:
                t = stats.t.ppf(0.975, df)
                interval = (difference - t * se, difference + t * se)
        result.append(TrainingComparison(group_key[0], group_key[1], int(group_key[2]), len(a),
                                         len(b), float(b.mean() - a.mean()), interval))
    return result


# -- rendering ----------------------------------------------------------------------------------

HEADER = ["problem", "estimator", "N", "variance ×", "95% interval", "bias p (base → new)",
          "time ×", "95% interval", "memory ×", "verdict"]


def rows(result: Comparison) -> list[list[str]]:
    """One row of text per matched measurement cell, the worse first."""
    def interval(pair):
        return "" if pair is None else f"{number(pair[0])}–{number(pair[1])}"

    out = []
    for cell in sorted(result.cells, key=lambda c: (not c.worse, c.problem, c.estimator,
                                                    c.num_samples)):
        out.append([cell.problem, cell.estimator, str(cell.num_samples),
                    number(cell.variance_ratio), interval(cell.variance_interval),
                    f"{number(cell.base_bias_pvalue)} → {number(cell.new_bias_pvalue)}",
                    number(cell.time_ratio), interval(cell.time_interval),
                    number(cell.memory_ratio),
                    "WORSE: " + "; ".join(cell.reasons) if cell.worse else "ok"])
    return out


def summary_line(result: Comparison) -> str:
    worse = len(result.worse)
    return (f"{result.study}: {len(result.cells)} matched measurement cells, {worse} worse "
            f"(α = {result.alpha:g} over {result.tests} tests, Bonferroni: each at "
            f"{result.alpha / result.tests:.2g}; variance factor {result.variance_factor:g}, "
            f"time factor {result.time_factor:g}); {len(result.only_base)} only in BASE, "
            f"{len(result.only_new)} only in NEW, {len(result.failed)} failed in either")


def markdown(result: Comparison) -> str:
    lines = [f"# {result.study}: BASE vs NEW", "", f"BASE: `{result.base}`  ", f"NEW: "
             f"`{result.new}`", "", summary_line(result) + ".", "",
             "| " + " | ".join(HEADER) + " |",
             "|" + "|".join(["---", "---", "---:"] + ["---:"] * 6 + ["---"]) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"
              for row in rows(result)]
    if result.training:
        lines += ["", "## Training runs: final objective, NEW − BASE (lower is better)", "",
                  "| problem | estimator | N | seeds (base, new) | difference | 95% interval |",
                  "|---|---|---:|---:|---:|---:|"]
        for t in result.training:
            interval = "" if t.interval is None else \
                f"{number(t.interval[0])} to {number(t.interval[1])}"
            lines.append(f"| {t.problem} | {t.estimator} | {t.num_samples} | "
                         f"{t.base_seeds}, {t.new_seeds} | {number(t.difference)} | {interval} |")
    for title, items in (("Only in BASE", result.only_base), ("Only in NEW", result.only_new),
                         ("Failed in either store", result.failed)):
        if items:
            lines += ["", f"## {title}", ""] + [f"- {item}" for item in items]
    return "\n".join(lines) + "\n"
