"""``build_report``: a study's store -> figures, tables and one self-contained ``index.html``."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import pandas as pd

from reports import figures as fig_module
from reports import tables as tab_module
from reports.frames import aggregate, prepare, short_labels
from reports.read import load, load_skipped, study_info
from reports.units import number

FORMATS = ("html", "md", "latex", "png", "svg", "pdf")
DEFAULT_FORMATS = ("html", "md", "latex", "png")
ALPHA = 1e-4  # a cell's bias counts as detected when its p-value is below this


def parse_formats(text: str | tuple) -> tuple[str, ...]:
    formats = tuple(f.strip() for f in text.split(",")) if isinstance(text, str) else text
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"unknown report format {unknown[0] if unknown else ''!r}: "
                         f"expected a comma-separated list of {', '.join(FORMATS)}")
    return formats


def _winners(agg: pd.DataFrame) -> list[str]:
    """One sentence per problem: the lowest MSE at each N, and the best without detected bias."""
    lines = []
    agg = agg[agg.estimator_name != "exact"]  # zero variance at a cost exponential in the size
    for problem, group in agg.groupby("problem_label", sort=False):
        parts = []
        for n, at_n in group.groupby("num_samples"):
            varying = at_n[at_n.mse > fig_module.ZERO_VARIANCE]
            if varying.empty:
                continue
            best = varying.loc[varying.mse.idxmin()]
            text = f"N={n}: <b>{html.escape(best.estimator_label)}</b> (MSE {number(best.mse)}"
            unbiased = varying[varying.bias_pvalue >= ALPHA]
            if not unbiased.empty and unbiased.mse.idxmin() != varying.mse.idxmin():
                fair = unbiased.loc[unbiased.mse.idxmin()]
                text += (f"; without detected bias: {html.escape(fair.estimator_label)}, "
                         f"{number(fair.mse)}")
            parts.append(text + ")")
        if parts:
            lines.append(f"<li><b>{html.escape(problem)}</b>: lowest MSE at " + "; ".join(parts)
                         + "</li>")
    return lines


CSS = """
body{font:15px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;
background:#fafafa}
main{max-width:1180px;margin:0 auto;padding:16px 24px 48px;background:#fff}
h1{font-size:1.6em;margin:.4em 0}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:2em}
h3{font-size:1.05em}
nav a{margin-right:14px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:13px;margin:6px 0 18px}
th,td{padding:3px 9px;border-bottom:1px solid #eee;white-space:nowrap}
th{background:#f3f3f3;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.name{font-family:ui-monospace,Menlo,monospace;font-size:12px}
figure{margin:0 0 20px}figcaption{font-weight:600;margin:4px 0}
img{max-width:100%;height:auto;border:1px solid #eee}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:6px 12px;margin:8px 0}
.failed{color:#b00020}
pre{background:#f6f6f6;padding:10px;overflow-x:auto;font-size:12px}
details summary{cursor:pointer;font-weight:600}
"""


def _png_bytes(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def _cells_table(frame: pd.DataFrame, labels: dict[str, str]) -> str:
    if frame.empty:
        return "<p>No cells.</p>"
    rows = []
    frame = frame.sort_values(["kind", "problem", "estimator", "num_samples", "seed"],
                              kind="stable")
    for _, row in frame.iterrows():
        status = html.escape(str(row.status))
        mse = number(row.get("mse")) if row.status == "ok" else ""
        error = html.escape(str(row.error)) if row.status != "ok" else ""
        rows.append(
            f"<tr class=\"cell {'' if row.status == 'ok' else 'failed'}\" "
            f"data-key=\"{html.escape(str(row.key))}\"><td class=\"name\">"
            f"{html.escape(labels[row.problem])}</td><td class=\"name\">"
            f"{html.escape(labels[row.estimator])}</td><td class=\"num\">{row.num_samples}"
            f"</td><td class=\"num\">{row.seed}</td><td>{status}</td><td class=\"num\">{mse}"
            f"</td><td>{error}</td></tr>")
    return ("<div class=\"scroll\"><table id=\"cells\"><thead><tr><th>problem</th>"
            "<th>estimator</th><th>N</th><th>seed</th><th>status</th><th>MSE</th><th>error</th>"
            "</tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>")


def _provenance(frame: pd.DataFrame, train: pd.DataFrame, info: dict) -> str:
    facts = {"study": info.get("name"), "fingerprint": info.get("fingerprint")}
    for source in (frame, train):
        ok = source[source.status == "ok"] if not source.empty else source
        if ok.empty:
            continue
        for column in ("device", "dtype", "git_commit"):
            if column in ok:
                values = sorted({str(v) for v in ok[column].dropna()})
                if values:
                    facts.setdefault(column, ", ".join(values))
        if "versions" in ok and "versions" not in facts:
            versions = ok.versions.dropna()
            if len(versions):
                facts["versions"] = ", ".join(f"{k} {v}" for k, v in versions.iloc[0].items())
    items = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                    for k, v in facts.items() if v)
    return (f"<table>{items}</table><details><summary>study file</summary><pre>"
            f"{html.escape(info.get('source', ''))}</pre></details>")


def build_report(directory: str | Path, out: str | Path | None = None,
                 formats: str | tuple = DEFAULT_FORMATS) -> list[Path]:
    """Build the report of the store at ``directory`` into ``out`` (default
    ``directory/report``); return the files written."""
    formats = parse_formats(formats)
    out = Path(out) if out is not None else Path(directory) / "report"
    info = study_info(directory)  # no store: no output directory left behind
    out.mkdir(parents=True, exist_ok=True)
    frame, train, skipped = load(directory), load(directory, "train"), load_skipped(directory)
    both = pd.concat([frame[["problem", "estimator"]], train[["problem", "estimator"]]])
    labels = {**short_labels(both.problem), **short_labels(both.estimator)}
    ok = prepare(frame, labels)
    agg = aggregate(ok) if not ok.empty else pd.DataFrame()
    tables = tab_module.build_tables(agg)
    train_ok = train[train.status == "ok"].copy() if not train.empty else train
    if not train_ok.empty:
        train_ok["problem_label"] = train_ok.problem.map(labels)
        train_ok["estimator_label"] = train_ok.estimator.map(labels)
    colours = fig_module.palette(labels[spec] for spec in both.estimator)

    written: list[Path] = []
    notes: list[str] = []
    if ok.empty:
        notes.append("No successful measurements in this store: no tables and no "
                     "measurement figures.")
    failed = frame[frame.status == "failed"] if not frame.empty else frame
    if len(failed):
        notes.append(f"{len(failed)} measurement cells failed; their errors are listed under "
                     "All cells.")
    if not train.empty and (train.status == "failed").any():
        notes.append(f"{int((train.status == 'failed').sum())} training runs failed.")

    figure_html = []
    for name, draw in fig_module.FIGURES.items():
        if name == "training_curves":
            result = draw(train_ok, colours)
        elif agg.empty:
            result = "no successful measurements"
        else:
            result = draw(agg, colours)
        title = fig_module.TITLES[name]
        if isinstance(result, str):
            figure_html.append(f"<h3>{html.escape(title)}</h3><p class=\"note\">Not drawn: "
                               f"{html.escape(result)}.</p>")
            continue
        png = _png_bytes(result)  # rendered once: the .png file and the page's inline image
        for fmt in ("png", "svg", "pdf"):
            if fmt in formats:
                path = out / f"{name}.{fmt}"
                if fmt == "png":
                    path.write_bytes(png)
                else:
                    result.savefig(path, bbox_inches="tight")
                written.append(path)
        figure_html.append(f"<figure><figcaption>{html.escape(title)}</figcaption>"
                           f"<img alt=\"{html.escape(title)}\" src=\"data:image/png;base64,"
                           f"{base64.b64encode(png).decode('ascii')}\"></figure>")
        fig_module.plt.close(result)

    if "md" in formats:
        path = out / "tables.md"
        path.write_text(f"# {info['name']}: estimators per problem\n\n"
                        + (tab_module.markdown(tables) or "No successful measurements.\n"))
        written.append(path)
    if "latex" in formats:
        path = out / "tables.tex"
        path.write_text(tab_module.latex(tables))
        written.append(path)
    if "html" in formats:
        skipped_html = "".join(
            f"<tr><td>{html.escape(r.kind)}</td><td class=\"name\">{html.escape(r.problem)}</td>"
            f"<td class=\"name\">{html.escape(r.estimator)}</td><td>{html.escape(r.reason)}</td>"
            "</tr>" for r in skipped.itertuples())
        cells = pd.concat([frame, train.drop_duplicates("key")], ignore_index=True) \
            if not train.empty else frame
        summary = _winners(agg) if not agg.empty else []
        counts = (f"{len(frame)} measurement cells ({len(failed)} failed), "
                  f"{train.key.nunique() if not train.empty else 0} training runs, "
                  f"{len(skipped)} skipped pairs")
        page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>estibench report: {html.escape(info['name'])}</title><style>{CSS}</style></head>
<body><main>
<h1>estibench report: {html.escape(info['name'])}</h1>
<p>{counts}.</p>
<nav><a href="#summary">Summary</a><a href="#tables">Tables</a><a href="#figures">Figures</a>
<a href="#all-cells">All cells</a><a href="#provenance">Provenance</a></nav>
<h2 id="summary">Summary</h2>
{''.join(f'<p class="note">{html.escape(n)}</p>' for n in notes)}
<ul>{''.join(summary) or '<li>Nothing to summarise.</li>'}</ul>
<p>MSE is the mean squared distance of one gradient estimate from the true gradient; exact
enumeration (zero variance, at a cost exponential in the problem size) is left out of this
summary but not of the tables. A bias counts as detected when a cell's p-value is below {ALPHA:g}. In the tables the best value of
each column is in bold; ‖bias‖ ± s.e. is the norm of the mean bias and the norm of its
per-coordinate standard errors (over seeds: their mean and its standard error).</p>
<h2 id="tables">Tables</h2>
{''.join(tab_module.html_table(t) for t in tables) or '<p>No successful measurements.</p>'}
<h2 id="figures">Figures</h2>
{''.join(figure_html)}
<h2 id="all-cells">All cells</h2>
{_cells_table(cells, labels)}
<h3>Skipped pairs</h3>
{('<div class="scroll"><table><thead><tr><th>kind</th><th>problem</th><th>estimator</th>'
  '<th>reason</th></tr></thead><tbody>' + skipped_html + '</tbody></table></div>')
 if skipped_html else '<p>None.</p>'}
<h2 id="provenance">Provenance</h2>
{_provenance(frame, train, info)}
</main></body></html>
"""
        path = out / "index.html"
        path.write_text(page, encoding="utf-8")
        written.append(path)
    (out / "manifest.json").write_text(json.dumps([p.name for p in written], indent=1))
    return written
