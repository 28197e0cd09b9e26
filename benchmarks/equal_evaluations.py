"""Estimators' variance at an equal number of objective evaluations per estimate.

Each estimator gets num_samples = E / its evaluations per sample (``EstimatorInfo
.evaluations_per_sample``) for each budget E, where that is a whole number of at least its
minimum; the variance (trace of the covariance of one estimate) comes from the harness's
``measure`` (R replicates, a fixed seed; estimators that learn are adapted first, as in any
cell). The default is the REBAR/RELAX toy of Tucker et al. 2017 and Grathwohl et al. 2018.

    python benchmarks/equal_evaluations.py [--problem SPEC] [--evaluations 3 6]
        [--estimators reinforce reinforce:baseline=loo ...] [--replicates 20000]
"""

from __future__ import annotations

import argparse

from estimators import ESTIMATORS
from harness.measure import measure

DEFAULT_ESTIMATORS = ["reinforce", "reinforce:baseline=loo", "arm", "disarm", "rebar", "relax",
                      "st-gumbel-softmax", "gumbel-rao"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", default="bernoulli-toy:target=0.499")
    parser.add_argument("--evaluations", type=int, nargs="+", default=[3, 6])
    parser.add_argument("--estimators", nargs="+", default=DEFAULT_ESTIMATORS)
    parser.add_argument("--replicates", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{args.problem}: variance of one estimate at E evaluations of f "
          f"(R = {args.replicates}, seed {args.seed})")
    for budget in args.evaluations:
        print(f"E = {budget}")
        for spec in args.estimators:
            estimator = ESTIMATORS.make(spec)
            per_sample = estimator.info.evaluations_per_sample
            if per_sample is None or budget % per_sample:
                continue
            num_samples = budget // per_sample
            if num_samples < estimator.min_samples():
                continue
            record = measure(args.problem, estimator, num_samples=num_samples,
                             replicates=args.replicates, seed=args.seed, timing=False,
                             memory_profile=False)
            print(f"    {ESTIMATORS.short(record['estimator']):28s} num_samples={num_samples:<3d} "
                  f"variance {record['variance']:.3g}   bias p-value {record['bias_pvalue']:.3g}")


if __name__ == "__main__":
    main()
