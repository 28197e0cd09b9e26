"""Time and memory of GenGS sampling + backward, as a table: the asv suite's cases, one run.

    python benchmarks/gengs_figures.py            # CPU, and CUDA when a GPU is present

For each rate and batch of ``bench_gengs.GenGS`` (Poisson rates {1, 10, 100}, batch {1, 1024},
default gengs settings, one sample per element): the median wall time of one forward and
backward (device synchronised; ``harness.measure.median_time``: one warm-up call, then at
least 5 and at most 200 calls within 0.5 s), the peak tensor bytes of one call
(``harness.memory.peak_memory``) and the support points K + 1 one relaxed sample holds.
"""

from __future__ import annotations

import torch

from harness.measure import median_time
from harness.memory import peak_memory

# The module, not its class: asv would discover an imported class here as a second suite.
if __package__:  # imported as benchmarks.gengs_figures (asv discovery, python -m)
    from . import bench_gengs as suite
else:  # run as a script: python benchmarks/gengs_figures.py
    import bench_gengs as suite


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
    print("| device | rate | batch | K + 1 | time per call (ms) | peak tensor bytes |")
    print("|---|---:|---:|---:|---:|---:|")
    for device in suite.DEVICES:
        for rate in suite.RATES:
            for batch in suite.BATCHES:
                case = suite.GenGS()
                try:
                    case.setup(rate, batch, device)
                except NotImplementedError as reason:
                    print(f"| {device} | {rate} | {batch} | skipped: {reason} | | |")
                    continue
                seconds = median_time(case._run, case.device)
                peak, _ = peak_memory(case._run, case.device)
                points = case.track_support_points()
                print(f"| {device} | {rate} | {batch} | {points} | {seconds * 1e3:.3f} | {peak:,} |")


if __name__ == "__main__":
    main()
