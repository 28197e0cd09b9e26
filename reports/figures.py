"""Figures from stored results (matplotlib + seaborn): one style, one colour per estimator name.

Each figure is one public call on the DataFrame that ``harness.store.load`` returns (the
training figure on ``load(DIR, "train")``); aggregation and styling happen inside and the
matplotlib Figure comes back, to restyle, combine or save. A figure that cannot be drawn from
the data raises ``NotDrawable`` saying why (the report shows that sentence in its place).

Example:
    >>> from harness.store import load                                      # doctest: +SKIP
    >>> from reports.figures import variance_vs_samples                     # doctest: +SKIP
    >>> figure = variance_vs_samples(load("results/quick"))                # doctest: +SKIP
    >>> figure.axes[0].set_title("Bernoulli toy"); figure.savefig("variance.pdf")  # doctest: +SKIP

**Colours** belong to estimator names alone (``estimator_style``), the same in every figure,
report and study: a fixed table for the registered estimators, colours from the Okabe & Ito
(2008) and Tol (2021) palettes, which stay apart under the common colour-vision deficiencies,
each with its own marker so that no two estimators that share a family rely on colour alone (a
relaxation is orange, its straight-through twin vermilion; no colour and marker pair is used
twice, so a legend that spans families stays unambiguous). An estimator outside the table
gets a colour and marker from a hash of its name. Variants of one name (other options) share
its colour and marker and differ in dash. Guides (the 1/N slope) are black and dotted, a style
no estimator uses.

**Axes**: log axes are labelled at decades when two or more are in view, otherwise at 1-2-5
(then 1..9) multiples; tick labels that would overlap are thinned, never fewer than two.
"""

from __future__ import annotations

import math
import textwrap
import zlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import (  # noqa: E402
    FixedLocator,
    FuncFormatter,
    MaxNLocator,
    NullFormatter,
)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from reports.frames import (  # noqa: E402
    ZERO_VARIANCE,
    aggregate,
    labelled,
    metric_label,
    prepare,
    split_spec,
)

STYLE = {"axes.spines.top": False, "axes.spines.right": False, "figure.dpi": 100,
         "savefig.dpi": 110, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
         "xtick.labelsize": 8, "ytick.labelsize": 8}
RELATIVE_ZERO = 1e-10  # nor those below this fraction of the largest variance on their problem


class NotDrawable(ValueError):
    """The data cannot make this figure; the message says what it needs."""


# -- colours and line styles -------------------------------------------------------------------

COLOURS = {  # Okabe & Ito 2008; Tol 2021 ("muted")
    "blue": "#0072B2", "orange": "#E69F00", "green": "#009E73", "vermilion": "#D55E00",
    "pink": "#CC79A7", "sky": "#56B4E9", "indigo": "#332288", "olive": "#999933",
    "wine": "#882255", "teal": "#44AA99", "sand": "#DDCC77", "purple": "#AA4499",
    "grass": "#117733", "grey": "#6E6E6E",
}
ESTIMATOR_STYLES = {  # name -> (colour, marker): distinct colours and markers within every
    # family, and no (colour, marker) pair used twice, so a legend that spans families is read
    # without ambiguity. A relaxation is orange, its straight-through twin vermilion.
    "reinforce": ("blue", "o"), "exact": ("grey", "x"),
    # Bernoulli and categorical
    "gumbel-softmax": ("orange", "s"), "st-gumbel-softmax": ("vermilion", "^"),
    "straight-through": ("green", "D"), "arm": ("pink", "v"), "disarm": ("indigo", "P"),
    "gumbel-rao": ("sky", "X"), "reinmax": ("wine", "<"), "gst": ("olive", ">"),
    "rebar": ("teal", "h"), "relax": ("grass", "p"), "mvd": ("purple", "*"),
    "unordered-set": ("sand", "d"),
    # subsets, exact-k subsets, counts
    "relaxed-topk": ("orange", "D"), "st-relaxed-topk": ("vermilion", "v"),
    "simple": ("green", "s"), "imle": ("pink", "^"),
    "gengs": ("orange", "h"), "st-gengs": ("vermilion", "p"),
    # permutations
    "neuralsort": ("orange", "<"), "st-neuralsort": ("vermilion", ">"),
    "softsort": ("green", "^"), "gumbel-sinkhorn": ("pink", "s"), "sinkhorn": ("indigo", "D"),
    "st-gumbel-sinkhorn": ("sky", "v"), "diffsort": ("wine", "p"),
}
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "p", "*", "d")
DASHES = ("-", "--", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (8, 2)))
GUIDE = {"color": "black", "ls": ":", "lw": 1.0, "marker": None}  # no estimator is black


def estimator_style(name: str) -> dict:
    """Colour (hex) and marker of an estimator name: the table's, else from a hash of it."""
    if name in ESTIMATOR_STYLES:
        colour, marker = ESTIMATOR_STYLES[name]
        return {"color": COLOURS[colour], "marker": marker}
    code = zlib.crc32(name.encode())
    palette = [c for key, c in COLOURS.items() if key != "grey"]
    return {"color": palette[code % len(palette)],
            "marker": MARKERS[(code // len(palette)) % len(MARKERS)]}


def palette(labels) -> dict[str, dict]:
    """label -> line style: the name's colour and marker; variants of one name (sorted by
    label) differ in dash."""
    styles, seen = {}, {}
    for label in sorted(set(labels)):
        name = split_spec(label)[0]
        index = seen[name] = seen.get(name, -1) + 1
        styles[label] = {**estimator_style(name), "ls": DASHES[index % len(DASHES)]}
    return styles


def _styles_for(frame: pd.DataFrame, colours: dict | None) -> dict:
    return colours if colours is not None else palette(frame.estimator_label)


# -- axes: ticks that can be read --------------------------------------------------------------

def _tick_text(value: float) -> str:
    if value == 0:
        return "0"
    exponent = math.floor(math.log10(abs(value)) + 1e-9)
    if -3 <= exponent <= 3:
        return f"{value:.4g}"
    mantissa = value / 10.0 ** exponent
    if abs(mantissa - round(mantissa)) < 1e-6 and round(mantissa) == 1:
        return f"$10^{{{exponent}}}$"
    return f"${mantissa:.3g}\\times10^{{{exponent}}}$"


def _log_ticks(low: float, high: float) -> list[float]:
    """Major ticks for a log axis viewing [low, high]: decades when two are in view, else the
    1-2-5 multiples, else 1..9 multiples, else evenly spaced round values."""
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    for mantissas in ((1,), (1, 2, 5), tuple(range(1, 10))):
        ticks = [m * 10.0 ** e for e in range(first, last + 1) for m in mantissas]
        ticks = [t for t in ticks if low * (1 - 1e-9) <= t <= high * (1 + 1e-9)]
        if len(ticks) >= 2:
            step = max(1, math.ceil(len(ticks) / 6))  # at most about six labels
            return ticks[::step]
    ticks = [t for t in MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]).tick_values(low, high)
             if low <= t <= high]  # a range inside one 1..9 step: plain linear steps
    return ticks if len(ticks) >= 2 else [low, high]


def _set_log_ticks(axis) -> None:
    low, high = sorted(axis.get_view_interval())
    if not (low > 0 and math.isfinite(high)):
        return
    limits = axis.axes.get_xlim() if axis is axis.axes.xaxis else axis.axes.get_ylim()
    axis.set_major_locator(FixedLocator(_log_ticks(low, high)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: _tick_text(v)))
    axis.set_minor_formatter(NullFormatter())
    (axis.axes.set_xlim if axis is axis.axes.xaxis else axis.axes.set_ylim)(limits)


def labelled_ticks(axis) -> list:
    """The tick labels of ``axis`` that are shown: inside the view, with text."""
    low, high = sorted(axis.get_view_interval())
    span = high - low
    return [t for t in axis.get_ticklabels()
            if t.get_visible() and t.get_text()
            and low - 1e-9 * abs(span) <= (t.get_position()[0] if axis is axis.axes.xaxis
                                           else t.get_position()[1]) <= high + 1e-9 * abs(span)]


def overlapping(labels, renderer) -> bool:
    boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: (b.x0, b.y0))
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def _thin(fig) -> None:
    """Drop every other tick of an axis whose labels overlap, keeping at least two."""
    renderer = fig.canvas.get_renderer()
    axes = [ax for ax in fig.axes if ax.get_visible()]
    for _ in range(6):
        fig.canvas.draw()
        crowded = [(ax, axis) for ax in axes for axis in (ax.xaxis, ax.yaxis)
                   if len(shown := labelled_ticks(axis)) > 2 and overlapping(shown, renderer)]
        if not crowded:
            return
        for ax, axis in crowded:
            low, high = sorted(axis.get_view_interval())
            ticks = [t for t in axis.get_majorticklocs() if low <= t <= high]
            limits = ax.get_xlim() if axis is ax.xaxis else ax.get_ylim()
            axis.set_major_locator(FixedLocator(ticks[::2] if len(ticks) > 3
                                                else [ticks[0], ticks[-1]]))
            (ax.set_xlim if axis is ax.xaxis else ax.set_ylim)(limits)


# -- layout ------------------------------------------------------------------------------------

def _grid(count: int, columns: int = 3, size: tuple[float, float] = (3.8, 2.9)):
    columns = max(1, min(columns, count))
    rows = math.ceil(count / columns)
    sns.set_theme(style="whitegrid", rc=STYLE)
    fig, axes = plt.subplots(rows, columns, figsize=(size[0] * columns, size[1] * rows),
                             squeeze=False)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:count])


def _ordered_legend(axes) -> tuple[list, list[str]]:
    """The figure's entries, one per label, grouped by estimator name (variants together),
    guides last."""
    handles = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    guides = [label for label in handles if label.startswith("guide:")]
    labels = sorted((label for label in handles if label not in guides),
                    key=lambda label: (split_spec(label)[0], label))
    labels += guides
    return [handles[label] for label in labels], labels


def _finish(fig, axes, title: str) -> None:
    """Title above and one grouped legend below the panels (the figure grows to hold them, the
    panels keep their size), readable ticks."""
    for ax in axes:
        for axis in (ax.xaxis, ax.yaxis):
            if axis.get_scale() == "log" and not isinstance(axis.get_major_locator(),
                                                            FixedLocator):
                _set_log_ticks(axis)
    handles, labels = _ordered_legend(axes)
    title_inches, legend_inches, columns = 0.32, 0.0, 1
    if labels:
        longest = max(len(label) for label in labels)
        column = 0.07 * longest + 0.6  # inches per legend column at 8 pt
        columns = max(1, min(len(labels), int(fig.get_figwidth() // column)))
        legend_inches = 0.2 * math.ceil(len(labels) / columns) + 0.3
    fig.set_figheight(fig.get_figheight() + title_inches + legend_inches)
    height = fig.get_figheight()
    fig.suptitle(title, fontsize=11, y=1 - 0.1 / height, va="top")
    fig.tight_layout(rect=(0, legend_inches / height, 1, 1 - title_inches / height))
    if _fit_ylabels(fig):
        fig.tight_layout(rect=(0, legend_inches / height, 1, 1 - title_inches / height))
    if labels:
        fig.legend(handles, labels, loc="lower center", ncol=columns, frameon=False,
                   bbox_to_anchor=(0.5, 0.05 / height))
    _thin(fig)


def _fit_ylabels(fig) -> bool:
    """Re-wrap y labels taller than their axes into more, shorter lines (then a smaller font)
    so that none overflows above its panel; True if any changed."""
    changed = False
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        if not ax.get_visible() or not ax.get_ylabel():
            continue
        text = " ".join(ax.get_ylabel().split())
        width, size = max(len(w) for w in text.split()) + 20, ax.yaxis.label.get_fontsize()
        for _ in range(20):
            if (ax.yaxis.label.get_window_extent(renderer).height
                    <= ax.get_window_extent(renderer).height):
                break
            changed = True
            lines = textwrap.wrap(text, width, break_on_hyphens=False)
            if len(lines) < 4 and width > 12:
                width -= 4
            else:
                size -= 0.5
            lines = textwrap.wrap(text, width, break_on_hyphens=False)
            ax.set_ylabel("\n".join(lines), fontsize=size)
    return changed


# -- the figures -------------------------------------------------------------------------------

def _with_variance(agg: pd.DataFrame) -> pd.DataFrame:
    """Rows whose estimator has a variance: not exact enumeration, not round-off."""
    largest = agg.groupby("problem_label").variance.transform("max")
    return agg[(agg.variance > ZERO_VARIANCE) & (agg.variance > RELATIVE_ZERO * largest)]


def _aggregated(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` as ``aggregate`` returns it: from ``load``'s frame, or already aggregated."""
    if "variance_se" in frame:
        return frame
    ok = prepare(frame)
    if ok.empty:
        raise NotDrawable("no successful measurements")
    return aggregate(ok)


def variance_vs_samples(frame: pd.DataFrame, colours: dict | None = None):
    """Variance of one estimate against num_samples N, log-log, a panel per problem, with a
    1/N guide through the estimators' geometric-mean variance at the smallest N."""
    agg = _aggregated(frame)
    data = _with_variance(agg)
    problems = [p for p, g in data.groupby("problem_label", sort=False)
                if g.num_samples.nunique() > 1]
    if not problems:
        raise NotDrawable("needs at least two num_samples values for some problem")
    colours = _styles_for(agg, colours)
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
        ax.plot(sizes, anchor * sizes[0] / sizes, label="guide: 1/N slope", **GUIDE)
        ax.set(xscale="log", yscale="log", title=problem, xlabel="num_samples N",
               ylabel="variance (lower is better)")
        ax.xaxis.set_major_locator(FixedLocator(sizes))  # the measured N, all labelled
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    _finish(fig, axes, "Variance of one estimate against samples per estimate")
    return fig


def bias_variance_vs_temperature(frame: pd.DataFrame, colours: dict | None = None):
    """‖bias‖ and variance against the temperature τ, a row per (problem, N) with a sweep; one
    line per estimator spec apart from its temperature."""
    agg = _aggregated(frame)
    data = agg.dropna(subset=["temperature"]).copy()
    data["line"] = data.estimator.map(_without_temperature)
    groups = [(key, g) for key, g in data.groupby(["problem_label", "num_samples"], sort=False)
              if g.groupby("line").temperature.nunique().max() > 1]
    if not groups:
        raise NotDrawable("needs a temperature sweep (two or more temperatures of one "
                          "estimator)")
    line_labels = dict(zip(data.line, data.line.map(lambda s: _label_of(agg, s))))
    styles = palette(line_labels.values())
    sns.set_theme(style="whitegrid", rc=STYLE)
    fig, axes = plt.subplots(len(groups), 2, figsize=(9, 2.9 * len(groups)),
                             squeeze=False)
    for (key, group), (bias_ax, var_ax) in zip(groups, axes):
        problem, n = key
        for line_spec, line in group.groupby("line", sort=False):
            if line.temperature.nunique() < 2:
                continue
            line = line.sort_values("temperature")
            label = line_labels[line_spec]
            bias_ax.errorbar(line.temperature, line.bias_norm, yerr=line.bias_norm_se.fillna(0),
                             ms=3, capsize=2, label=label, **styles[label])
            var_ax.errorbar(line.temperature, line.variance, yerr=line.variance_se.fillna(0),
                            ms=3, capsize=2, label=label, **styles[label])
        bias_ax.set(xscale="log", yscale="log", xlabel="temperature τ",
                    ylabel="‖bias‖ (lower is better)", title=f"{problem} (N={n}): bias")
        var_ax.set(xscale="log", yscale="log", xlabel="temperature τ",
                   ylabel="variance (lower is better)", title=f"{problem} (N={n}): variance")
    _finish(fig, list(axes.flat), "The bias–variance trade-off of the relaxations")
    return fig


def _without_temperature(spec: str) -> str:
    name, options = split_spec(spec)
    kept = [f"{k}={v}" for k, v in options.items() if k != "temperature"]
    return name + (":" + ",".join(kept) if kept else "")


def _label_of(agg: pd.DataFrame, spec_without_temperature: str) -> str:
    """The label of a temperature line: any of its labels without the temperature option."""
    rows = agg[agg.estimator.map(_without_temperature) == spec_without_temperature]
    return _without_temperature(rows.estimator_label.iloc[0]) if len(rows) else \
        spec_without_temperature


def mse_vs_time(frame: pd.DataFrame, colours: dict | None = None):
    """MSE against time per estimate, log-log, a panel per problem; the points of a line are
    its num_samples values. Where a panel has such lines, estimators measured at one N only
    (a temperature sweep's variants, say) are left to the tables and the temperature figure."""
    agg = _aggregated(frame)
    data = agg.dropna(subset=["time_per_estimate_s"])
    data = _with_variance(data)  # deterministic estimates: not a trade-off
    if data.empty:
        raise NotDrawable("needs timed measurements (timing = true) of an estimator with "
                          "variance")
    colours = _styles_for(agg, colours)
    problems = list(dict.fromkeys(data.problem_label))
    fig, axes = _grid(len(problems))
    for ax, problem in zip(axes, problems):
        group = data[data.problem_label == problem]
        counts = group.groupby("estimator_label").num_samples.nunique()
        lines = counts[counts > 1].index if (counts > 1).any() else counts.index
        for label, points in group[group.estimator_label.isin(lines)].groupby(
                "estimator_label", sort=False):
            points = points.sort_values("num_samples")
            ax.plot(points.time_per_estimate_s, points.mse, ms=4, lw=0.8, label=label,
                    **colours[label])
        ax.set(xscale="log", yscale="log", title=problem, xlabel="time per estimate (s)",
               ylabel="MSE (lower is better)")
    _finish(fig, axes, "Error against compute (a line's points: increasing N; estimators "
            "measured at one N only, where others have several, and zero-variance ones are in "
            "the tables)")
    return fig


def training_curves(frame: pd.DataFrame, colours: dict | None = None):
    """The training objective against step and against optimisation time, a row per problem,
    labelled with the problem's metric; lines: mean over seeds, bands: min–max."""
    if frame.empty or "step" not in frame or frame.step.isna().all():
        raise NotDrawable("no training runs in this store")
    data = labelled(frame[frame.status == "ok"] if "status" in frame else frame)
    data = data.dropna(subset=["step"])
    colours = _styles_for(data, colours)
    problems = list(dict.fromkeys(data.problem_label))
    sns.set_theme(style="whitegrid", rc=STYLE)
    fig, axes = plt.subplots(len(problems), 2, figsize=(9, 3.0 * len(problems)),
                             squeeze=False)
    for problem, (step_ax, time_ax) in zip(problems, axes):
        group = data[data.problem_label == problem]
        for label, runs in group.groupby("estimator_label", sort=False):
            stats = runs.groupby("step").agg(mean=("objective", "mean"),
                                             low=("objective", "min"),
                                             high=("objective", "max"),
                                             time=("wall_time_s", "mean"),
                                             seeds=("objective", "size")).reset_index()
            style = colours[label]  # markers at the evaluations tell the estimators apart
            for ax, x in ((step_ax, stats.step), (time_ax, stats.time)):
                ax.plot(x, stats["mean"], lw=1.3, ms=3.5, label=label, **style)
                ax.fill_between(x, stats.low, stats.high, color=style["color"], alpha=0.2, lw=0)
        sources = group.objective_source.dropna() if "objective_source" in group else []
        ylabel = metric_label(sources.iloc[0] if len(sources) else None)
        seeds = int(group.groupby("estimator_label").seed.nunique().max()) \
            if "seed" in group else 1
        step_ax.set(title=f"{problem} ({seeds} seeds): by step", xlabel="step", ylabel=ylabel)
        time_ax.set(title=f"{problem}: by optimisation time", xlabel="optimisation time (s)",
                    ylabel=ylabel)
    _finish(fig, list(axes.flat), "Training curves (line: mean over seeds; band: min–max)")
    return fig


def time_memory_vs_size(frame: pd.DataFrame, colours: dict | None = None):
    """Time per estimate and peak memory against the parameter count, a row per problem; only
    specs that differ in their size options (``frames.SIZE_OPTIONS``) form one line."""
    agg = _aggregated(frame)
    data = agg.dropna(subset=["time_per_estimate_s"])
    lines = [n for n, g in data.groupby("problem_line", sort=False) if g.dimension.nunique() > 1]
    if not lines:
        raise NotDrawable("needs one problem measured at two or more sizes")
    colours = _styles_for(agg, colours)
    sns.set_theme(style="whitegrid", rc=STYLE)
    fig, axes = plt.subplots(len(lines), 2, figsize=(9, 2.9 * len(lines)), squeeze=False)
    for problem, (time_ax, memory_ax) in zip(lines, axes):
        group = data[data.problem_line == problem]
        sizes = sorted(group.num_samples.unique())
        for (label, n), line in group.groupby(["estimator_label", "num_samples"], sort=False):
            if line.dimension.nunique() < 2:
                continue
            line = line.groupby("dimension")[["time_per_estimate_s", "peak_memory_bytes"]] \
                .median().reset_index()
            shown = label if len(sizes) == 1 else f"{label}, N={n}"
            time_ax.plot(line.dimension, line.time_per_estimate_s, ms=3, label=shown,
                         **colours[label])
            memory_ax.plot(line.dimension, line.peak_memory_bytes, ms=3, label=shown,
                           **colours[label])
        samples = f" (N={sizes[0]})" if len(sizes) == 1 else ""
        time_ax.set(xscale="log", yscale="log", title=f"{problem}{samples}: time",
                    xlabel="parameters", ylabel="time per estimate (s)")
        memory_ax.set(xscale="log", yscale="log", title=f"{problem}: peak memory",
                      xlabel="parameters", ylabel="bytes")
    _finish(fig, list(axes.flat), "Time and peak memory against problem size")
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
