"""Tables: per problem and sample size, estimators as rows; Markdown, LaTeX (booktabs), HTML.

Columns: ‖bias‖ ± s.e., variance, MSE, cosine, time per estimate, peak memory. The best value
of each column is marked (bold): the smallest bias, variance, MSE, time and memory, the
largest cosine. Numbers carry three significant figures.
"""

from __future__ import annotations

import dataclasses
import html

import pandas as pd

from reports.frames import BIAS_ALPHA, ZERO_VARIANCE, direction
from reports.units import number, seconds, size

COLUMNS = (  # (key, header, best is "min" or "max")
    ("bias_norm", "‖bias‖ ± s.e.", "min"),
    ("variance", "variance", "min"),
    ("mse", "MSE", "min"),
    ("cosine", "cosine", "max"),
    ("time_per_estimate_s", "time / estimate", "min"),
    ("peak_memory_bytes", "peak memory", "min"),
)


@dataclasses.dataclass
class Table:
    caption: str
    header: list[str]
    rows: list[list[str]]  # plain text cells
    best: list[list[bool]]  # which cells are the best of their column
    references: list[bool] = dataclasses.field(default_factory=list)  # reference rows


REFERENCE = " (reference)"


def _text(key: str, row: pd.Series) -> str:
    value = row[key]
    if key == "bias_norm":
        return f"{number(value)} ± {number(row['bias_norm_se'], 2)}"
    if key == "time_per_estimate_s":
        return seconds(value)
    if key == "peak_memory_bytes":
        return size(value)
    return number(value)


def is_reference(row: pd.Series, alpha: float = BIAS_ALPHA) -> bool:
    """A zero-variance estimate with no detected bias: exact enumeration (or an estimator that
    is exact on this problem). It is the answer, not a competitor."""
    variance = pd.to_numeric(row.get("variance"), errors="coerce")
    pvalue = pd.to_numeric(row.get("bias_pvalue"), errors="coerce")
    return row.get("estimator_name") == "exact" or (
        variance == variance and variance <= ZERO_VARIANCE and not (pvalue < alpha))


def build_tables(aggregated: pd.DataFrame) -> list[Table]:
    """One table per problem (in the study's order) and num_samples (ascending): estimators
    by MSE, references last and outside the contest for bold."""
    tables = []
    if aggregated.empty:
        return tables
    order = {label: i for i, label in enumerate(dict.fromkeys(aggregated.problem_label))}
    keys = sorted(aggregated.groupby(["problem_label", "num_samples"]).groups,
                  key=lambda key: (order[key[0]], int(key[1])))
    for problem, n in keys:
        group = aggregated[(aggregated.problem_label == problem) & (aggregated.num_samples == n)]
        reference = group.apply(is_reference, axis=1).astype(bool)
        group = pd.concat([group[~reference].sort_values("mse", kind="stable"),
                           group[reference]])
        reference = reference.loc[group.index]
        contest = group[~reference]
        best_value = {}
        for key, _, better in COLUMNS:
            values = pd.to_numeric(contest[key], errors="coerce").dropna()
            if len(values) > 1 and values.nunique() > 1:
                best_value[key] = values.min() if better == "min" else values.max()
        rows, best = [], []
        for (_, row), ref in zip(group.iterrows(), reference):
            rows.append([row.estimator_label + (REFERENCE if ref else "")]
                        + [_text(key, row) for key, _, _ in COLUMNS])
            best.append([False] + [not ref and key in best_value and row[key] == best_value[key]
                                   for key, _, _ in COLUMNS])
        n = int(n)
        tables.append(Table(f"{problem}, {n} sample{'s' if n != 1 else ''} per estimate",
                            ["estimator"] + [h for _, h, _ in COLUMNS], rows, best,
                            list(reference)))
    return tables


CURVE_COLUMNS = ("step", "objective", "objective_stderr", "gradient_variance", "wall_time_s")


def final_metrics(train: pd.DataFrame) -> list[Table]:
    """One table per trained problem: each estimator's metrics at its last evaluation, mean ±
    standard error over seeds (the s.e. needs two seeds), the best mean of each column bold
    (lower or higher as the metric's name says; ``frames.direction``)."""
    if train.empty or "step" not in train:
        return []
    data = train[train.status == "ok"].dropna(subset=["step"])
    if data.empty:
        return []
    last = data.sort_values("step").groupby("key", sort=False).tail(1)
    tables = []
    for problem in dict.fromkeys(data.problem_label):
        group = last[last.problem_label == problem]
        metrics = _curve_metrics(data[data.problem_label == problem])
        if not metrics:  # an exact problem: its objective is the metric
            group = group.assign(final_objective=group.objective)
            metrics = ["final_objective"]
        header = ["estimator", "seeds", "steps"]
        for metric in metrics:
            arrow = {"lower": " ↓", "higher": " ↑"}.get(direction(metric) or "", "")
            header.append(metric.replace("_", " ") + arrow)
        stats = []
        for label, runs in group.groupby("estimator_label", sort=False):
            values = {m: pd.to_numeric(runs[m], errors="coerce").dropna() for m in metrics}
            stats.append((label, len(runs), int(runs.step.max()), values))
        best = {}
        for metric in metrics:
            means = [v[metric].mean() for *_, v in stats if len(v[metric])]
            way = direction(metric) or ("lower" if metric == "final_objective" else None)
            if len(means) > 1 and way and len(set(means)) > 1:
                best[metric] = min(means) if way == "lower" else max(means)
        rows, marks = [], []
        for label, seeds, steps, values in stats:
            row, mark = [label, str(seeds), str(steps)], [False, False, False]
            for metric in metrics:
                v = values[metric]
                se = v.std(ddof=1) / len(v) ** 0.5 if len(v) > 1 else float("nan")
                row.append(f"{number(v.mean())} ± {number(se, 2)}" if len(v) > 1
                           else number(v.mean() if len(v) else None))
                mark.append(metric in best and len(v) > 0 and v.mean() == best[metric])
            rows.append(row)
            marks.append(mark)
        tables.append(Table(f"{problem}: final metrics, mean ± s.e. over seeds", header, rows,
                            marks, [False] * len(rows)))
    return tables


SAMPLING_COLUMNS = (  # (key, header): each a mean ± s.e. over seeds
    ("total_variation", "TV, relaxed samples rounded"),
    ("hard_total_variation", "TV, exact samples"),
    ("exact_sampling_total_variation", "E TV of exact sampling"),
)


def sampling_tables(sample: pd.DataFrame) -> list[Table]:
    """One table per sampled problem (``harness.sampling``): each relaxation's total variation
    to the exact distribution, mean ± standard error over seeds, beside what exact samples
    give; the smallest mean TV of the relaxed samples bold."""
    if sample.empty or "total_variation" not in sample:
        return []
    data = sample[sample.status == "ok"]
    tables = []
    for problem in dict.fromkeys(data.problem_label):
        group = data[data.problem_label == problem]
        stats = [(label, runs) for label, runs in group.groupby("estimator_label", sort=False)]
        means = [pd.to_numeric(runs.total_variation).mean() for _, runs in stats]
        best = min(means) if len(set(means)) > 1 else None
        rows, marks = [], []
        for (label, runs), mean in zip(stats, means):
            row = [label, str(int(runs.num_samples.iloc[0])), str(len(runs))]
            for key, _ in SAMPLING_COLUMNS:
                v = pd.to_numeric(runs[key], errors="coerce").dropna()
                se = v.std(ddof=1) / len(v) ** 0.5 if len(v) > 1 else None
                row.append(f"{number(v.mean())} ± {number(se, 2)}" if se is not None
                           else number(v.mean() if len(v) else None))
            rows.append(row)
            marks.append([False, False, False, mean == best] + [False] * (len(row) - 4))
        tables.append(Table(f"{problem}: total variation of relaxed samples to the exact "
                            "distribution, mean ± s.e. over seeds",
                            ["estimator", "samples", "seeds",
                             *(header for _, header in SAMPLING_COLUMNS)],
                            rows, marks, [False] * len(rows)))
    return tables


def _curve_metrics(runs: pd.DataFrame) -> list[str]:
    """The task metrics recorded at evaluations: numeric curve columns with values."""
    skip = set(CURVE_COLUMNS) | {"key", "kind", "problem", "estimator", "num_samples", "seed",
                                 "cell_seed", "status", "error", "started", "finished",
                                 "problem_label", "estimator_label", "objective_evaluations",
                                 "learning_rate", "steps", "final_objective",
                                 "replicates", "eval_every", "variance_replicates"}
    return [c for c in runs.columns if c not in skip and runs[c].notna().any()
            and pd.api.types.is_numeric_dtype(runs[c])]


def markdown(tables: list[Table]) -> str:
    parts = []
    for table in tables:
        parts.append(f"### {table.caption}\n")
        parts.append("| " + " | ".join(table.header) + " |")
        parts.append("|" + "|".join(["---"] + ["---:"] * (len(table.header) - 1)) + "|")
        for row, best in zip(table.rows, table.best):
            cells = [f"**{c}**" if b else c for c, b in zip(row, best)]
            parts.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        parts.append("")
    return "\n".join(parts)


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}", "±": r"$\pm$", "‖": r"$\|$", "µ": r"$\mu$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def latex(tables: list[Table]) -> str:
    """Every table as a booktabs ``table`` environment (needs ``\\usepackage{booktabs}``)."""
    parts = ["% Generated by estibench. Needs \\usepackage{booktabs}."]
    for table in tables:
        spec = "l" + "r" * (len(table.header) - 1)
        parts += [r"\begin{table}[ht]", r"\centering", r"\small",
                  rf"\caption{{{latex_escape(table.caption)}}}",
                  rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
                  " & ".join(latex_escape(h) for h in table.header) + r" \\", r"\midrule"]
        for row, best in zip(table.rows, table.best):
            cells = [rf"\textbf{{{latex_escape(c)}}}" if b else latex_escape(c)
                     for c, b in zip(row, best)]
            parts.append(" & ".join(cells) + r" \\")
        parts += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(parts)


def html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = []
    for row, best in zip(table.rows, table.best):
        cells = []
        for i, (cell, is_best) in enumerate(zip(row, best)):
            text = html.escape(cell)
            text = f"<strong>{text}</strong>" if is_best else text
            cells.append(f"<td class=\"{'name' if i == 0 else 'num'}\">{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<figure class=\"table\"><figcaption>{html.escape(table.caption)}</figcaption>"
            f"<div class=\"scroll\"><table><thead><tr>{head}</tr></thead><tbody>"
            + "".join(body) + "</tbody></table></div></figure>")
