"""Reference gradients of a study: computed once per (problem, device), stored, shared.

A problem without an exact expectation is measured against a reference gradient, the mean of
many estimates of an unbiased estimator (``harness.measure.true_gradient``). In a study every
cell on that problem and device compares with the *same* reference: the driver computes it once
before the cells run, from a seed derived from the study seed, the problem and the device, and
stores it (``Store.write_reference``), so a resumed run reuses it instead of drawing it again
and the cells' biases are measured against one common value.

A reference that cannot be drawn here (no unbiased estimator fits the problem, the memory
budget, a device the driver lacks) is left out: each cell then draws it itself from the same
seed, so its numbers are the same, or is stored as failed with the one-line reason.
"""

from __future__ import annotations

import json

from estimators.errors import UserError
from harness.store import Store
from harness.study import Cell, Study


def reference_key(problem: str, device: str) -> str:
    return json.dumps({"problem": problem, "device": device}, sort_keys=True)


def reference_seed(study: Study, problem: str, device: str) -> int:
    """The seed of the reference gradient of ``problem`` on ``device`` in ``study``: the same
    for every cell on it (``true_gradient_source`` shows it; ``measure(reference_seed=...)``
    draws the same reference alone)."""
    from harness.measure import derived_seed

    return derived_seed(study.seed, f"reference {problem} {device}")


def study_references(study: Study, cells: list[Cell], store: Store, *,
                     show_progress: bool = True,
                     memory_budget: int | str | None = None) -> dict[str, dict]:
    """{reference_key: TrueGradient JSON} for every measurement cell whose problem has no exact
    gradient; loaded from the store where it already is, else computed here and stored."""
    from harness.measure import resolve_device, true_gradient
    from harness.runner import torch_threads
    from problems import PROBLEMS

    pairs = dict.fromkeys((cell.problem, cell.setting("device"))
                          for cell in cells if cell.kind == "measure")
    wanted = {reference_key(problem, device): (problem, device) for problem, device in pairs
              if not PROBLEMS.make(problem).info.exact}
    found = {}
    for key, (problem, device) in wanted.items():
        stored = store.reference(key)
        if stored is None:
            try:
                with torch_threads(study.threads):
                    stored = true_gradient(
                        PROBLEMS.make(problem), device=resolve_device(device),
                        seed=reference_seed(study, problem, device),
                        show_progress=show_progress, memory_budget=memory_budget,
                    ).to_json()
            except UserError:  # the cells draw it themselves, or fail with this reason
                continue
            store.write_reference(key, problem, device, stored)
        found[key] = stored
    return found
