"""Figures from stored results (matplotlib + seaborn, one style, stable estimator colours).

Each function returns a matplotlib Figure, or a string saying why it cannot be drawn from
this store (e.g. "no training runs"), which the report shows in its place.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import LogFormatterSciNotation, LogLocator, NullFormatter  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from reports.frames import short_labels, split_spec  # noqa: E402

STYLE = {"axes.spines.top": False, "axes.spines.right": False, "figure.dpi": 100,
         "savefig.dpi": 110, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
         "xtick.labelsize": 8, "ytick.labelsize": 8}
ZERO_VARIANCE = 1e-20  # variances below this (the exact estimator, round-off) are not plotted
RELATIVE_ZERO = 1e-10  # nor those below this fraction of the largest variance on their problem


def _with_variance(agg: pd.DataFrame) -> pd.DataFrame:
    """Rows whose estimator has a variance: not exact enumeration, not round-off."""
    largest = agg.groupby("problem_label").variance.transform("max")
    return agg[(agg.variance > ZERO_VARIANCE) & (agg.variance > RELATIVE_ZERO * largest)]


def palette(labels) -> dict[str, dict]:
    """label -> line style (colour, line style, marker), the same in every figure of a report.

    Colours belong to estimator names (sorted, from one qualitative palette); variants of one
    name (other temperatures or baselines) share its colour and differ in dash and marker.
    """
    labels = sorted(set(labels))
    names = sorted({split_spec(label)[0] for label in labels})
    colours = sns.color_palette("tab10", 10) + sns.color_palette("Dark2", 8)
    if len(names) > len(colours):
        colours = sns.color_palette("husl", len(names))
    colour_of = dict(zip(names, colours))
    dashes, markers = ["-", "--", ":", "-."], ["o", "s", "^", "D", "v", "P"]
    styles, seen = {}, {}
    for label in labels:
        name = split_spec(label)[0]
        index = seen[name] = seen.get(name, -1) + 1
        styles[label] = {"color": colour_of[name], "ls": dashes[index % len(dashes)],
                         "marker": markers[index % len(markers)]}
    return styles


def _grid(count: int, columns: int = 3, size: tuple[float, float] = (3.8, 2.9)):
    columns = max(1, min(columns, count))
    rows = math.ceil(count / columns)
    sns.set_theme(style="whitegrid", rc=STYLE)
    fig, axes = plt.subplots(rows, columns, figsize=(size[0] * columns, size[1] * rows),
                             squeeze=False)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:count])


def _legend(fig, axes) -> None:
    for ax in axes:  # minor log ticks overlap on narrow panels: label 2 and 5 at most
        for axis in (ax.xaxis, ax.yaxis):
            if axis.get_scale() != "log":
                continue
            low, high = sorted(axis.get_view_interval())
            if low > 0 and math.log10(high / low) < 1.2:
                axis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
                axis.set_minor_formatter(LogFormatterSciNotation(labelOnlyBase=False))
            else:
                axis.set_minor_formatter(NullFormatter())
    handles, labels = {}, []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in handles:
                handles[label] = handle
                labels.append(label)
    if labels:
        rows = math.ceil(len(labels) / 4)
        legend_height = (0.22 * rows + 0.2) / fig.get_figheight()  # inches -> figure fraction
        fig.tight_layout(rect=(0, legend_height, 1, 0.97))
        fig.legend([handles[label] for label in labels], labels, loc="lower center",
                   ncol=min(4, len(labels)), frameon=False, bbox_to_anchor=(0.5, 0.0))
    else:
        fig.tight_layout(rect=(0, 0, 1, 0.97))


def variance_vs_samples(agg: pd.DataFrame, colours: dict):
    data = _with_variance(agg)
    problems = [p for p, g in data.groupby("problem_label", sort=False)
                if g.num_samples.nunique() > 1]
    if not problems:
        return "needs at least two num_samples values for some problem"
    fig, axes = _grid(len(problems))
    for ax, problem in zip(axes, problems):
        group = data[data.problem_label == problem]
        for label, line in group.groupby("estimator_label", sort=False):
            if line.num_samples.nunique() < 2:
                continue
            line = line.sort_values("num_samples")
            ax.errorbar(line.num_samples, line.variance, yerr=line.variance_se.fillna(0),
                        ms=3, lw=1.2, capsize=2, label=label, **colours[label])
        sizes = np.array(sorted(group.num_samples.unique()), dtype=float)
        anchor = np.exp(np.log(group[group.num_samples == sizes[0]].variance).mean())
        ax.plot(sizes, anchor * sizes[0] / sizes, ls="--", color="0.5", lw=1, label="1/N slope")
        ax.set(xscale="log", yscale="log", title=problem, xlabel="num_samples N",
               ylabel="variance (trace)")
    fig.suptitle("Variance of one estimate against samples per estimate", fontsize=11)
    _legend(fig, axes)
    return fig


def bias_variance_vs_temperature(agg: pd.DataFrame, colours: dict):
    data = agg.dropna(subset=["temperature"])
    groups = [(key, g) for key, g in data.groupby(["problem_label", "num_samples"], sort=False)
              if g.groupby("estimator_name").temperature.nunique().max() > 1]
    if not groups:
        return "needs a temperature sweep (two or more temperatures of one estimator)"
    sns.set_theme(style="whitegrid", rc=STYLE)
    fig, axes = plt.subplots(len(groups), 2, figsize=(9, 2.9 * len(groups)), squeeze=False)
    names = palette(data.estimator_name)  # one style per estimator name
    for (key, group), (bias_ax, var_ax) in zip(groups, axes):
        problem, n = key
        for name, line in group.groupby("estimator_name", sort=False):
            if line.temperature.nunique() < 2:
                continue
            line = line.sort_values("temperature")
            bias_ax.errorbar(line.temperature, line.bias_norm, yerr=line.bias_norm_se.fillna(0),
                             ms=3, capsize=2, label=name, **names[name])
            var_ax.errorbar(line.temperature, line.variance, yerr=line.variance_se.fillna(0),
                            ms=3, capsize=2, label=name, **names[name])
        bias_ax.set(xscale="log", yscale="log", xlabel="temperature τ", ylabel="‖bias‖",
                    title=f"{problem} (N={n}): bias")
        var_ax.set(xscale="log", yscale="log", xlabel="temperature τ", ylabel="variance",
                   title=f"{problem} (N={n}): variance")
    fig.suptitle("The bias–variance trade-off of the relaxations", fontsize=11)
    _legend(fig, list(axes.flat))
    return fig


def mse_vs_time(agg: pd.DataFrame, colours: dict):
    data = agg.dropna(subset=["time_per_estimate_s"])
    data = _with_variance(data)  # deterministic estimates: not a trade-off
    if data.empty:
        return "needs timed measurements (timing = true) of an estimator with variance"
    problems = list(dict.fromkeys(data.problem_label))
    fig, axes = _grid(len(problems))
    for ax, problem in zip(axes, problems):
        group = data[data.problem_label == problem]
        for label, points in group.groupby("estimator_label", sort=False):
            points = points.sort_values("num_samples")
            ax.plot(points.time_per_estimate_s, points.mse, ms=4, lw=0.8, label=label,
                    **colours[label])
        ax.set(xscale="log", yscale="log", title=problem, xlabel="time per estimate (s)",
               ylabel="MSE")
    fig.suptitle("Error against compute (points along a line: increasing N; "
                 "zero-variance estimators not shown)", fontsize=11)
    _legend(fig, axes)
    return fig


def training_curves(train: pd.DataFrame, colours: dict):
    if train.empty or "step" not in train or train.step.isna().all():
        return "no training runs in this store"
    data = train.dropna(subset=["step"]).copy()
    if "estimator_label" not in data:
        data["problem_label"] = data.problem.map(short_labels(data.problem))
        data["estimator_label"] = data.estimator.map(short_labels(data.estimator))
    problems = list(dict.fromkeys(data.problem_label))
    sns.set_theme(style="whitegrid", rc=STYLE)
    fig, axes = plt.subplots(len(problems), 2, figsize=(9, 3.0 * len(problems)), squeeze=False)
    for problem, (step_ax, time_ax) in zip(problems, axes):
        group = data[data.problem_label == problem]
        for label, runs in group.groupby("estimator_label", sort=False):
            stats = runs.groupby("step").agg(mean=("objective", "mean"),
                                             low=("objective", "min"),
                                             high=("objective", "max"),
                                             time=("wall_time_s", "mean"),
                                             seeds=("objective", "size")).reset_index()
            style = {**colours[label], "marker": None}
            for ax, x in ((step_ax, stats.step), (time_ax, stats.time)):
                ax.plot(x, stats["mean"], lw=1.3,
                        label=f"{label} ({int(stats.seeds.max())} seeds)", **style)
                ax.fill_between(x, stats.low, stats.high, color=style["color"], alpha=0.2, lw=0)
        step_ax.set(title=f"{problem}: objective by step", xlabel="step",
                    ylabel="E[f] (mean; band: min–max over seeds)")
        time_ax.set(title=f"{problem}: objective by wall time", xlabel="optimisation time (s)",
                    ylabel="E[f]")
    fig.suptitle("Training curves", fontsize=11)
    _legend(fig, list(axes.flat))
    return fig


def time_memory_vs_size(agg: pd.DataFrame, colours: dict):
    data = agg.dropna(subset=["time_per_estimate_s"])
    names = [n for n, g in data.groupby("problem_name", sort=False) if g.dimension.nunique() > 1]
    if not names:
        return "needs one problem measured at two or more sizes"
    sns.set_theme(style="whitegrid", rc=STYLE)
    fig, axes = plt.subplots(len(names), 2, figsize=(9, 2.9 * len(names)), squeeze=False)
    for name, (time_ax, memory_ax) in zip(names, axes):
        group = data[data.problem_name == name]
        for (label, n), line in group.groupby(["estimator_label", "num_samples"], sort=False):
            if line.dimension.nunique() < 2:
                continue
            line = line.groupby("dimension")[["time_per_estimate_s", "peak_memory_bytes"]] \
                .median().reset_index()
            time_ax.plot(line.dimension, line.time_per_estimate_s, ms=3,
                         label=f"{label}, N={n}", **colours[label])
            memory_ax.plot(line.dimension, line.peak_memory_bytes, ms=3,
                           label=f"{label}, N={n}", **colours[label])
        time_ax.set(xscale="log", yscale="log", title=f"{name}: time", xlabel="parameters",
                    ylabel="time per estimate (s)")
        memory_ax.set(xscale="log", yscale="log", title=f"{name}: peak memory",
                      xlabel="parameters", ylabel="bytes")
    fig.suptitle("Time and peak memory against problem size", fontsize=11)
    _legend(fig, list(axes.flat))
    return fig


FIGURES = {
    "variance_vs_samples": variance_vs_samples,
    "bias_variance_vs_temperature": bias_variance_vs_temperature,
    "mse_vs_time": mse_vs_time,
    "training_curves": training_curves,
    "time_memory_vs_size": time_memory_vs_size,
}
TITLES = {
    "variance_vs_samples": "Variance against samples per estimate",
    "bias_variance_vs_temperature": "Bias and variance against temperature",
    "mse_vs_time": "MSE against time per estimate",
    "training_curves": "Training curves",
    "time_memory_vs_size": "Time and peak memory against problem size",
}
