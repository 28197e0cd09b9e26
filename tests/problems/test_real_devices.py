"""Real tasks follow the device of their networks: measured without a GPU, and on CUDA.

Without a GPU there is no second real device, so these tests move each task to the ``meta``
device (shapes, no data) and run it under :class:`DeviceAudit`, a dispatch mode that sees
every aten op, forward and backward, with all its tensor arguments and results, and records
each op that mixes devices: what CUDA refuses. A tensor created without ``device=`` (CPU),
data indexed or mixed in from the CPU, a cached CPU tensor, all show up as soon as they meet
a tensor of the task, including the cases (indexing, ``gather``, ``scatter_add_`` with a
tensor on another device) that ``meta`` itself lets through and CUDA does not. The
exceptions are those CUDA makes as well: 0-dim CPU tensors (scalars) and explicit moves
(``to``/``copy_``). Work done wholly on the CPU and then moved (a task's fixed inputs, chosen
the same on every device) is allowed; the audited results must be on the target device.

What meta cannot show: a ``torch.Generator`` on the wrong device (meta has none; on CUDA a
CPU generator for a CUDA draw is an error), and ``evaluate`` (its metrics read values). The
``cuda`` tests below run every task end to end on a GPU for those; they skip here.

A dtype audit (float64 problem moved to float32, no op mixing float widths) was considered
and not used: a tensor created with the right dtype but no device passes it, so it would not
find the device bugs this module is for.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from estimators import ESTIMATORS
from estimators.families import draw
from harness import measure
from harness.training import train
from problems import PROBLEMS
from tests.problems.test_real import SMALL

MOVES = {torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default,
         torch.ops.aten.lift_fresh.default, torch.ops.aten.lift_fresh_copy.default}
TRAINING_ESTIMATOR = {"subset": "relaxed-topk", "permutation": "neuralsort",
                      "bernoulli": "gumbel-softmax", "categorical": "gumbel-softmax",
                      "count": "gengs"}
# relaxed-topk and GenGS check their inputs' values (finite keys, the truncation), which meta
# tensors do not have; on meta the training step of those families uses REINFORCE, which
# exercises the same task code (data, indices, the objective) with hard samples.
META_ESTIMATOR = {**TRAINING_ESTIMATOR, "subset": "reinforce:baseline=loo",
                  "count": "reinforce:baseline=loo"}


class DeviceAudit(TorchDispatchMode):
    """Records every aten op whose tensors (arguments and results) are on more than one
    device; 0-dim CPU tensors and explicit moves are allowed, as on CUDA."""

    def __init__(self) -> None:
        super().__init__()
        self.violations: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func not in MOVES:
            tensors = [t for t in tree_flatten((args, kwargs, out))[0]
                       if isinstance(t, torch.Tensor)
                       and not (t.device.type == "cpu" and t.dim() == 0)]
            devices = {t.device for t in tensors}
            if len(devices) > 1:
                self.violations.append(f"{func} mixes {sorted(map(str, devices))}")
        return out


def _problem(name: str):
    problem = PROBLEMS.make(SMALL[name])
    problem.parameters()  # train (or load) the checkpoint outside the audit
    return problem


@pytest.fixture(autouse=True)
def one_thread_no_validation():
    """One thread; no argument validation in distributions (it reads values: not on meta)."""
    previous, validate = torch.get_num_threads(), torch.distributions.Distribution._validate_args
    torch.set_num_threads(1)
    torch.distributions.Distribution.set_default_validate_args(False)
    yield
    torch.distributions.Distribution.set_default_validate_args(validate)
    torch.set_num_threads(previous)


@pytest.mark.parametrize("name", SMALL)
def test_objective_and_exact_gradient_stay_on_the_problem_device(name):
    problem = _problem(name)
    z = draw(problem.distribution(), 2, torch.Generator().manual_seed(0))
    moved = problem.to("meta", torch.float32)
    z = z.to("meta", torch.float32)
    audit = DeviceAudit()
    with audit:
        values = moved.objective(z)
        if values.requires_grad:  # f depends on θ directly (the VAEs' KL)
            torch.autograd.grad(values.sum(), moved.parameters())
        if moved.info.exact:
            expected = moved.expected_objective()
            (exact,) = torch.autograd.grad(expected.sum(), moved.parameters())
            assert expected.device.type == exact.device.type == "meta"
    assert values.device.type == "meta" and not audit.violations, audit.violations[:5]


@pytest.mark.parametrize("name", SMALL)
def test_a_training_step_stays_on_the_networks_device(name):
    problem = _problem(name)
    session = problem.training_session(0, torch.device("meta"), torch.float32)
    estimator = ESTIMATORS.make(META_ESTIMATOR[problem.info.family])
    generator = torch.Generator().manual_seed(1)  # meta has no generator; CUDA tests cover it
    audit = DeviceAudit()
    with audit:
        loss = session.loss(estimator, 2, generator)
        loss.backward()
    assert loss.device.type == "meta" and not audit.violations, audit.violations[:5]
    binding = DeviceAudit()
    with binding:
        bound = session.problem()
    assert not binding.violations, binding.violations[:5]
    assert {p.device.type for p in bound.parameters()} == {"meta"}


# ------------------------------------------------------------------- on a GPU (skipped here)


@pytest.mark.cuda
@pytest.mark.parametrize("name", SMALL)
def test_measurement_on_cuda(name):
    estimator = TRAINING_ESTIMATOR[PROBLEMS.make(SMALL[name]).info.family]
    record = measure(SMALL[name], estimator, replicates=8, seed=0, device="cuda",
                     timing=False, memory_profile=False)
    assert record["device"].startswith("cuda")
    assert all(torch.isfinite(torch.tensor(record["mean_gradient"])))


@pytest.mark.cuda
@pytest.mark.parametrize("name", SMALL)
def test_training_on_cuda(name):
    estimator = TRAINING_ESTIMATOR[PROBLEMS.make(SMALL[name]).info.family]
    record = train(SMALL[name], estimator, num_samples=2, steps=2, eval_every=2,
                   variance_replicates=4, seed=0, device="cuda", learning_rate=1e-3)
    assert record["device"].startswith("cuda") and len(record["curve"]) == 2


def test_the_audit_sees_what_meta_lets_through():
    """Indexing a CPU tensor with meta indices works on meta (and fails on CUDA): recorded."""
    audit = DeviceAudit()
    with audit:
        torch.arange(5.0)[torch.zeros(2, dtype=torch.long, device="meta")]
        torch.ones(3, device="meta") + torch.tensor(1.0)  # a CPU scalar: allowed, as on CUDA
    assert len(audit.violations) == 1 and "index" in audit.violations[0], audit.violations
