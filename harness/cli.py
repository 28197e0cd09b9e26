"""The ``estibench`` command line.

    estibench run [--out DIR] [--executor inline|process|ray] [--workers N]
    estibench study validate FILE
    estibench study run FILE --out DIR [--resume] [--executor ...] [--workers N]
    estibench report DIR [--out DIR] [--format html,md,latex,png,svg,pdf] [--baseline BASE]
    estibench compare BASE NEW [--variance-factor F] [--time-factor F] [--alpha A]
                      [--no-time] [--format console|md|json]
    estibench check SPEC [--partner SPEC] [--checks LIST] [--kind estimator|problem]
    estibench export DIR [--format csv|parquet] [--out DIR]
    estibench list [estimators|problems]
    estibench measure PROBLEM_SPEC ESTIMATOR_SPEC [--num-samples N] [--replicates R]
                      [--seed S] [--device cpu|cuda] [--dtype float32|float64] [--json]
                      [--memory-budget SIZE] [--reference-replicates R] [--reference-seed S]

``estibench`` alone prints this help (exit status 0). A user's mistake (unknown name, bad
option, incompatible pair, unavailable device) prints one line, ``estibench: error: ...``, and
exits with status 2; tracebacks are for our bugs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from estimators import ESTIMATORS
from estimators.errors import UserError
from problems import PROBLEMS
from reports.units import number, seconds, size


def _console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)


def command_list(args: argparse.Namespace) -> int:
    """Each registered estimator or problem: its name and traits on one line, then its
    description and options, indented.

    On a terminal a line longer than the window wraps with its indent kept. Piped or redirected,
    nothing wraps and there is no styling: one entry per line, the same on every machine, so
    ``estibench list | grep pathwise`` finds whole lines.
    """
    from rich.text import Text

    which = [args.what] if args.what else ["estimators", "problems"]
    lines: list[tuple[int, int, Text]] = []  # (indent, indent of continuation lines, text)
    for what in which:
        registry = ESTIMATORS if what == "estimators" else PROBLEMS
        lines.append((0, 0, Text(what, style="bold underline")))
        for cls in registry:
            info = cls.info
            if what == "estimators":
                traits = [", ".join(info.families), "unbiased" if info.unbiased else "biased"]
                traits.append("pathwise" if info.pathwise else "not pathwise")
                per_sample = info.evaluations_per_sample
                traits.append(f"f evaluations: {info.evaluations or 'depends on the problem'}"
                              if per_sample is None else f"f evaluations: {per_sample} per sample")
            else:
                traits = [info.family, "exact gradient" if info.exact else "reference gradient"]
            lines.append((2, 4, Text.assemble((info.name, "bold"), f"  ({'; '.join(traits)})")))
            lines.append((6, 8, Text(info.description)))
            for option in info.options:
                lines.append((6, 8, Text(f"{option.describe()}: {option.doc}")))
        lines.append((0, 0, Text()))
    _print_indented(_console(), lines)
    return 0


def _print_indented(console, lines) -> None:
    """Print (indent, continuation indent, Text) lines: wrapped to a terminal's width with the
    indents kept, or, when the output is not a terminal, one line each, however long."""
    from rich.text import Text

    for indent, hanging, text in lines:
        if not console.is_terminal:
            console.print(Text(" " * indent) + text, soft_wrap=True)
            continue
        for number, line in enumerate(text.wrap(console, max(console.width - hanging, 20))):
            line.rstrip()  # the space a line was broken at
            console.print(Text(" " * (indent if number == 0 else hanging)) + line,
                          soft_wrap=True)


def render_record(record: dict) -> None:
    """Print a record as two readable tables: the summary, then per coordinate (if few)."""
    from rich.table import Table

    console = _console()
    console.print(f"[bold]{record['estimator']}[/bold] on [bold]{record['problem']}[/bold]")
    summary = Table(show_header=False)
    summary.add_column("metric", style="bold")
    summary.add_column("value")
    rows = [
        ("samples per estimate", record["num_samples"]),
        ("replicates", record["replicates"]),
        ("seed", record["seed"]),
        ("device / dtype", f"{record['device']} / {record['dtype']}"),
        ("true gradient", record["true_gradient_source"]),
        ("bias norm", number(record["bias_norm"], 4)),
        ("bias p-value (H0: unbiased)", number(record["bias_pvalue"], 3)),
        ("variance (trace)", number(record["variance"], 4)),
        ("MSE", number(record["mse"], 4)),
        ("cosine to true", number(record["cosine"], 4)),
        ("SNR", number(record["snr"], 4)),
        ("time per estimate", seconds(record["time_per_estimate_s"])),
        ("peak memory per estimate", size(record["peak_memory_bytes"])),
    ]
    for name, value in rows:
        summary.add_row(name, str(value))
    console.print(summary)
    if len(record["true_gradient"]) <= 12:
        coords = Table(title="per coordinate", title_justify="left")
        for column in ("i", "θ", "true", "mean", "bias ± s.e.", "variance"):
            coords.add_column(column, justify="right")
        for i, row in enumerate(
            zip(
                record["parameters"],
                record["true_gradient"],
                record["mean_gradient"],
                record["bias"],
                record["bias_stderr"],
                record["variance_per_coord"],
            )
        ):
            theta, true, mean, bias, stderr, var = row
            coords.add_row(
                str(i),
                number(theta, 4),
                number(true, 4),
                number(mean, 4),
                f"{number(bias, 3)} ± {number(stderr, 2)}",
                number(var, 4),
            )
        console.print(coords)


def command_measure(args: argparse.Namespace) -> int:
    from harness.measure import measure

    record = measure(
        args.problem,
        args.estimator,
        num_samples=args.num_samples,
        replicates=args.replicates,
        seed=args.seed,
        device=args.device,
        dtype=args.dtype,
        timing=not args.no_timing,
        memory_profile=not args.no_memory,
        show_progress=True,
        memory_budget=args.memory_budget,
        reference_replicates=args.reference_replicates,
        reference_seed=args.reference_seed,
    )
    if args.json:
        print(json.dumps(record))
    else:
        render_record(record)
    return 0


def command_study_validate(args: argparse.Namespace) -> int:
    from harness.study import load_study

    study = load_study(args.file)
    cells, skipped = study.expand()
    kinds = {kind: sum(c.kind == kind for c in cells) for kind in ("measure", "train", "sample")}
    sampled = f", {kinds['sample']} sample distributions" if kinds["sample"] else ""
    print(f"{args.file}: study {study.name!r} is valid: {len(cells)} cells "
          f"({kinds['measure']} measurements, {kinds['train']} training runs{sampled})")
    if skipped:
        print(f"{len(skipped)} pairs skipped:")
        for s in skipped:
            print(f"  {s.kind}: {s.problem} × {s.estimator}: {s.reason}")
    return 0


def _run_study(study, out: str, args: argparse.Namespace, resume: bool) -> int:
    from harness.runner import run_study

    summary = run_study(
        study, out, executor=args.executor, workers=args.workers, resume=resume,
        allow_changed=args.allow_changed, retry_failed=args.retry_failed,
        ray_address=args.ray_address, memory_budget=args.memory_budget,
    )
    print(summary.line(study.name, Path(out)))
    return 0


def command_study_run(args: argparse.Namespace) -> int:
    from harness.study import load_study

    return _run_study(load_study(args.file), args.out, args, args.resume)


def command_run(args: argparse.Namespace) -> int:
    from harness.study import default_study

    code = _run_study(default_study(), args.out, args, resume=True)
    from harness.summary import print_summary
    from reports import build_report

    print_summary(args.out)
    print("building the report (figures, tables, index.html) ...", flush=True)
    written = build_report(args.out, Path(args.out) / "report")
    print(f"report: {Path(args.out) / 'report' / 'index.html'} ({len(written)} files)")
    return code


@contextlib.contextmanager
def _writing_into(out: Path, what: str) -> Iterator[None]:
    """Create ``out`` and write ``what`` into it; a directory that cannot be created or written
    (a file, a path under /proc, a full disk) is one line, not an OSError."""
    allowed = "--out must name a directory that can be created and written"
    blocker = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise UserError(f"cannot write {what} into {out}: {blocker} is a file, not a "
                        f"directory; {allowed}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create the directory {out} for {what} "
                        f"({(error.strerror or str(error)).lower()}); {allowed}") from None
    try:
        with tempfile.TemporaryFile(dir=out):  # writable? (as root, mode bits say little)
            pass
    except OSError as error:
        raise UserError(f"cannot create files in {out} for {what} "
                        f"({(error.strerror or str(error)).lower()}); {allowed}") from None
    try:
        yield
    except OSError as error:  # a write that fails half-way (a full disk, a directory in the way)
        if error.filename is None or not _inside(error.filename, out):
            raise  # not the output: ours to see
        raise UserError(f"cannot write {error.filename} ({(error.strerror or '').lower()}); "
                        f"{allowed}") from None


def _inside(filename, directory: Path) -> bool:
    path, directory = Path(os.fsdecode(filename)).absolute(), directory.absolute()
    return path == directory or directory in path.parents


def command_report(args: argparse.Namespace) -> int:
    from reports import build_report
    from reports.build import parse_formats
    from reports.read import study_info

    try:
        formats = parse_formats(args.format)
    except ValueError as error:
        raise UserError(str(error)) from None
    study_info(args.directory)  # no store: that message, before anything is created
    if args.baseline is not None:
        study_info(args.baseline)
    out = Path(args.out) if args.out is not None else Path(args.directory) / "report"
    with _writing_into(out, "the report"):
        try:
            written = build_report(args.directory, out, formats, baseline=args.baseline)
        except ValueError as error:  # e.g. the baseline holds another study
            raise UserError(str(error)) from None
    index = [p for p in written if p.name == "index.html"]
    print(f"report: {len(written)} files in {written[0].parent if written else args.out}"
          + (f"; open {index[0]}" if index else ""))
    return 0


def command_export(args: argparse.Namespace) -> int:
    from harness.store import export, study_info

    study_info(args.directory)  # no store: that message, before anything is created
    out = Path(args.out) if args.out is not None else Path(args.directory)
    with _writing_into(out, "the export"):
        written = export(args.directory, args.format, out)
    for path in written:
        print(path)
    return 0


def command_compare(args: argparse.Namespace) -> int:
    """BASE vs NEW with statistical verdicts; exit 1 when a cell is significantly worse."""
    from reports import compare as comparing

    try:
        result = comparing.compare(args.base, args.new, variance_factor=args.variance_factor,
                                   time_factor=args.time_factor, alpha=args.alpha,
                                   timing=not args.no_time)
    except ValueError as error:
        raise UserError(str(error)) from None
    if args.format == "json":
        print(result.to_json())
    elif args.format == "md":
        print(comparing.markdown(result), end="")
    else:
        from rich.console import Console
        from rich.table import Table

        console = Console(highlight=False, soft_wrap=False, width=max(Console().width, 180))
        table = Table(title=f"{result.study}: BASE vs NEW", title_justify="left")
        for i, head in enumerate(comparing.HEADER):
            table.add_column(head, justify="right" if 2 <= i <= 8 else "left",
                             no_wrap=i < 3)
        for row in comparing.rows(result):
            table.add_row(*row, style="red" if row[-1] != "ok" else None)
        console.print(table)
        for t in result.training:
            interval = "" if t.interval is None else (
                f" (95% interval {t.interval[0]:.3g} to {t.interval[1]:.3g})")
            console.print(f"training {t.problem} × {t.estimator}: final objective NEW − BASE "
                          f"= {t.difference:.3g}{interval}")
        for title, items in (("only in BASE", result.only_base),
                             ("only in NEW", result.only_new),
                             ("failed in either store", result.failed)):
            for item in items:
                console.print(f"{title}: {item}")
        console.print(comparing.summary_line(result))
    for cell in result.worse:
        print(f"worse: {cell.problem} × {cell.estimator}, N={cell.num_samples}, "
              f"seed={cell.seed}: {'; '.join(cell.reasons)}", file=sys.stderr)
    return result.exit_code


def command_reproduce(args: argparse.Namespace) -> int:
    """Run the papers' studies and decide their published claims (``harness.reproduce``)."""
    from harness import reproduce

    chosen = reproduce.select(args.names)
    if args.list:
        for line in reproduce.listing(chosen):
            print(line)
        return 0
    reproduce.reproduce(chosen, args.out, budget_minutes=args.budget_minutes,
                        executor=args.executor, workers=args.workers,
                        ray_address=args.ray_address, memory_budget=args.memory_budget,
                        allow_changed=args.allow_changed, retry_failed=args.retry_failed,
                        write=lambda line: print(line, flush=True))
    return 0


def command_check(args: argparse.Namespace) -> int:
    """The conformance checks (``harness.checks``) on one estimator or problem against every
    compatible registered partner: one line per check; exit 1 when one fails."""
    from harness.checks import run_checks

    checks = None if args.checks is None else [c.strip() for c in args.checks.split(",")]
    code = run_checks(args.spec, kind=args.kind, partners=args.partner, checks=checks,
                      write=lambda line: print(line, flush=True))
    if code:
        print(f"estibench: {args.spec}: conformance checks failed (the FAIL lines say why)",
              file=sys.stderr)
    return code


def _memory_budget_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--memory-budget", default=None, metavar="SIZE",
                        help="memory one batched pass may use, e.g. 4GB or 512MiB (default: "
                        "$ESTIBENCH_MEMORY_BUDGET, else half the memory available); a cell "
                        "whose one estimate would not fit stops before drawing")


def _executor_options(parser: argparse.ArgumentParser) -> None:
    from harness.runner import EXECUTORS

    _memory_budget_option(parser)
    parser.add_argument("--executor", default="process", choices=EXECUTORS,
                        help="inline (debugging), process (local pool, default) or ray")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="parallel cells (default: the number of CPU cores)")
    parser.add_argument("--ray-address", default=None, metavar="ADDRESS",
                        help="a Ray cluster to run on (default: start Ray locally)")
    parser.add_argument("--allow-changed", action="store_true",
                        help="continue a store whose study file has changed since")
    parser.add_argument("--retry-failed", action="store_true",
                        help="run failed cells again when resuming")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (``estibench: error: ...``), exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"estibench: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="estibench",
        description="Benchmark gradient estimators for discrete random variables.",
    )
    # Not required: no command at all asks for the help (main prints it, exit status 0).
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    listing = commands.add_parser("list", help="list registered estimators and problems")
    listing.add_argument("what", nargs="?", choices=["estimators", "problems"])
    listing.set_defaults(func=command_list)

    m = commands.add_parser(
        "measure",
        help="bias, variance, time and memory of one estimator on one problem",
        description="Draw R independent gradient estimates at the same parameters and "
        "report bias, variance, MSE, cosine, SNR, time and peak memory of one estimate.",
    )
    m.add_argument("problem", metavar="PROBLEM_SPEC", help="e.g. bernoulli-toy:dim=3")
    m.add_argument("estimator", metavar="ESTIMATOR_SPEC", help="e.g. reinforce:baseline=loo")
    m.add_argument("--num-samples", type=int, default=1, metavar="N",
                   help="samples averaged in one estimate (default 1)")
    m.add_argument("--replicates", type=int, default=1000, metavar="R",
                   help="independent estimates (default 1000)")
    m.add_argument("--seed", type=int, default=0, metavar="S", help="seed (default 0)")
    m.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    m.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                   help="dtype of the estimates (default float32)")
    m.add_argument("--json", action="store_true", help="print the record as one JSON object")
    m.add_argument("--no-timing", action="store_true", help="skip the timing of one estimate")
    m.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    _memory_budget_option(m)
    m.add_argument("--reference-replicates", type=int, default=10_000, metavar="R",
                   help="estimates averaged into the reference gradient of a problem without "
                   "an exact one (default 10000; its standard error is in the record)")
    m.add_argument("--reference-seed", type=int, default=None, metavar="S",
                   help="seed of that reference (default: --seed); a study's records name theirs "
                   "in true_gradient_source")
    m.set_defaults(func=command_measure)

    study = commands.add_parser("study", help="validate or run a study file (TOML)")
    study_commands = study.add_subparsers(dest="study_command", required=True,
                                          metavar="COMMAND", parser_class=_Parser)
    validate = study_commands.add_parser("validate", help="check a study file, count its cells")
    validate.add_argument("file", metavar="FILE")
    validate.set_defaults(func=command_study_validate)
    run = study_commands.add_parser("run", help="run a study into a store directory")
    run.add_argument("file", metavar="FILE")
    run.add_argument("--out", required=True, metavar="DIR", help="store directory")
    run.add_argument("--resume", action="store_true",
                     help="continue a store that already holds cells (finished ones are skipped)")
    _executor_options(run)
    run.set_defaults(func=command_study_run)

    main_job = commands.add_parser(
        "run", help="the main job: run the default study and summarise it",
        description="Run the default study (every estimator on every exact problem, a "
        "temperature sweep and a short training grid) into --out, resuming what is there.")
    main_job.add_argument("--out", default="estibench-results", metavar="DIR",
                          help="store directory (default ./estibench-results)")
    _executor_options(main_job)
    main_job.set_defaults(func=command_run)

    reproducer = commands.add_parser(
        "reproduce", help="run the papers' studies and check their published claims",
        description="Run studies/papers/NAME.toml (default: every paper) into OUT/NAME, "
        "resuming what is there, and decide each [[claim]] from the store: a report per paper "
        "and the table OUT/reproductions.md. Run again to regenerate them.")
    reproducer.add_argument("names", nargs="*", metavar="NAME", help="papers (file stems)")
    reproducer.add_argument("--list", action="store_true",
                            help="list the papers' claims with their sources; run nothing")
    reproducer.add_argument("--out", default="estibench-reproductions", metavar="DIR",
                            help="directory of the papers' stores (default "
                            "./estibench-reproductions)")
    reproducer.add_argument("--budget-minutes", type=float, default=None, metavar="M",
                            help="start no paper's study after M minutes (its claims: not run)")
    _executor_options(reproducer)
    reproducer.set_defaults(func=command_reproduce)

    reporter = commands.add_parser(
        "report", help="figures, tables and a self-contained HTML page from a store",
        description="Build the report of a study's store: figures, Markdown and LaTeX tables "
        "and one self-contained index.html.")
    reporter.add_argument("directory", metavar="DIR", help="the study's store directory")
    reporter.add_argument("--out", default=None, metavar="DIR",
                          help="where to write (default DIR/report)")
    reporter.add_argument("--format", default="html,md,latex,png", metavar="LIST",
                          help="comma-separated: html, md, latex, png, svg, pdf "
                          "(default html,md,latex,png)")
    reporter.add_argument("--baseline", default=None, metavar="BASE",
                          help="a store of the same study: add a BASE vs NEW page "
                          "(compare.html; see estibench compare)")
    reporter.set_defaults(func=command_report)

    exporter = commands.add_parser("export", help="write a store's results as CSV or Parquet")
    exporter.add_argument("directory", metavar="DIR")
    exporter.add_argument("--format", default="csv", choices=["csv", "parquet"])
    exporter.add_argument("--out", default=None, metavar="DIR",
                          help="where to write (default: the store directory)")
    exporter.set_defaults(func=command_export)

    comparer = commands.add_parser(
        "compare", help="compare two stores of one study (BASE, NEW) with statistical verdicts; "
        "exit 1 when a cell is significantly worse")
    comparer.add_argument("base", metavar="BASE")
    comparer.add_argument("new", metavar="NEW")
    comparer.add_argument("--variance-factor", type=float, default=1.2,
                          help="worse when the variance ratio NEW/BASE exceeds this (1.2)")
    comparer.add_argument("--time-factor", type=float, default=1.5,
                          help="worse when the time ratio NEW/BASE exceeds this (1.5)")
    comparer.add_argument("--alpha", type=float, default=1e-3,
                          help="family-wise false-alarm rate, Bonferroni over every test (1e-3)")
    comparer.add_argument("--no-time", action="store_true",
                          help="do not test times (noisy on shared machines); still reported")
    comparer.add_argument("--format", default="console", choices=["console", "md", "json"])
    comparer.set_defaults(func=command_compare)

    checker = commands.add_parser(
        "check", help="run the conformance checks on one estimator or problem (a plug-in's too) "
        "against every compatible registered partner; exit 1 when one fails",
        description="Shapes, dtypes, devices, finite gradients at extreme logits, determinism, "
        "independent replicates, no global RNG, and unbiasedness where info claims it: one "
        "line per check and partner (PASS, FAIL, SKIP or XFAIL, with the reason).")
    checker.add_argument("spec", metavar="SPEC", help="an estimator or problem spec, e.g. "
                         "gumbel-softmax:temperature=0.5")
    checker.add_argument("--partner", action="append", default=None, metavar="SPEC",
                         help="check against this partner only (repeatable; default: every "
                         "compatible registered one)")
    checker.add_argument("--checks", default=None, metavar="LIST",
                         help="comma-separated checks to run (default all): info, shapes, "
                         "finite_gradients, determinism, objective_evaluations, independence, "
                         "batched_loop, global_rng, unbiased")
    checker.add_argument("--kind", default=None, choices=["estimator", "problem"],
                         help="which registry SPEC names, where a name is in both")
    checker.set_defaults(func=command_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # plain `estibench`: a request for help, not a mistake
        parser.print_help()
        return 0
    from reports.read import StoreReadError

    try:
        return args.func(args)
    except (UserError, StoreReadError) as error:
        print(f"estibench: error: {error}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as error:
        from harness.budget import out_of_memory

        reason = out_of_memory(error)
        if reason is None:
            raise  # our bug: the traceback is for us
        print(f"estibench: error: out of memory ({reason}); choose a smaller problem, fewer "
              "--replicates or --num-samples, or a --memory-budget", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        from harness.runner import Terminated

        if isinstance(interrupt, Terminated):  # SIGTERM: 128 + 15, as a shell reports it
            print("estibench: terminated (SIGTERM); finished cells are stored, continue with "
                  "--resume", file=sys.stderr)
            return TERMINATED
        print("estibench: interrupted", file=sys.stderr)
        return 130


TERMINATED = 143  # the exit status after SIGTERM: 128 + 15, as a shell reports it


def run() -> None:
    """Console-script entry point.

    After SIGTERM the stores are closed and the message printed when ``main`` returns; the
    process then leaves at once, past the interpreter's teardown: torch's native teardown
    alone takes about a second, and many more on a busy machine (seen: 16 s and 25 s with
    twice as many busy processes as cores), while whoever sent SIGTERM waits for us to go.
    """
    code = main()
    if code == TERMINATED:
        import atexit

        atexit._run_exitfuncs()  # Python-level clean-up still runs (multiprocessing's included)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
