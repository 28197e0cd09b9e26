"""Property: whatever a user types, the command line answers with success (exit 0) or one line
``estibench: error: ...`` and exit 2, never a traceback (STYLE.md item 12, issue 15).

Inputs are built to reach deep code, not only the parsers: real registry names with their
real option keys (and some unknown ones), values at the edges (0, -1, 1e30, 1e-300, nan, inf,
2^64, unicode), CLI argument lists assembled from the real flags, and study files made from a
valid template with mutated values. Every example is cheap: 2 replicates, no timing or memory
profile, the synthetic problems only (the real tasks train a network or load a data set when
built; tests/problems/test_real.py covers their options). The examples are derandomized, so a
run in CI sees the same inputs every time.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from datetime import timedelta
from pathlib import Path

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from estimators import ESTIMATORS
from harness.cli import main
from estimators.registry import format_value
from problems import PROBLEMS

SYNTHETIC = sorted(cls.info.name for cls in PROBLEMS if cls.__module__.count(".") == 1)
ESTIMATOR_NAMES = ESTIMATORS.names()

# hypothesis draws early entries more often: the extremes come first
EDGE_VALUES = ["1e30", "40", "-800", "80", "-1e30", "1e-300", "nan", "inf", "-1", "0",
               "18446744073709551616", "5e-324", "1e308", "-inf", "99999999999999999999", "-0",
               "0.5", "2", "true", "false", "none", "loo", "lump", "x", "é", "∞", "", "1_000",
               "0x10", " 2 "]

# ~10 s in all on a loaded 2-core machine; an example past 30 s is a hang, not slowness.
FUZZ = settings(
    max_examples=150, derandomize=True, database=None, deadline=timedelta(seconds=30),
    suppress_health_check=[HealthCheck.too_slow],
)


def mostly(good: st.SearchStrategy, bad: st.SearchStrategy) -> st.SearchStrategy:
    """Usually ``good``, one time in five ``bad``: one mistake at a time reaches deeper."""
    return st.integers(0, 4).flatmap(lambda i: good if i < 4 else bad)  # 0 is drawn most


DEFAULTS = {cls.info.name: {o.name: o for o in cls.info.options}
            for cls in (*PROBLEMS, *ESTIMATORS)}


def spec(names: list[str]) -> st.SearchStrategy[str]:
    """``name[:key=value,...]``: a real name with real keys and edge values, or a mistake."""

    @st.composite
    def build(draw) -> str:
        name = draw(mostly(st.sampled_from(names),
                           st.sampled_from(["", "bernouli-toy", "Reinforce", "a:b:c"])))
        options = DEFAULTS.get(name, {})
        keys = draw(st.lists(mostly(st.sampled_from(sorted(options) or ["dim"]),
                                    st.sampled_from(["bogus", "k", "dim", ""])),
                             min_size=1, max_size=2, unique=True))
        items = []
        for key in keys:
            option = options.get(key)
            known = [] if option is None else [option.default, *(option.choices or ())]
            good = st.sampled_from([format_value(v) for v in known] + ["1", "2", "3", "0.5"])
            value = draw(st.sampled_from(EDGE_VALUES) | good | st.text(max_size=3))
            items.append(f"{key}={value}")
        text = name + (":" + ",".join(items) if items else "")
        return draw(mostly(st.just(text), st.text(max_size=8).map(lambda junk: text + junk)))

    return build()


def run_cli(argv: list[str]) -> tuple[int, str]:
    """``main(argv)`` in-process: (exit code, stderr); argparse's exits count as exit codes."""
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 2
    return code, err.getvalue()


def assert_clean(argv: list[str]) -> int:
    code, err = run_cli(argv)
    lines = err.strip().splitlines()
    if code != 0:
        assert code == 2, f"{argv}: exit {code}\n{err}"
        assert len(lines) == 1 and lines[0].startswith("estibench: error: "), f"{argv}:\n{err}"
    assert "Traceback" not in err, f"{argv}:\n{err}"
    words = " ".join(a for a in argv[:2] if a.isidentifier())
    event(f"{words}: exit {code}")  # pytest --hypothesis-show-statistics: what was reached
    return code


@contextlib.contextmanager
def working_directory(path: str):
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


CHEAP = ["--replicates", "2", "--no-timing", "--no-memory", "--json",
         "--reference-replicates", "2"]


FAMILY = {cls.info.name: cls.info.family for cls in PROBLEMS}
SUPPORTS = {cls.info.name: cls.info.families for cls in ESTIMATORS}


@st.composite
def measure_pair(draw) -> tuple[str, str]:
    """A problem spec and, mostly, an estimator that supports its family (else any)."""
    problem = draw(spec(SYNTHETIC))
    family = FAMILY.get(problem.partition(":")[0])
    fitting = sorted((name for name, families in SUPPORTS.items() if family in families),
                     key=lambda name: name != "reinforce")  # one mistake at a time: at defaults
    return problem, draw(mostly(st.sampled_from(fitting or ["reinforce"]), spec(ESTIMATOR_NAMES)))


@FUZZ
@example(pair=("poisson-quadratic:rate=1e30", "reinforce"), num_samples="1", dtype="float32")
@example(pair=("negbinomial-quadratic:logit=40", "reinforce"), num_samples="1", dtype="float64")
@example(pair=("negbinomial-quadratic:logit=80", "reinforce"), num_samples="1", dtype="float32")
@example(pair=("geometric-quadratic:logit=-800", "reinforce"), num_samples="1", dtype="float32")
@given(pair=measure_pair(), num_samples=st.sampled_from(["1", "2", "0", "-1", "3", "x"]),
       dtype=st.sampled_from(["float32", "float64"]))
def test_measure_with_arbitrary_specs_is_clean(pair, num_samples, dtype):
    assert_clean(["measure", *pair, "--num-samples", num_samples, "--dtype", dtype, *CHEAP])


FLAGS = ["--replicates", "--num-samples", "--seed", "--device", "--dtype", "--format", "--out",
         "--executor", "--workers", "--resume", "--json", "--help", "--no-timing", "--bogus",
         "--memory-budget", "--reference-replicates"]
WORDS = ["measure", "list", "study", "validate", "run", "report", "export", "estimators",
         "problems", "bernoulli-toy", "reinforce", "poisson-quadratic:rate=1e30", "2", "-1",
         "0", "1e30", "nan", "cpu", "cuda", "cuda:7", "npu", "float16", "csv", "parquet",
         "html,md", "pdf,xyz", "", "/proc/x", "/proc", "/", "-", "ü", "1GB", "-5GB", "0B",
         "inline", "ray", "process"]


@FUZZ
@given(argv=st.lists(st.sampled_from(FLAGS + WORDS), min_size=0, max_size=7),
       head=st.sampled_from([[], ["measure", "bernoulli-toy:dim=2", "reinforce"],
                             ["study", "validate"], ["report"], ["export"], ["list"]]))
def test_arbitrary_argument_lists_are_clean(argv, head):
    with tempfile.TemporaryDirectory() as tmp, working_directory(tmp):  # relative paths land here
        full = head + argv
        if full[:1] == ["measure"] or "measure" in full:
            full = full + CHEAP  # whatever the rest says, keep a measurement cheap
        if ("run" in full and "study" not in full[:1]) or full[:2] == ["study", "run"]:
            return  # the main job and study runs are exercised with small studies below
        assert_clean(full)


STUDY_TEMPLATE = """name = {name}
seed = {seed}
replicates = {replicates}
dtype = {dtype}
timing = false
memory = false

[[grid]]
problems = [{problems}]
estimators = [{estimators}]
num_samples = [{num_samples}]
seeds = [{seeds}]
{sweep}
{training}"""

TRAINING = """[[training]]
problems = [{problems}]
estimators = [{estimators}]
steps = {steps}
eval_every = {eval_every}
variance_replicates = {replicates}
learning_rate = {learning_rate}
"""

TOML_VALUES = ["0", "1", "-1", "1e30", "nan", "inf", "-inf", "18446744073709551616",
               "9223372036854775807", '"x"', '""', '"ü"', "true", "[]", "{}", "1.5", '"float16"',
               '"bad name!"']


def toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


GOOD_GRIDS = [
    (["bernoulli-toy:dim=2"], ["reinforce", "gumbel-softmax"]),
    (["poisson-quadratic:dim=2"], ["gengs", "reinforce:baseline=loo"]),
    (["subset-linear:n=5,k=2"], ["relaxed-topk", "reinforce"]),
    (["permutation-sort:n=3"], ["neuralsort", "softsort"]),
    (["categorical-linear:k=3"], ["exact", "st-gumbel-softmax"]),
]
GOOD_FIELDS = {
    "name": ['"fuzz"', '"fuzz-2.b"'], "seed": ["0", "7"], "replicates": ["2", "3"],
    "dtype": ['"float32"', '"float64"'], "num_samples": ["1", "2"], "seeds": ["0", "1"],
    "steps": ["1", "2"], "eval_every": ["1", "2"], "variance_replicates": ["2", "3"],
    "learning_rate": ["0.05", "0.5"],
}
BAD_SWEEPS = ["sweep = { temperature = [0, -1] }", "sweep = { bogus = [1] }",
              "sweep = { tail = [1e30] }", "sweep = 3", "sweep = { temperature = [] }",
              "sweep = { temperature = [1e-300, 1e30] }"]


@st.composite
def study_text(draw) -> str:
    """A valid study with at most two of its fields (or specs) changed into something else."""
    mutated = set(draw(st.lists(
        st.sampled_from([*GOOD_FIELDS, "problems", "estimators", "sweep"]), max_size=2,
        unique=True)))

    def value(field: str) -> str:
        # 2^63 training steps, or variance replicates (drawn in chunks, unbounded by the memory
        # budget), are accepted and run for ever: reported, not a traceback; not drawn here
        endless = field in ("steps", "variance_replicates")
        bad = st.sampled_from([v for v in TOML_VALUES if not endless or len(v) < 6])
        return draw(bad if field in mutated else st.sampled_from(GOOD_FIELDS[field]))

    def specs(good: list[str], field: str, names: list[str]) -> str:
        chosen = list(good)
        if field in mutated:
            chosen[draw(st.integers(0, len(chosen) - 1))] = draw(spec(names))
        return ", ".join(toml_string(s) for s in chosen)

    problems, estimators = draw(st.sampled_from(GOOD_GRIDS))
    sweep = draw(st.sampled_from(BAD_SWEEPS) if "sweep" in mutated
                 else st.sampled_from(["", "sweep = { temperature = [0.5, 1.0] }"]))
    training = ""
    if draw(st.booleans()):
        training = TRAINING.format(
            problems=specs(problems, "problems", SYNTHETIC),
            estimators=specs(estimators, "estimators", ESTIMATOR_NAMES),
            steps=value("steps"), eval_every=value("eval_every"),
            replicates=value("variance_replicates"), learning_rate=value("learning_rate"))
    text = STUDY_TEMPLATE.format(
        name=value("name"), seed=value("seed"), replicates=value("replicates"),
        dtype=value("dtype"), problems=specs(problems, "problems", SYNTHETIC),
        estimators=specs(estimators, "estimators", ESTIMATOR_NAMES),
        num_samples=value("num_samples"), seeds=value("seeds"), sweep=sweep, training=training,
    )
    if draw(st.integers(0, 9)) == 9:  # now and then, damage the text itself
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.text(max_size=6)) + text[cut:]
    return text


@settings(FUZZ, max_examples=60)
@given(text=study_text())
def test_arbitrary_study_files_are_clean(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "study.toml"
        path.write_text(text, encoding="utf-8")
        code = assert_clean(["study", "validate", str(path)])
        if code == 0:
            assert_clean(["study", "run", str(path), "--out", str(Path(tmp) / "store"),
                          "--executor", "inline"])
