"""``build_report``: a study's store -> figures, tables and one self-contained ``index.html``."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import pandas as pd

from reports import claimfile
from reports import claims as claims_module
from reports import figures as fig_module
from reports import tables as tab_module
from reports.frames import BIAS_ALPHA, ZERO_VARIANCE, aggregate, prepare, split_spec
from reports.read import load, load_skipped, study_info
from reports.units import number

FORMATS = ("html", "md", "latex", "png", "svg", "pdf")
DEFAULT_FORMATS = ("html", "md", "latex", "png")


def parse_formats(text: str | tuple) -> tuple[str, ...]:
    formats = tuple(f.strip() for f in text.split(",")) if isinstance(text, str) else text
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"unknown report format {unknown[0] if unknown else ''!r}: "
                         f"expected a comma-separated list of {', '.join(FORMATS)}")
    return formats


def _winners(agg: pd.DataFrame) -> list[dict]:
    """Per problem: the lowest MSE at each N, and the best without detected bias."""
    problems = []
    agg = agg[~agg.apply(tab_module.is_reference, axis=1).astype(bool)] if not agg.empty else agg
    for problem, group in agg.groupby("problem_label", sort=False):
        parts = []
        for n, at_n in sorted(group.groupby("num_samples"), key=lambda item: int(item[0])):
            varying = at_n[at_n.mse > ZERO_VARIANCE]
            if varying.empty:
                continue
            best = varying.loc[varying.mse.idxmin()]
            part = {"n": int(n), "best": best.estimator_label, "mse": number(best.mse),
                    "fair": None}
            unbiased = varying[varying.bias_pvalue >= BIAS_ALPHA]
            if not unbiased.empty and unbiased.mse.idxmin() != varying.mse.idxmin():
                fair = unbiased.loc[unbiased.mse.idxmin()]
                part.update(fair=fair.estimator_label, fair_mse=number(fair.mse))
            parts.append(part)
        if parts:
            problems.append({"label": problem, "parts": parts})
    return problems


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
details{margin:2px 0}tr.reference td{color:#555;font-style:italic}
td.reason{white-space:normal;min-width:24em}
code{font-size:13px}
"""


def _png_bytes(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def _cells(frame: pd.DataFrame) -> list[dict]:
    """Every cell, measurements and training runs, for the All cells table."""
    if frame.empty:
        return []
    frame = frame.sort_values(["kind", "problem_label", "estimator_label", "num_samples", "seed"],
                              kind="stable")
    kinds = {"measure": "measurement", "train": "training", "sample": "sampling"}
    cells = []
    for _, row in frame.iterrows():
        ok = row.status == "ok"
        measured = ok and row.kind == "measure"
        cells.append({"key": row.key, "kind": kinds.get(row.kind, row.kind), "ok": ok,
                      "problem": row.problem_label, "estimator": row.estimator_label,
                      "n": row.num_samples, "seed": row.seed, "status": row.status,
                      "mse": number(row.get("mse")) if measured else "",
                      "error": "" if ok else str(row.error)})
    return cells


def reason_kind(reason: str) -> str:
    """A skip reason without the names in it, so that pairs skipped for one cause group:
    "estimator 'arm' does not support the subset family of problem 'subset-linear' (it
    supports: bernoulli)" -> "estimator … does not support the family of problem …"."""
    text = re.sub(r"\s*\(it supports:[^)]*\)", "", str(reason))
    text = re.sub(r"\bthe [\w-]+ family\b", "the family", text)
    text = re.sub(r"'[^']*'", "…", text)
    text = re.sub(r"^num_samples=\d+: [\w:.=,-]+", "num_samples: …", text)
    text = re.sub(r"[\w-]+:[\w.=,-]+", "…", text)  # a spec with options
    return re.sub(r"\b\d+\b", "n", text) if text.startswith("num_samples") else text


def _skipped(skipped: pd.DataFrame) -> list[dict]:
    """Skipped pairs grouped by the kind of reason, the largest group first."""
    groups = []
    kinds = skipped.reason.map(reason_kind) if not skipped.empty else skipped.reason
    for kind, pairs in skipped.groupby(kinds, sort=False):
        groups.append({"reason": kind, "count": len(pairs),
                       "pairs": [{"kind": p.kind, "problem": p.problem_label,
                                  "estimator": p.estimator_label, "reason": p.reason}
                                 for p in pairs.itertuples()]})
    return sorted(groups, key=lambda g: -g["count"])


def _provenance(frame: pd.DataFrame, train: pd.DataFrame, info: dict) -> list[tuple]:
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
    return [(k, str(v)) for k, v in facts.items() if v]


def _template(name: str = "report.html"):
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("reports", "templates"),
        autoescape=True, trim_blocks=True, lstrip_blocks=True,
        undefined=jinja2.StrictUndefined)
    return environment.get_template(name)


def _comparison_page(baseline: str | Path, directory: str | Path, out: Path,
                     formats: tuple) -> list[Path]:
    """``compare.html`` (and ``compare.md``): BASE vs NEW (``reports.compare``)."""
    from markupsafe import Markup

    from reports import compare as comparing

    result = comparing.compare(baseline, directory)
    written = []
    if "md" in formats:
        path = out / "compare.md"
        path.write_text(comparing.markdown(result), encoding="utf-8")
        written.append(path)
    training = [{"problem": t.problem, "estimator": t.estimator, "num_samples": t.num_samples,
                 "base_seeds": t.base_seeds, "new_seeds": t.new_seeds,
                 "difference": number(t.difference),
                 "interval": "" if t.interval is None else
                 f"{number(t.interval[0])} to {number(t.interval[1])}"}
                for t in result.training]
    page = _template("compare.html").render(
        study=result.study, base=result.base, new=result.new, css=Markup(CSS),
        summary=comparing.summary_line(result), worse=bool(result.worse),
        variance_factor=f"{result.variance_factor:g}", time_factor=f"{result.time_factor:g}",
        header=comparing.HEADER, rows=comparing.rows(result), training=training,
        unmatched=[("Only in BASE", result.only_base), ("Only in NEW", result.only_new),
                   ("Failed in either store", result.failed)])
    path = out / "compare.html"
    path.write_text(page, encoding="utf-8")
    return written + [path]


def _spec_parts(spec: str) -> tuple[str, frozenset]:
    """(name, {(option, value)}) of a spec string (``frames.split_spec``), numbers compared as
    numbers."""
    name, options = split_spec(spec)
    items = set()
    for key, value in options.items():
        try:
            items.add((key, float(value)))
        except ValueError:
            items.add((key, value))
    return name, frozenset(items)


def _verdicts(info: dict, frame: pd.DataFrame, train: pd.DataFrame,
              sample: pd.DataFrame) -> list:
    """The verdicts on the claims of the study text the store holds (none without a
    ``[[claim]]``). A claim names estimators and problems as the study file writes them; it
    names the store's spec whose label (the options not at their defaults) it spells out, in
    any order, adding none that the spec lacks."""
    labels = dict(zip(frame.estimator, frame.estimator_label))
    for data in (train, sample):
        labels.update(zip(data.estimator, data.estimator_label))
    for data in (frame, train, sample):
        if "problem_label" in data:
            labels.update(zip(data.problem, data.problem_label))
    parts = [(_spec_parts(spec), _spec_parts(label), spec) for spec, label in labels.items()]

    def resolve(spelled: str) -> str:
        name, items = _spec_parts(spelled)
        for (spec_name, spec_items), (_, label_items), spec in parts:
            if spec_name == name and label_items <= items <= spec_items:
                return spec
        return spelled

    claims = claimfile.claims_from_source(info.get("source") or "", resolve)
    return claims_module.verdicts(claims, frame, train, labels, sample)


def build_report(directory: str | Path, out: str | Path | None = None,
                 formats: str | tuple = DEFAULT_FORMATS,
                 baseline: str | Path | None = None) -> list[Path]:
    """Build the report of the store at ``directory`` into ``out`` (default
    ``directory/report``); return the files written. With ``baseline`` (a store of the same
    study), a ``compare.html`` page of BASE vs NEW too, linked from the report."""
    formats = parse_formats(formats)
    out = Path(out) if out is not None else Path(directory) / "report"
    info = study_info(directory)  # no store: no output directory left behind
    if baseline is not None:
        study_info(baseline)
    out.mkdir(parents=True, exist_ok=True)
    frame, train, skipped = load(directory), load(directory, "train"), load_skipped(directory)
    sample = load(directory, "sample")
    ok = prepare(frame)
    agg = aggregate(ok) if not ok.empty else pd.DataFrame()
    tables = tab_module.build_tables(agg)
    final_tables = tab_module.final_metrics(train)
    sample_tables = tab_module.sampling_tables(sample)
    colours = fig_module.palette(pd.concat([frame.estimator_label, train.estimator_label]))

    written: list[Path] = []
    notes: list[str] = []
    # A store of training runs or sample distributions alone is not short of measurements.
    measurements_missing = ok.empty and (len(frame) > 0 or (train.empty and sample.empty))
    if measurements_missing:
        notes.append("No successful measurements in this store: no tables and no "
                     "measurement figures.")
    failed = frame[frame.status == "failed"] if not frame.empty else frame
    if len(failed):
        notes.append(f"{len(failed)} measurement cells failed; their errors are listed under "
                     "All cells.")
    if not train.empty and (train.status == "failed").any():
        notes.append(f"{int((train.status == 'failed').sum())} training runs failed.")

    figures = []
    for name, draw in fig_module.FIGURES.items():
        title = fig_module.TITLES[name]
        try:
            if name == "training_curves":
                result = draw(train, colours)
            elif agg.empty:
                raise fig_module.NotDrawable("no successful measurements")
            else:
                result = draw(agg, colours)
        except fig_module.NotDrawable as reason:
            figures.append({"title": title, "reason": str(reason)})
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
        figures.append({"title": title, "reason": None,
                        "png": base64.b64encode(png).decode("ascii")})
        fig_module.plt.close(result)

    verdicts = _verdicts(info, frame, train, sample)
    if "md" in formats:
        path = out / "tables.md"
        text = tab_module.markdown(tables) or (
            "No successful measurements.\n" if measurements_missing else "")
        if final_tables:
            text += "\n## Final metrics of the training runs\n\n" + tab_module.markdown(
                final_tables)
        if sample_tables:
            text += "\n## Sample distributions\n\n" + tab_module.markdown(sample_tables)
        if verdicts:
            text += "\n## Reproductions\n\n" + claims_module.markdown(
                [(info["name"], v) for v in verdicts])
        path.write_text(f"# {info['name']}: estimators per problem\n\n" + text)
        written.append(path)
    if "latex" in formats:
        path = out / "tables.tex"
        path.write_text(tab_module.latex(tables + final_tables + sample_tables))
        written.append(path)
    if baseline is not None:
        written += _comparison_page(baseline, directory, out, formats)
    if "html" in formats:
        cells = pd.concat([part for part in (frame, train.drop_duplicates("key"), sample)
                           if not part.empty], ignore_index=True) \
            if not (train.empty and sample.empty) else frame
        counts = (f"{len(frame)} measurement cells ({len(failed)} failed), "
                  f"{train.key.nunique() if not train.empty else 0} training runs, "
                  + (f"{len(sample)} sample distributions, " if not sample.empty else "")
                  + f"{len(skipped)} skipped pairs")
        from markupsafe import Markup

        page = _template().render(
            name=info["name"], counts=counts, notes=notes,
            summary=_winners(agg) if not agg.empty else [], alpha=f"{BIAS_ALPHA:g}",
            tables=tables, final_tables=final_tables, sample_tables=sample_tables,
            figures=figures, cells=_cells(cells),
            skipped=_skipped(skipped), provenance=_provenance(frame, train, info),
            source=info.get("source", ""), css=Markup(CSS),
            compared=baseline is not None,
            reproductions=[{"claim": v.claim.claim, "source": v.claim.source,
                            "published": v.claim.published, "measured": v.measured(),
                            "verdict": v.verdict, "detail": v.detail,
                            "scale": v.claim.scale or "—"} for v in verdicts])
        path = out / "index.html"
        path.write_text(page, encoding="utf-8")
        written.append(path)
    (out / "manifest.json").write_text(json.dumps([p.name for p in written], indent=1))
    return written
