"""Preparing stored measurements for tables and figures: labels, options, aggregation.

Labels come from the specs alone (no registry): an option is shown only where it varies among
the specs of the same name in this study, so ``gumbel-softmax:temperature=0.5`` reads
``gumbel-softmax`` unless the study also has other temperatures.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def split_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``name:key=value,...`` -> (name, {key: value-text})."""
    name, _, rest = str(spec).partition(":")
    options = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        options[key.strip()] = value.strip()
    return name.strip(), options


def short_labels(specs) -> dict[str, str]:
    """spec -> label showing only the options that vary among specs of the same name."""
    parsed = {spec: split_spec(spec) for spec in dict.fromkeys(specs)}
    varying: dict[str, set[str]] = {}
    for name, options in parsed.values():
        seen = [o for n, o in parsed.values() if n == name]
        varying[name] = {k for k in options if len({o.get(k) for o in seen}) > 1}
    labels = {}
    for spec, (name, options) in parsed.items():
        shown = [f"{k}={v}" for k, v in options.items() if k in varying[name]]
        labels[spec] = name + (":" + ",".join(shown) if shown else "")
    return labels


def option(spec: str, key: str) -> float | None:
    value = split_spec(spec)[1].get(key)
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


def prepare(frame: pd.DataFrame, labels: dict[str, str] | None = None) -> pd.DataFrame:
    """Successful measurements with label columns and a few derived ones.

    ``labels``: spec -> label for problems and estimators (default: ``short_labels`` of this
    frame's specs); pass one map for measurements and training runs so that they agree.
    """
    ok = frame[frame.status == "ok"].copy()
    if ok.empty:
        return ok
    labels = labels or {**short_labels(ok.problem), **short_labels(ok.estimator)}
    ok["problem_label"] = ok.problem.map(labels)
    ok["estimator_label"] = ok.estimator.map(labels)
    ok["estimator_name"] = ok.estimator.map(lambda s: split_spec(s)[0])
    ok["problem_name"] = ok.problem.map(lambda s: split_spec(s)[0])
    ok["temperature"] = ok.estimator.map(lambda s: option(s, "temperature"))
    ok["dimension"] = ok.true_gradient.map(len)
    ok["bias_noise"] = ok.bias_stderr.map(
        lambda se: math.sqrt(sum(v * v for v in se)) if isinstance(se, list) else np.nan)
    return ok


def aggregate(ok: pd.DataFrame) -> pd.DataFrame:
    """One row per (problem, estimator, num_samples): means over seeds and their spread.

    ``bias_norm``, ``variance``, ``mse``, ``cosine``: mean over seeds; ``*_se``: the standard
    error of that mean across seeds when there are several, else the single cell's own
    (bias: the norm of the per-coordinate standard errors; variance: var·√(2/(R−1)), its
    standard error under normality). Time and memory: medians over seeds.
    """
    rows = []
    keys = ["problem_label", "estimator_label", "num_samples"]
    for (problem, estimator, n), group in ok.groupby(keys, sort=False):
        seeds = len(group)
        row = {"problem_label": problem, "estimator_label": estimator, "num_samples": n,
               "seeds": seeds, "estimator": group.estimator.iloc[0],
               "estimator_name": group.estimator_name.iloc[0],
               "problem_name": group.problem_name.iloc[0],
               "temperature": group.temperature.iloc[0], "dimension": group.dimension.iloc[0],
               "bias_pvalue": group.bias_pvalue.min()}
        for metric in ("bias_norm", "variance", "mse", "cosine"):
            values = pd.to_numeric(group[metric], errors="coerce")
            row[metric] = values.mean()
            row[metric + "_se"] = values.std(ddof=1) / math.sqrt(seeds) if seeds > 1 else np.nan
        if seeds == 1:
            row["bias_norm_se"] = group.bias_noise.iloc[0]
            replicates = float(group.replicates.iloc[0])
            row["variance_se"] = row["variance"] * math.sqrt(2 / (replicates - 1))
        for metric in ("time_per_estimate_s", "peak_memory_bytes"):
            values = pd.to_numeric(group.get(metric), errors="coerce") if metric in group else None
            row[metric] = values.median() if values is not None else np.nan
        rows.append(row)
    return pd.DataFrame(rows)
