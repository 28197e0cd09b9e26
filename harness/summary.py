"""A console summary of a store: per problem, each estimator's MSE at each num_samples.

The full report (figures, tables, HTML) is ``reports``; this is what the main job prints so
that a run ends with its answer on the screen.
"""

from __future__ import annotations

from pathlib import Path

from harness.store import load
from reports.units import number


def print_summary(directory: str | Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from estimators import ESTIMATORS
    from problems import PROBLEMS

    console = Console(highlight=False, width=max(Console().width, 100))
    frame = load(directory)
    if frame.empty:
        console.print(f"{directory}: no measurements stored")
        return
    failed = frame[frame.status == "failed"]
    ok = frame[frame.status == "ok"]
    for problem, rows in ok.groupby("problem", sort=False):
        sizes = sorted(rows.num_samples.unique())
        table = Table(title=f"{PROBLEMS.short(problem)}: MSE of the gradient estimate (lower is better)",
                      title_justify="left")
        table.add_column("estimator", no_wrap=True)
        for size in sizes:
            table.add_column(f"N={size}", justify="right")
        table.add_column("bias p-value (min)", justify="right")
        table.add_column("time / estimate", justify="right")
        for estimator, group in rows.groupby("estimator", sort=False):
            mse = group.groupby("num_samples").mse.mean()
            pvalue = group.bias_pvalue.min()
            time = group.time_per_estimate_s.median() if "time_per_estimate_s" in group else None
            table.add_row(
                ESTIMATORS.short(estimator),
                *[number(mse.get(size)) for size in sizes],
                number(pvalue),
                "n/a" if time is None or time != time else f"{time * 1e3:.3g} ms",
            )
        console.print(table)
    if len(failed):
        console.print(f"[red]{len(failed)} cells failed[/]; first: {failed.iloc[0].problem} × "
                      f"{failed.iloc[0].estimator}: {failed.iloc[0].error}")
