"""Preparing stored measurements for tables and figures: options, aggregation.

Labels are the store's (``reports.read.load_labels``): each spec without the options at their
defaults, the same text in the console, HTML, Markdown and LaTeX, in every study.
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


ZERO_VARIANCE = 1e-20  # below this a variance is zero (exact enumeration, round-off)
BIAS_ALPHA = 1e-4  # a cell's bias counts as detected when its p-value is below this


def labelled(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with ``problem_label`` and ``estimator_label`` columns: ``load``'s, or, for a
    frame made without them, the specs themselves (a copy only then)."""
    missing = [c for c in ("problem", "estimator") if c + "_label" not in frame]
    return frame.assign(**{c + "_label": frame[c] for c in missing}) if missing else frame


SIZE_OPTIONS = ("dim", "n", "k", "latent", "classes", "topics")  # options that set a size


def without_size(spec: str) -> str:
    """The spec without its size options (``SIZE_OPTIONS``): specs that agree on the rest are
    one problem at several sizes; ``knn-subset:family=permutation,n=6`` and
    ``knn-subset:family=subset,n=16`` are two problems."""
    name, options = split_spec(spec)
    kept = [f"{k}={v}" for k, v in options.items() if k not in SIZE_OPTIONS]
    return name + (":" + ",".join(kept) if kept else "")


def option(spec: str, key: str) -> float | None:
    value = split_spec(spec)[1].get(key)
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


def prepare(frame: pd.DataFrame) -> pd.DataFrame:
    """Successful measurements with a few derived columns.

    ``frame``: ``harness.store.load(DIR)``; its ``problem_label`` and ``estimator_label`` (the
    specs without their default options) name things everywhere; a frame without them is
    labelled by its specs.
    """
    ok = labelled(frame[frame.status == "ok"].copy())
    if ok.empty:
        return ok
    ok["estimator_name"] = ok.estimator.map(lambda s: split_spec(s)[0])
    ok["problem_name"] = ok.problem.map(lambda s: split_spec(s)[0])
    ok["problem_line"] = ok.problem.map(without_size)
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
               "problem_line": group.problem_line.iloc[0],
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


LOWER_IS_BETTER = ("elbo", "mse", "perplexity", "error", "loss", "objective")
HIGHER_IS_BETTER = ("accuracy", "correct", "recall", "trustworthiness", "r2")


def direction(metric: str) -> str | None:
    """'lower' or 'higher' (is better) from a metric's name, None when it does not say."""
    if any(token in metric for token in HIGHER_IS_BETTER):
        return "higher"
    if any(token in metric for token in LOWER_IS_BETTER):
        return "lower"
    return None


def metric_label(source: str | None) -> str:
    """The training objective's axis label from its ``objective_source``: the task's metric
    (e.g. 'test error of 3-nearest-neighbour classification'), or E[f] on an exact problem;
    the objective is always minimised."""
    text = str(source or "").split(", ")[0].strip()
    if not text or text == "exact" or text.startswith("reference"):
        text = "E[f]"
    return f"{text} (lower is better)"
