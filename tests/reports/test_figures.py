"""Figures and tables fit for a paper: readable ticks, one colour per estimator name, numeric
order, reference rows, one label per configured estimator.

The store here has every figure type: num_samples 1, 4 and 16 on two problems, a temperature
sweep, one problem at two sizes (and a second spec of it that differs in a non-size option),
timings packed into a narrow range (the case whose tick labels used to run together), more
estimator names than a qualitative palette has colours, and training runs of a task with its
own metrics.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.store import Store
from harness.study import Cell, Skipped
from reports import build_report
from reports import build as build_module
from reports import figures
from reports.read import load
from reports.tables import REFERENCE

NAMES = ["reinforce", "reinforce:baseline=loo", "gumbel-softmax", "st-gumbel-softmax",
         "straight-through", "arm", "disarm", "gumbel-rao", "reinmax", "gst", "rebar", "relax",
         "mvd", "exact"]
PROBLEMS = ["bernoulli-toy:dim=2", "bernoulli-toy:dim=8", "bernoulli-toy:dim=2,target=0.3"]
SAMPLES = (16, 1, 4)  # written out of order on purpose


def canonical(label: str) -> str:
    """A stand-in for the registry's canonical spec: the label plus one default option."""
    return label + (",extra=0" if ":" in label else ":extra=0")


def _record(problem, estimator, n, index, *, temperature=None):
    dim = 8 if "dim=8" in problem else 2
    zero = estimator.startswith("exact")
    variance = 0.0 if zero else (1.0 + index) / n
    time = 1.6e-4 + 1e-6 * index + 2e-6 * n  # all within 1.6e-4 .. 2.2e-4
    if temperature is not None:
        variance, bias = 1.0 / temperature, temperature
    else:
        bias = 0.0 if zero or estimator.startswith(("reinforce", "arm", "disarm")) else 0.1
    return {
        "problem": problem, "estimator": estimator, "num_samples": n, "replicates": 1000,
        "seed": 0, "device": "cpu", "dtype": "float32",
        "true_gradient": [0.1] * dim, "true_gradient_source": "exact",
        "true_gradient_stderr": None, "mean_gradient": [0.1 + bias] + [0.1] * (dim - 1),
        "bias": [bias] + [0.0] * (dim - 1), "bias_norm": bias, "bias_stderr": [0.001] * dim,
        "bias_pvalue": 0.5 if bias == 0 else 1e-12, "variance": variance,
        "variance_per_coord": [variance / dim] * dim, "mse": variance + bias ** 2,
        "cosine": None if zero else 0.5, "snr": 1.0, "time_per_estimate_s": time * dim,
        "peak_memory_bytes": 4096 * dim * n, "peak_memory_method": "test",
        "parameters": [0.0] * dim, "problem_config": {}, "estimator_config": {},
        "torch_version": "2.13.0", "versions": {"python": "3.11"}, "git_commit": "abc",
    }


def _cell(kind, problem, estimator, n, seed, **settings):
    return Cell(kind, problem, estimator, n, seed,
                tuple(sorted({"device": "cpu", "dtype": "float32", **settings}.items())))


def write_store(directory: Path) -> None:
    with Store(directory) as store:
        store.bind("paper", "p" * 16, "name = 'paper'\n", allow_changed=False)
        labels = {}
        for problem in PROBLEMS:
            labels[canonical(problem)] = problem
            for index, label in enumerate(NAMES):
                labels[canonical(label)] = label
                for n in SAMPLES:
                    record = _record(canonical(problem), canonical(label), n, index)
                    store.write(_cell("measure", canonical(problem), canonical(label), n, 0,
                                      replicates=1000),
                                {"status": "ok", "record": record, "started": 0, "finished": 1})
        for temperature in (0.1, 0.3, 1.0, 3.0):
            spec = f"gumbel-softmax:temperature={temperature}"
            labels[spec] = spec
            record = _record(canonical(PROBLEMS[0]), spec, 4, 0, temperature=temperature)
            store.write(_cell("measure", canonical(PROBLEMS[0]), spec, 4, 0, replicates=1000),
                        {"status": "ok", "record": record, "started": 0, "finished": 1})
        task = "knn-subset:n=16,extra=0"
        labels[task] = "knn-subset"
        for estimator in ("reinforce:baseline=loo", "relaxed-topk"):
            labels[canonical(estimator)] = estimator
            for seed, shift in ((0, 0.0), (1, 0.02)):
                curve = [{"step": s, "objective": 0.5 - 0.01 * s / 10 + shift,
                          "objective_stderr": None, "gradient_variance": 1.0,
                          "wall_time_s": 0.1 * s, "test_accuracy": 0.5 + 0.01 * s / 10 - shift}
                         for s in (0, 10, 20)]
                record = {"problem": task, "estimator": canonical(estimator), "curve": curve,
                          "objective_source": "test error of 3-nearest-neighbour "
                                              "classification",
                          "final_objective": curve[-1]["objective"], "wall_time_s": 2.0}
                store.write(_cell("train", task, canonical(estimator), 4, seed, steps=20),
                            {"status": "ok", "record": record, "started": 0, "finished": 1})
        store.write_skipped([Skipped("measure", canonical(problem), "relaxed-topk",
                                     "wrong family") for problem in PROBLEMS]
                            + [Skipped("measure", canonical(PROBLEMS[0]), "unordered-set",
                                       "needs a single variable")])
        store.write_labels(labels)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The report built from the store, and every matplotlib Figure it rendered."""
    directory = tmp_path_factory.mktemp("paper")
    write_store(directory)
    drawn = []
    original = build_module._png_bytes

    def keep(figure):
        drawn.append(figure)
        return original(figure)

    build_module._png_bytes = keep
    try:
        build_report(directory, directory / "report", ("html", "md", "latex", "png"))
    finally:
        build_module._png_bytes = original
    return directory, drawn


def _axes(drawn):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    for figure in drawn:
        if not hasattr(figure.canvas, "get_renderer"):  # closed by the report: attach a canvas
            FigureCanvasAgg(figure)
        figure.canvas.draw()
        for ax in figure.axes:
            if ax.get_visible():
                yield figure, ax


def test_every_figure_type_is_drawn(report):
    _, drawn = report
    titles = {figure._suptitle.get_text().split(" (")[0] for figure in drawn}
    assert len(drawn) == len(figures.FIGURES), titles


def test_no_two_tick_labels_overlap(report):
    _, drawn = report
    checked = 0
    for figure, ax in _axes(drawn):
        renderer = figure.canvas.get_renderer()
        for axis in (ax.xaxis, ax.yaxis):
            shown = figures.labelled_ticks(axis)
            boxes = [t.get_window_extent(renderer) for t in shown]
            for i, a in enumerate(boxes):
                for j, b in enumerate(boxes[i + 1:], i + 1):
                    assert not a.overlaps(b), (ax.get_title(), shown[i].get_text(),
                                               shown[j].get_text())
            checked += 1
    assert checked >= 2 * 10


def test_every_log_axis_has_two_labelled_ticks(report):
    _, drawn = report
    logs = 0
    for _, ax in _axes(drawn):
        for axis in (ax.xaxis, ax.yaxis):
            if axis.get_scale() == "log":
                logs += 1
                texts = [t.get_text() for t in figures.labelled_ticks(axis)]
                assert len(texts) >= 2, (ax.get_title(), axis.axis_name, texts)
    assert logs >= 10


def _legend_colours(drawn) -> dict[str, set]:
    colours: dict[str, set] = {}
    for figure in drawn:
        for legend in figure.legends:
            for handle, text in zip(legend.legend_handles, legend.get_texts()):
                label = text.get_text()
                if label.startswith("guide:"):
                    name = "guide"
                else:
                    name = label.split(":")[0].split(",")[0]
                colour = handle.get_color() if hasattr(handle, "get_color") else \
                    handle.get_facecolor()
                colours.setdefault(name, set()).add(matplotlib_hex(colour))
    return colours


def matplotlib_hex(colour) -> str:
    from matplotlib.colors import to_hex

    return to_hex(colour)


def test_one_colour_per_estimator_name_in_every_figure(report):
    _, drawn = report
    colours = _legend_colours(drawn)
    assert len(colours) >= 12
    for name, seen in colours.items():
        assert len(seen) == 1, (name, seen)
        if name != "guide":
            assert seen == {figures.estimator_style(name)["color"].lower()}
    assert colours["guide"] == {"#000000"}
    estimator_colours = {c for name, seen in colours.items() if name != "guide" for c in seen}
    assert "#000000" not in estimator_colours  # guides are in a style no estimator uses


def test_palette_is_a_function_of_the_name_and_distinct_within_each_family():
    from estimators import ESTIMATORS

    families: dict[str, list[str]] = {}
    for name in ESTIMATORS.names():
        assert name in figures.ESTIMATOR_STYLES, f"{name} has no fixed colour"
        for family in ESTIMATORS.get(name).info.families:
            families.setdefault(family, []).append(name)
    for family, names in families.items():
        colours = [figures.ESTIMATOR_STYLES[n][0] for n in names]
        markers = [figures.ESTIMATOR_STYLES[n][1] for n in names]
        assert len(set(colours)) == len(names), (family, colours)
        assert len(set(markers)) == len(names), (family, markers)
    pairs = list(figures.ESTIMATOR_STYLES.values())
    assert len(set(pairs)) == len(pairs)  # a legend across families is unambiguous
    # an estimator outside the table: the same style on every call, from its name alone
    assert figures.estimator_style("my-estimator") == figures.estimator_style("my-estimator")
    a = figures.palette(["reinforce", "reinforce:baseline=loo", "arm"])
    b = figures.palette(["reinforce", "gumbel-softmax"])
    assert a["reinforce"]["color"] == b["reinforce"]["color"]
    assert a["reinforce:baseline=loo"]["color"] == a["reinforce"]["color"]
    assert a["reinforce:baseline=loo"]["ls"] != a["reinforce"]["ls"]


def test_size_lines_join_only_specs_that_differ_in_size(report):
    _, drawn = report
    size_figure = next(f for f in drawn if f._suptitle.get_text().startswith("Time and peak"))
    titles = [ax.get_title() for ax in size_figure.axes if ax.get_visible()]
    # dim=2 and dim=8 form one line; the target=0.3 spec has one size only: no row of its own
    assert len(titles) == 2 and titles[0].startswith("bernoulli-toy:"), titles
    assert "target" not in " ".join(titles)


def test_training_panels_name_their_metric(report):
    _, drawn = report
    training = next(f for f in drawn if f._suptitle.get_text().startswith("Training"))
    labels = {ax.get_ylabel().replace("\n", " ") for ax in training.axes if ax.get_visible()}
    assert labels == {"test error of 3-nearest-neighbour classification (lower is better)"}
    list(_axes([training]))  # drawn on a canvas
    renderer = training.canvas.get_renderer()
    for ax in training.axes:  # the y label stays beside its axes, not above them
        label, box = ax.yaxis.label.get_window_extent(renderer), ax.get_window_extent(renderer)
        assert label.y1 <= box.y1 + 1 and label.y0 >= box.y0 - 1


def _markdown_sections(text: str) -> list[tuple[str, list[list[str]]]]:
    sections = []
    for line in text.splitlines():
        if line.startswith("### "):
            sections.append((line[4:], []))
        elif line.startswith("| ") and sections and not line.startswith("| estimator"):
            sections[-1][1].append([c.strip() for c in line.strip("|").split(" | ")])
    return sections


def test_tables_are_in_numeric_order_of_samples(report):
    directory, _ = report
    sections = _markdown_sections((directory / "report" / "tables.md").read_text())
    captions = [c for c, _ in sections if "per estimate" in c]
    first = [c for c in captions if c.startswith(PROBLEMS[0] + ", ")]
    assert [int(c.split(", ")[1].split()[0]) for c in first] == [1, 4, 16]
    page = (directory / "report" / "index.html").read_text()
    positions = [page.index(f"{PROBLEMS[0]}, {n} sample") for n in (1, 4, 16)]
    assert positions == sorted(positions)
    tex = (directory / "report" / "tables.tex").read_text()
    positions = [tex.index(f"{PROBLEMS[0]}, {n} sample") for n in (1, 4, 16)]
    assert positions == sorted(positions)


def test_reference_rows_are_marked_last_and_never_bold(report):
    directory, _ = report
    sections = _markdown_sections((directory / "report" / "tables.md").read_text())
    measured = [(c, rows) for c, rows in sections if "per estimate" in c]
    assert measured
    for caption, rows in measured:
        names = [r[0].strip("*") for r in rows]
        assert names[-1] == "exact" + REFERENCE, (caption, names)
        assert not any(cell.startswith("**") for cell in rows[-1]), (caption, rows[-1])
        variances = [float(r[2].strip("*")) for r in rows[:-1]]
        bold = [r[2].startswith("**") for r in rows[:-1]]
        assert bold == [v == min(variances) for v in variances]  # the best non-reference


def test_one_label_per_configured_estimator_everywhere(report):
    directory, _ = report
    frame = load(directory)
    assert set(frame.estimator_label) >= set(NAMES)
    md = (directory / "report" / "tables.md").read_text()
    tex = (directory / "report" / "tables.tex").read_text()
    page = (directory / "report" / "index.html").read_text()
    for text in (md, page):
        assert "extra=0" not in text.split("Provenance")[0]  # labels, never canonical specs
        assert "| reinforce |" in text or ">reinforce<" in text
        assert "reinforce:baseline=loo" in text
    assert "reinforce:baseline=loo" in tex and "extra=0" not in tex


def test_final_metrics_table_per_task(report):
    directory, _ = report
    sections = _markdown_sections((directory / "report" / "tables.md").read_text())
    final = [(c, rows) for c, rows in sections if "final metrics" in c]
    assert [c for c, _ in final] == ["knn-subset: final metrics, mean ± s.e. over seeds"]
    rows = {r[0].strip("*"): r for r in final[0][1]}
    # test_accuracy at step 20: 0.52 and 0.50 for the two seeds -> mean 0.51, s.e. 0.01
    assert rows["reinforce:baseline=loo"][1] == "2"
    assert rows["reinforce:baseline=loo"][3].strip("*") == "0.51 ± 0.01"
    header = (directory / "report" / "tables.md").read_text().split("final metrics")[1]
    assert "test accuracy ↑" in header


def test_skipped_pairs_grouped_by_reason_and_cells_have_a_kind(report):
    directory, _ = report
    page = (directory / "report" / "index.html").read_text()
    assert "<summary>3 pairs: wrong family</summary>" in page
    assert "<summary>1 pair: needs a single variable</summary>" in page
    assert page.index("3 pairs: wrong family") < page.index("1 pair: needs a single")
    assert "<td>training</td>" in page and "<td>measurement</td>" in page


def test_figures_are_public_calls_on_the_loaded_frame(report):
    directory, _ = report
    frame = load(directory)
    figure = figures.variance_vs_samples(frame)
    assert figure.axes and figure._suptitle.get_text().startswith("Variance")
    figure = figures.training_curves(load(directory, "train"))
    assert len([ax for ax in figure.axes if ax.get_visible()]) == 2
    with pytest.raises(figures.NotDrawable, match="no successful measurements"):
        figures.mse_vs_time(frame.iloc[0:0])


def test_the_page_escapes_what_the_store_says(tmp_path):
    write_store(tmp_path)
    with Store(tmp_path) as store:
        cell = _cell("measure", canonical(PROBLEMS[0]), "reinforce", 2, 0, replicates=1000)
        store.write(cell, {"status": "failed", "error": "<script>alert(1)</script>",
                           "traceback": "", "started": 0, "finished": 1})
    build_report(tmp_path, tmp_path / "report", ("html",))
    page = (tmp_path / "report" / "index.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.startswith("<!DOCTYPE html>")


def test_skip_reasons_group_by_their_kind():
    from reports.build import reason_kind

    a = ("estimator 'arm' does not support the subset family of problem 'subset-linear' "
         "(it supports: bernoulli)")
    b = ("estimator 'neuralsort' does not support the count family of problem "
         "'poisson-quadratic:dim=3' (it supports: permutation)")
    assert reason_kind(a) == reason_kind(b) == \
        "estimator … does not support the family of problem …"
    c = "num_samples=1: reinforce:baseline=loo,set_probability=auto needs num_samples >= 2"
    d = "num_samples=1: unordered-set needs num_samples >= 2"
    assert reason_kind(c) == reason_kind(d) == "num_samples: … needs num_samples >= n"
    assert reason_kind("wrong family") == "wrong family"


def test_the_docs_figure_example_runs(report, tmp_path, monkeypatch):
    """docs/reports.md's example of figures from Python, run on this store."""
    directory, _ = report
    readme = (Path(__file__).resolve().parents[2] / "docs/reports.md").read_text(encoding="utf-8")
    block = next(part.split("```")[0] for part in readme.split("```python\n")[1:]
                 if "reports.figures import" in part)
    monkeypatch.chdir(tmp_path)
    exec(compile(block.replace('"results/quick"', repr(str(directory))), "docs/reports.md", "exec"), {})
    assert (tmp_path / "variance.pdf").stat().st_size > 1000
    assert (tmp_path / "mse.png").stat().st_size > 1000
