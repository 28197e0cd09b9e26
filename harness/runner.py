"""Running a study: cells on an executor, results into the store as they finish.

Executors:

- ``inline``: one after the other in this process (for debugging: breakpoints work).
- ``process`` (default): a local pool of ``--workers`` processes (spawned, so no state leaks
  from the driver into a worker).
- ``ray``: Ray tasks on a local Ray instance, or on a cluster given by ``--ray-address``
  (every node needs estibench and its dependencies installed). A cell on a CUDA device asks
  Ray for one GPU. Needs the ``ray`` extra.

Every executor runs the same function on the same cell (``run_cell``): its seed derives from
the study seed and the cell's key and it runs with the study's ``threads`` torch threads, so
the numbers do not depend on where or in which order cells run. Only this (driver) process
writes the store, one transaction per finished cell.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

from estimators.errors import UserError
from harness.budget import parse_size
from harness.progress import progress
from harness.store import Store
from harness.study import Cell, Study

EXECUTORS = ("inline", "process", "ray")


@dataclasses.dataclass(frozen=True)
class CellJob:
    """What a worker needs to run a cell: the cell and the study-wide switches."""

    cell: Cell
    threads: int
    timing: bool
    memory: bool
    memory_budget: int | str | None = None  # bytes or a size such as "4GB"; None: default
    reference_seed: int | None = None  # the seed of the cell's reference gradient
    reference: dict | None = None  # that reference, drawn once by the driver (TrueGradient JSON)


def _failed(error: str, trace: str, started: float) -> dict:
    return {"status": "failed", "error": error, "traceback": trace, "started": started,
            "finished": time.time()}


def run_cell(job: CellJob) -> dict:
    """Run one cell; never raises: failures come back as ``status='failed'`` with the error."""
    cell = job.cell
    started = time.time()
    samples: dict = {}  # a measurement's squared deviations and times (Store's samples table)
    try:
        with torch_threads(job.threads):
            if cell.kind == "measure":
                from harness.measure import TrueGradient, measure

                reference = None if job.reference is None else TrueGradient.from_json(
                    job.reference)
                record = measure(
                    cell.problem, cell.estimator, num_samples=cell.num_samples,
                    replicates=cell.setting("replicates"), seed=cell.cell_seed,
                    device=cell.setting("device"), dtype=cell.setting("dtype"),
                    timing=job.timing, memory_profile=job.memory,
                    memory_budget=job.memory_budget, reference_seed=job.reference_seed,
                    reference=reference, samples=samples,
                )
            elif cell.kind == "sample":
                from harness.sampling import sample_distance

                record = sample_distance(
                    cell.problem, cell.estimator, samples=cell.num_samples,
                    seed=cell.cell_seed, device=cell.setting("device"),
                    dtype=cell.setting("dtype"))
            else:
                from harness.training import train

                record = train(
                    cell.problem, cell.estimator, num_samples=cell.num_samples,
                    optimizer=cell.setting("optimizer"),
                    learning_rate=cell.setting("learning_rate"), steps=cell.setting("steps"),
                    eval_every=cell.setting("eval_every"),
                    variance_replicates=cell.setting("variance_replicates"),
                    seed=cell.cell_seed, device=cell.setting("device"),
                    dtype=cell.setting("dtype"), memory_budget=job.memory_budget,
                )
        return {"status": "ok", "record": record, "samples": samples, "started": started,
                "finished": time.time()}
    except Exception as error:  # noqa: BLE001 - a failed cell is stored, never fatal
        message = str(error) if isinstance(error, UserError) else (
            f"{type(error).__name__}: {error}")
        return _failed(message.splitlines()[0] if message else repr(error),
                       traceback.format_exc(), started)


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Within: torch runs ``count`` threads; the previous number comes back after."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ---------------------------------------------------------------------------------- executors


def _inline(jobs: list[CellJob], workers: int, ray_address: str | None) -> Iterator:
    for job in jobs:
        yield job, run_cell(job)


def _process(jobs: list[CellJob], workers: int, ray_address: str | None) -> Iterator:
    """Cells in pools of ``workers`` spawned processes.

    Workers never outlive the driver: each watches a pipe whose only writing end the driver
    holds (``_watch_driver``), and leaves as soon as it reads as ended, which is when the driver
    dies (SIGKILL included) or leaves early (Ctrl-C, SIGTERM, an error) and closes it.

    A worker that dies (killed for lack of memory, a crash in native code) breaks its pool, and
    every cell not finished is lost with it. Workers take cells in order, so the cell that
    killed it is one of the first ``workers`` lost (no more were running): these suspects run
    again one at a time in a one-worker pool, in order, until one kills its lone worker; that
    one is stored as failed (a suspect that finishes alone is stored as usual). Then the rest,
    other suspects included, goes back to a pool of ``workers``, which a second killer breaks
    again the same way. With one worker, the first cell lost is the one that was running.
    """
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    lifeline, driver_end = context.Pipe(duplex=False)
    try:
        pending = list(jobs)
        while pending:
            lost = yield from _pool(pending, workers, context, lifeline, driver_end)
            if not lost:
                return
            suspects, rest = lost[:workers], lost[workers:]
            started = time.time()
            if workers > 1:
                suspects = yield from _pool(suspects, 1, context, lifeline, driver_end)
            if suspects:  # the first in order that did not finish alone killed the worker
                yield suspects[0], _failed("the process running this cell died (killed, e.g. "
                                           "for lack of memory, or crashed in native code)",
                                           "", started)
            pending = suspects[1:] + rest
    finally:
        driver_end.close()
        lifeline.close()


def _pool(jobs: list[CellJob], workers: int, context, lifeline, driver_end):
    """Run ``jobs`` in one fresh pool, yielding each finished cell with its result; return the
    cells lost when a worker died and broke the pool, in the order of ``jobs``."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    lost: list[int] = []
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context,
                               initializer=_watch_driver, initargs=(lifeline,))
    try:
        futures = {pool.submit(run_cell, job): index for index, job in enumerate(jobs)}
        for future in as_completed(futures):
            try:
                result = future.result()
            except BrokenProcessPool:
                lost.append(futures[future])
                continue
            yield jobs[futures[future]], result
    except BaseException:  # Ctrl-C, SIGTERM, or the consumer closed us: end the workers
        driver_end.close()  # each worker leaves as it reads the end of its lifeline
        # Not waiting for the pool's own shutdown: an interrupt raised while as_completed held
        # a future's lock would leave the pool's manager thread blocked on it for good.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return [jobs[index] for index in sorted(lost)]


def _watch_driver(lifeline) -> None:
    """Pool initializer, in each worker: leave at once when the driver is gone.

    Nothing is ever written to ``lifeline``: it turns readable (end of file) only when the
    driver's end is closed, by the driver or by the kernel when the driver dies.
    """

    def watch() -> None:
        try:
            lifeline.poll(None)
        finally:
            os._exit(1)

    threading.Thread(target=watch, name="estibench-driver-watch", daemon=True).start()


def _ray(jobs: list[CellJob], workers: int, ray_address: str | None) -> Iterator:
    try:
        import ray
    except ImportError:
        raise UserError("the ray executor needs Ray: pip install 'estibench[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        options = {"include_dashboard": False, "log_to_driver": False}
        if ray_address:
            options["address"] = ray_address
        else:
            # A new local instance, never one that `ray start` left registered on this machine
            # (/tmp/ray/ray_current_cluster), which ray.init() would otherwise join.
            options["address"] = "local"
            options["num_cpus"] = workers
            # Workers import estibench from the same source tree as the driver.
            source = str(Path(__file__).resolve().parent.parent)
            options["runtime_env"] = {"env_vars": {"PYTHONPATH": os.pathsep.join(
                filter(None, [source, os.environ.get("PYTHONPATH", "")]))}}
        try:
            ray.init(**options)
        except Exception as error:  # noqa: BLE001 - connection problems are the user's
            hint = ""
            if ray_address and os.environ.get("RAY_AUTH_MODE") != "token":
                # A cluster started with RAY_AUTH_MODE=token refuses drivers without the
                # token; Ray then logs InvalidAuthToken warnings and reports only that it
                # could not connect.
                hint = ("; if the cluster was started with RAY_AUTH_MODE=token, export "
                        "RAY_AUTH_MODE=token here too (the token: ~/.ray/auth_token or "
                        "RAY_AUTH_TOKEN)")
            raise UserError(f"cannot start or reach Ray ({ray_address or 'local'}): "
                            f"{str(error).splitlines()[0]}{hint}") from None
    try:
        remote = ray.remote(run_cell)
        pending = {}
        for job in jobs:
            gpus = 1 if job.cell.setting("device").startswith("cuda") else 0
            pending[remote.options(num_cpus=1, num_gpus=gpus).remote(job)] = job
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                job = pending.pop(ref)
                yield job, ray.get(ref)
    finally:
        if started_here:
            ray.shutdown()


_RUNNERS = {"inline": _inline, "process": _process, "ray": _ray}


# ------------------------------------------------------------------------------------- driver


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived while a study ran (``timeout``, Slurm and ``docker stop`` send it).

    A KeyboardInterrupt, so that it ends a run the way Ctrl-C does: finished cells stay
    stored, workers end, and ``--resume`` continues.
    """


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Within: SIGTERM raises ``Terminated`` in the main thread (elsewhere signals cannot be
    handled, so it is left alone); the previous handler comes back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated("terminated (SIGTERM)")

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclasses.dataclass
class Summary:
    total: int = 0
    already: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0

    def line(self, name: str, directory: Path) -> str:
        if self.total and self.already == self.total:
            return (f"study {name!r}: all {self.total} cells already finished in {directory}; "
                    "nothing to do")
        parts = [f"{self.done} done", f"{self.failed} failed"]
        if self.already:
            parts.append(f"{self.already} finished earlier")
        return (f"study {name!r}: {self.total} cells: {', '.join(parts)}; {self.skipped} "
                f"pairs skipped; store: {directory}")


def run_study(
    study: Study,
    directory: str | Path,
    *,
    executor: str = "process",
    workers: int | None = None,
    resume: bool = False,
    allow_changed: bool = False,
    retry_failed: bool = False,
    ray_address: str | None = None,
    show_progress: bool = True,
    memory_budget: int | str | None = None,
) -> Summary:
    """Run every cell of ``study`` not yet in the store at ``directory``.

    A store that already holds cells is continued only with ``resume`` (finished cells are
    skipped; failed ones too unless ``retry_failed``). A store of a different study is refused;
    of the same study with changed grids, unless ``allow_changed``. SIGTERM while cells run
    raises ``Terminated`` (a KeyboardInterrupt): like Ctrl-C, it leaves every finished cell
    stored and no worker running.
    """
    if executor not in _RUNNERS:
        raise UserError(f"unknown executor {executor!r}: expected {', '.join(EXECUTORS)}")
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    from harness.measure import resolve_device

    resolve_device(study.device)  # an unavailable device is one message, before any cell
    cells, skipped = study.expand()
    directory = Path(directory)
    summary = Summary(total=len(cells), skipped=len(skipped))
    with Store(directory) as store:
        store.bind(study.name, study.fingerprint(), study.source, allow_changed=allow_changed)
        store.write_labels(labels(cells, skipped))
        finished = store.finished()
        keep = {"ok"} if retry_failed else {"ok", "failed"}
        todo = [cell for cell in cells if finished.get(cell.key) not in keep]
        summary.already = len(cells) - len(todo)
        if not todo:  # a finished study: nothing to do, with or without --resume
            return summary
        if finished and not resume:
            raise UserError(
                f"{directory} already holds {len(finished)} finished cells of study "
                f"{study.name!r}; pass --resume to skip them and run the rest, or choose "
                "another --out directory"
            )
        store.write_skipped(skipped)
        if memory_budget is not None:
            parse_size(memory_budget)  # a bad size is one message, before any cell
        with _sigterm_interrupts():  # from here on, SIGTERM ends the run as Ctrl-C does
            _run_cells(study, todo, store, summary, executor=executor, workers=workers,
                       ray_address=ray_address, show_progress=show_progress,
                       memory_budget=memory_budget)
    return summary


def labels(cells, skipped) -> dict[str, str]:
    """spec -> label (``Registry.short``: the options left at their defaults dropped) of every
    problem and estimator the study names; a spec the registries cannot read keeps itself."""
    from estimators import ESTIMATORS
    from problems import PROBLEMS

    found = {}
    for item in [*cells, *skipped]:
        for registry, spec in ((PROBLEMS, item.problem), (ESTIMATORS, item.estimator)):
            if spec not in found:
                try:
                    found[spec] = registry.short(spec)
                except Exception:  # an unknown name or a bad option: the skip says why
                    found[spec] = spec
    return found


def _run_cells(study: Study, todo: list[Cell], store: Store, summary: Summary, *,
               executor: str, workers: int | None, ray_address: str | None,
               show_progress: bool, memory_budget: int | str | None) -> None:
    """Draw the study's reference gradients, then run ``todo``, storing each result and
    counting it in ``summary``."""
    from harness.references import reference_key, reference_seed, study_references

    references = study_references(study, todo, store, show_progress=show_progress,
                                  memory_budget=memory_budget)
    jobs = []
    for cell in todo:
        seed = reference = None
        if cell.kind == "measure":
            seed = reference_seed(study, cell.problem, cell.setting("device"))
            reference = references.get(reference_key(cell.problem, cell.setting("device")))
        jobs.append(CellJob(cell, study.threads, study.timing, study.memory, memory_budget,
                            seed, reference))
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    results = _RUNNERS[executor](jobs, workers, ray_address)
    shown = progress(results, description=f"study {study.name}", enabled=show_progress,
                     total=len(jobs), already=summary.already, unit="cells",
                     status=lambda: f"{summary.failed} failed")
    # closing: an interrupted run stops the bar, then ends the executor's workers
    with contextlib.closing(results), contextlib.closing(shown):
        for job, result in shown:
            store.write(job.cell, result)
            if result["status"] == "ok":
                summary.done += 1
            else:
                summary.failed += 1
