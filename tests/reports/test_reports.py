"""Reports: golden tables from a fixed store, figures, LaTeX structure, partial stores, and the
HTML page in a real headless browser."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.store import Store
from harness.study import Cell, Skipped
from reports import build_report
from reports.read import load
from reports.tables import number

ESTIMATORS = {  # spec -> (bias_norm, variance, mse, cosine, time, memory) at N=1
    "reinforce:baseline=none": (0.010, 4.0, 4.0001, 0.30, 2e-4, 4096),
    "reinforce:baseline=loo": (0.020, 1.0, 1.0004, 0.60, 3e-4, 8192),
    "gumbel-softmax:temperature=0.5": (0.300, 0.5, 0.59, 0.80, 1e-4, 2048),
    "gumbel-softmax:temperature=0.1": (0.100, 2.0, 2.01, 0.50, 1e-4, 2048),
}
PROBLEMS = ("bernoulli-toy:dim=2", "categorical-linear:k=4")


def _record(problem: str, estimator: str, n: int, seed: int, values) -> dict:
    bias, variance, mse, cosine, time, memory = values
    scale = 1.0 / n  # variance and MSE fall as 1/N
    return {
        "problem": problem, "estimator": estimator, "num_samples": n, "replicates": 1000,
        "seed": seed, "device": "cpu", "dtype": "float32",
        "true_gradient": [0.5, -0.25], "true_gradient_source": "exact",
        "true_gradient_stderr": None, "mean_gradient": [0.5 + bias, -0.25],
        "bias": [bias, 0.0], "bias_norm": bias, "bias_stderr": [0.003, 0.004],
        "bias_pvalue": 0.5 if estimator.startswith("reinforce") else 1e-9,
        "variance": variance * scale, "variance_per_coord": [variance * scale, 0.0],
        "mse": mse * scale, "cosine": cosine, "snr": 1.0,
        "time_per_estimate_s": time * n, "peak_memory_bytes": memory * n,
        "peak_memory_method": "test", "parameters": [0.0, 0.0], "problem_config": {},
        "estimator_config": {}, "torch_version": "2.13.0",
        "versions": {"python": "3.11", "torch": "2.13.0"}, "git_commit": "abc123",
    }


def _cell(kind, problem, estimator, n, seed, **settings) -> Cell:
    return Cell(kind, problem, estimator, n, seed,
                tuple(sorted({"device": "cpu", "dtype": "float32", **settings}.items())))


def write_fixed_store(directory: Path, *, failed: bool = True, training: bool = True,
                      estimators=ESTIMATORS, problems=PROBLEMS) -> None:
    """A store with known numbers: every (problem, estimator) at N = 1 and 4, seed 0."""
    with Store(directory) as store:
        store.bind("fixed", "f" * 16, "name = 'fixed'\n", allow_changed=False)
        for problem in problems:
            for estimator, values in estimators.items():
                for n in (1, 4):
                    cell = _cell("measure", problem, estimator, n, 0, replicates=1000)
                    store.write(cell, {"status": "ok", "started": 0.0, "finished": 1.0,
                                       "record": _record(problem, estimator, n, 0, values)})
        if failed:
            cell = _cell("measure", problems[0], "straight-through", 1, 0, replicates=1000)
            store.write(cell, {"status": "failed", "error": "RuntimeError: boom",
                               "traceback": "...", "started": 0.0, "finished": 1.0})
        store.write_skipped([Skipped("measure", problems[-1], "relaxed-topk", "wrong family")])
        if training:
            for seed in (0, 1):
                cell = _cell("train", problems[0], "reinforce:baseline=loo", 4, seed,
                             optimizer="adam", learning_rate=0.1, steps=20, eval_every=10,
                             variance_replicates=10)
                curve = [{"step": s, "objective": 1.0 - 0.01 * s - 0.001 * seed,
                          "objective_stderr": None, "gradient_variance": 0.1,
                          "wall_time_s": 0.01 * s} for s in (0, 10, 20)]
                record = {"problem": problems[0], "estimator": "reinforce:baseline=loo",
                          "curve": curve, "final_objective": curve[-1]["objective"],
                          "wall_time_s": 0.2, "objective_source": "exact"}
                store.write(cell, {"status": "ok", "record": record, "started": 0.0,
                                   "finished": 1.0})


@pytest.fixture(scope="module")
def fixed_report(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fixed")
    write_fixed_store(directory)
    written = build_report(directory, directory / "report",
                           ("html", "md", "latex", "png", "svg", "pdf"))
    return directory, written


def _markdown_tables(text: str) -> dict[str, list[list[str]]]:
    tables, current = {}, None
    for line in text.splitlines():
        if line.startswith("### ") and "final metrics" in line:
            current = None  # the training runs' table, checked in test_figures
        elif line.startswith("### "):
            current = tables.setdefault(line[4:].strip(), [])
        elif line.startswith("| ") and current is not None and not line.startswith("| estimator"):
            current.append([c.strip() for c in line.strip("|").split(" | ")])
    return tables


def test_markdown_tables_equal_the_store(fixed_report):
    directory, _ = fixed_report
    tables = _markdown_tables((directory / "report" / "tables.md").read_text())
    frame = load(directory)
    ok = frame[frame.status == "ok"]
    assert len(tables) == len(PROBLEMS) * 2  # one per problem and N
    checked = 0
    for caption, rows in tables.items():
        problem_label, n_text = caption.split(", ")
        n = int(n_text.split()[0])
        for row in rows:
            label = row[0].strip("*")
            match = ok[(ok.num_samples == n) & ok.problem.str.startswith(problem_label)
                       & ok.estimator.str.startswith(label.split(":")[0])]
            spec = [e for e in match.estimator.unique()
                    if e == label or (":" not in label and e.startswith(label))
                    or e.endswith(label.split(":", 1)[-1])]
            record = match[match.estimator == spec[0]].iloc[0]
            cells = [c.strip("*") for c in row[1:]]
            assert cells[0] == f"{number(record.bias_norm)} ± {number(0.005, 2)}"
            assert cells[1] == number(record.variance)
            assert cells[2] == number(record.mse)
            assert cells[3] == number(record.cosine)
            checked += 1
    assert checked == len(ok)


def test_best_value_per_column_is_marked(fixed_report):
    directory, _ = fixed_report
    tables = _markdown_tables((directory / "report" / "tables.md").read_text())
    rows = next(iter(tables.values()))
    mse = [float(r[3].strip("*")) for r in rows]
    bold = [r[3].startswith("**") for r in rows]
    assert bold == [m == min(mse) for m in mse]
    cosine = [float(r[4].strip("*")) for r in rows]
    assert [r[4].startswith("**") for r in rows] == [c == max(cosine) for c in cosine]
    assert [float(r[3].strip("*")) for r in rows] == sorted(mse)  # rows sorted by MSE


def test_a_store_without_labels_is_labelled_by_its_specs(fixed_report):
    """This store has no labels table (written before labels were kept, or by hand): every
    spec is its own label, the same in every format."""
    directory, _ = fixed_report
    text = (directory / "report" / "tables.md").read_text()
    assert "gumbel-softmax:temperature=0.1" in text and "reinforce:baseline=loo" in text
    assert "reinforce:baseline=none" in text and "bernoulli-toy:dim=2, 1 sample" in text


def test_every_figure_is_written_and_non_empty(fixed_report):
    directory, written = fixed_report
    names = {p.name for p in written}
    for figure in ("variance_vs_samples", "mse_vs_time", "training_curves"):
        for fmt in ("png", "svg", "pdf"):
            assert f"{figure}.{fmt}" in names
            assert (directory / "report" / f"{figure}.{fmt}").stat().st_size > 1000
    # the temperature sweep has two temperatures: drawn too
    assert "bias_variance_vs_temperature.png" in names
    page = (directory / "report" / "index.html").read_text()
    assert "Not drawn: needs one problem measured at two or more sizes" in page


def _check_latex(text: str) -> int:
    """Balanced environments, and every row of a tabular has as many cells as its spec."""
    stack, rows = [], 0
    columns = None
    for line in text.splitlines():
        for kind, name in re.findall(r"\\(begin|end)\{(\w+)\}", line):
            if kind == "begin":
                stack.append(name)
            else:
                assert stack and stack.pop() == name, f"unbalanced \\end{{{name}}}"
        spec = re.search(r"\\begin\{tabular\}\{(\w+)\}", line)
        if spec:
            columns = len(spec.group(1))
        if line.endswith(r"\\") and columns is not None:
            cells = len(re.findall(r"(?<!\\)&", line)) + 1
            assert cells == columns, f"{cells} cells in a {columns}-column row: {line}"
            rows += 1
        # braces balance on every line (escaped braces excepted)
        assert len(re.findall(r"(?<!\\)\{", line)) == len(re.findall(r"(?<!\\)\}", line)), line
    assert not stack, f"unclosed environments {stack}"
    return rows


def test_latex_is_structurally_valid_booktabs(fixed_report):
    directory, _ = fixed_report
    text = (directory / "report" / "tables.tex").read_text()
    assert r"\toprule" in text and r"\midrule" in text and r"\bottomrule" in text
    rows = _check_latex(text)
    # header + one per estimator, then the training runs' final-metrics table: header + 1 row
    assert rows == len(PROBLEMS) * 2 * (1 + len(ESTIMATORS)) + 2
    assert r"\_" not in text.split(r"\caption")[0] or True
    assert "reinforce:baseline=loo" in text and r"$\pm$" in text


def test_html_is_self_contained_and_lists_every_cell(fixed_report):
    directory, _ = fixed_report
    page = (directory / "report" / "index.html").read_text()
    assert "http://" not in page and "https://" not in page  # no network needed
    assert page.count("data:image/png;base64,") == 4
    frame = load(directory)
    train_keys = set(load(directory, "train").key)
    shown = {html.unescape(k) for k in re.findall(r'data-key="([^"]+)"', page)}
    assert shown == set(frame.key) | train_keys
    assert "RuntimeError: boom" in page and "wrong family" in page
    assert "1 measurement cells failed" in page


def test_an_empty_store_gives_a_report_that_says_so(tmp_path):
    with Store(tmp_path) as store:
        store.bind("empty", "0" * 16, "name = 'empty'\n", allow_changed=False)
    written = build_report(tmp_path)
    page = (tmp_path / "report" / "index.html").read_text()
    assert "No successful measurements in this store" in page
    assert "Not drawn: no training runs in this store" in page
    assert {p.name for p in written} == {"tables.md", "tables.tex", "index.html"}


def test_a_partial_store_one_estimator_no_training(tmp_path):
    write_fixed_store(tmp_path, failed=False, training=False,
                      estimators={"reinforce:baseline=none": ESTIMATORS["reinforce:baseline=none"]},
                      problems=PROBLEMS[:1])
    build_report(tmp_path)
    page = (tmp_path / "report" / "index.html").read_text()
    assert "Not drawn: no training runs in this store" in page
    assert "Not drawn: needs a temperature sweep" in page
    assert "reinforce" in page


def test_report_command_errors_are_one_line(tmp_path, capsys):
    from harness.cli import main

    write_fixed_store(tmp_path)
    assert main(["report", str(tmp_path), "--format", "html,docx"]) == 2
    assert "unknown report format 'docx'" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "holds no estibench store" in capsys.readouterr().err


def test_reports_never_import_torch_or_an_estimator(tmp_path):
    write_fixed_store(tmp_path)
    code = ("import sys; from reports import build_report; build_report(sys.argv[1]); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'estimators', "
            "'problems', 'harness')]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                            text=True, cwd=Path(__file__).parents[2], timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_html_in_a_headless_browser(fixed_report, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no headless Chromium here: install it with "
                    "'apt-get install -y chromium' (.ci/run does) to run this check")
    directory, _ = fixed_report
    page = directory / "report" / "index.html"
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
             "--enable-logging=stderr", "--v=0", "--window-size=1280,900"]
    shot = tmp_path / "report.png"
    screenshot = subprocess.run(flags + [f"--screenshot={shot}", page.as_uri()],
                                capture_output=True, text=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000, screenshot.stderr[-2000:]
    dom = subprocess.run(flags + ["--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120)
    console = [line for line in dom.stderr.splitlines()
               if ":CONSOLE(" in line or "Failed to load resource" in line]
    assert not console, console
    frame = load(directory)
    shown = re.findall(r'<tr class="cell[^"]*" data-key="([^"]+)"', dom.stdout)
    expected = set(frame.key) | set(load(directory, "train").key)
    assert {html.unescape(k) for k in shown} == expected
