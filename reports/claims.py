"""Verdicts on published claims (``harness.claims``) from a study's store.

Each claim reads one value per seed for each estimator it names: a measurement or sampling
cell's ``metric``, or a training run's ``metric`` at its last evaluation (``at = "final"``) or
averaged over its evaluations (``at = "mean"``). The verdict is ``holds``, ``does not hold`` or
``not run`` (an estimator it names has no finished cell or run in the store, or the test needs
two seeds and has one), with the numbers that decided it.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
from scipy import stats

from reports.claimfile import Claim
from reports.compare import welch
from reports.units import number

HOLDS, FAILS, NOT_RUN = "holds", "does not hold", "not run"


@dataclasses.dataclass
class Verdict:
    claim: Claim
    verdict: str
    values: dict[str, np.ndarray]  # estimator spec -> one value per seed (empty: not run)
    labels: dict[str, str]  # estimator spec -> its label in the store
    detail: str  # what decided it, in words

    def measured(self) -> str:
        """Each estimator's mean ± standard error over seeds (the s.e. needs two seeds)."""
        parts = []
        for spec in self.claim.named:
            values = self.values.get(spec, np.array([]))
            label = self.labels.get(spec, spec)
            if not len(values):
                parts.append(f"{label}: not run")
            elif len(values) == 1:
                parts.append(f"{label}: {number(values[0])} (1 seed)")
            else:
                mean, se = values.mean(), values.std(ddof=1) / math.sqrt(len(values))
                # enough figures that the mean shows the standard error's first two
                digits = 3 if not (se > 0 and mean != 0) else \
                    min(8, max(3, math.ceil(math.log10(abs(mean) / se)) + 2))
                parts.append(f"{label}: {number(mean, digits)} ± {number(se, 2)} "
                             f"({len(values)} seeds)")
        return "; ".join(parts)


def _values(claim: Claim, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    if frame.empty or claim.metric not in frame:
        return {}
    data = frame[frame.status == "ok"]
    if claim.problem is not None:
        data = data[data.problem == claim.problem]
    if claim.num_samples is not None:
        data = data[data.num_samples == claim.num_samples]
    found = {}
    for spec in claim.named:
        rows = data[data.estimator == spec]
        if claim.kind == "train":
            rows = rows.dropna(subset=["step"]).sort_values("step")
            metric = pd.to_numeric(rows[claim.metric], errors="coerce")
            per_run = metric.groupby(rows.key, sort=False)
            series = per_run.last() if claim.at == "final" else per_run.mean()
        else:
            series = pd.to_numeric(rows[claim.metric], errors="coerce")
        found[spec] = series.dropna().to_numpy(dtype=float)
    return found


def _one_sided_p(better: np.ndarray, worse: np.ndarray, direction: str) -> float:
    """p-value of 'better's mean is better than worse's' under equal means (Welch's t)."""
    difference, se, df = welch(worse, better)  # mean(better) − mean(worse)
    gain = -difference if direction == "lower" else difference  # > 0: better is ahead
    if se == 0:  # no spread at all: the means decide
        return 0.0 if gain > 0 else 1.0
    return float(stats.t.sf(gain / se, df))


def verdict(claim: Claim, frame: pd.DataFrame, labels: dict[str, str] | None = None) -> Verdict:
    """Decide ``claim`` from the store's frame (``reports.read.load`` of its kind)."""
    values = _values(claim, frame)
    labels = labels or {}
    missing = [s for s in claim.named if not len(values.get(s, []))]
    if missing:
        names = ", ".join(labels.get(s, s) for s in missing)
        return Verdict(claim, NOT_RUN, values, labels, f"no finished run of {names}")
    means = {spec: float(v.mean()) for spec, v in values.items()}
    if claim.rule == "better":
        pairs = [(b, w) for b in claim.estimators for w in claim.than]
        if any(len(values[s]) < 2 for pair in pairs for s in pair):
            return Verdict(claim, NOT_RUN, values, labels,
                           "the one-sided test needs at least two seeds per estimator")
        level = claim.alpha / len(pairs)  # Bonferroni: alpha is the claim's false-alarm rate
        failures, worst = [], 0.0
        for better, worse in pairs:
            p = _one_sided_p(values[better], values[worse], claim.direction)
            worst = max(worst, p)
            ahead = means[better] < means[worse] if claim.direction == "lower" \
                else means[better] > means[worse]
            if not ahead or p >= level:
                failures.append(f"{labels.get(better, better)} vs {labels.get(worse, worse)}: "
                                f"{'p = ' + format(p, '.2g') if ahead else 'mean not better'}")
        detail = (f"one-sided Welch tests, α = {claim.alpha:g} over {len(pairs)} pairs "
                  f"(each at {level:.2g}); largest p = {worst:.2g}")
        if failures:
            detail += "; not shown: " + "; ".join(failures)
        return Verdict(claim, FAILS if failures else HOLDS, values, labels, detail)
    if claim.rule == "within":
        bad = [s for s in claim.estimators if abs(means[s] - claim.value) > claim.tolerance]
        detail = f"mean within {claim.value:.6g} ± {claim.tolerance:.6g}"
    elif claim.rule == "at-most":
        bad = [s for s in claim.estimators if not means[s] <= claim.value]
        detail = f"mean ≤ {claim.value:.6g}"
    else:
        bad = [s for s in claim.estimators if not means[s] >= claim.value]
        detail = f"mean ≥ {claim.value:.6g}"
    if bad:
        detail += "; not met by " + ", ".join(labels.get(s, s) for s in bad)
    return Verdict(claim, FAILS if bad else HOLDS, values, labels, detail)


def verdicts(claims: list[Claim], measure: pd.DataFrame, train: pd.DataFrame,
             labels: dict[str, str] | None = None,
             sample: pd.DataFrame | None = None) -> list[Verdict]:
    """The verdict of each claim, read from the store's measurement, training or sampling
    frame."""
    frames = {"measure": measure, "train": train,
              "sample": sample if sample is not None else pd.DataFrame()}
    return [verdict(c, frames[c.kind], labels) for c in claims]


def not_run(claims: list[Claim], why: str) -> list[Verdict]:
    """Verdicts for claims whose study was not run at all (``why``: e.g. the time budget)."""
    return [Verdict(c, NOT_RUN, {}, {}, why) for c in claims]


def markdown(rows: list[tuple[str, Verdict]]) -> str:
    """A markdown table of (paper, verdict) rows: claim, source, published, estibench, verdict,
    scale."""
    def cell(text: str) -> str:
        return " ".join(str(text).split()).replace("|", "\\|")

    lines = ["| paper | claim | source | published | estibench (mean ± s.e. over seeds) | "
             "verdict | scale |", "|---|---|---|---|---|---|---|"]
    for paper, v in rows:
        lines.append("| " + " | ".join(cell(x) for x in (
            paper, v.claim.claim, v.claim.source, v.claim.published, v.measured() or "—",
            f"**{v.verdict}** ({v.detail})", v.claim.scale or "—")) + " |")
    return "\n".join(lines) + "\n"
