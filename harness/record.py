"""The measurement record, stated once.

``harness.measure`` returns one plain, JSON-serialisable dict per cell. Its metric fields are
exactly the names below (DESIGN.md's table); vectors are flat lists in the order of
``problem.parameters()`` (each tensor flattened, then concatenated). A value that is undefined
(the cosine when the true gradient is zero, the SNR when no coordinate varies) is ``None``,
never NaN, so every record is valid JSON.
"""

from __future__ import annotations

METRICS: dict[str, str] = {
    "true_gradient": "exact gradient (autograd of expected_objective), else an unbiased reference",
    "true_gradient_source": "'exact', or 'reference:<estimator spec>' with the replicates used",
    "true_gradient_stderr": "per-coordinate standard error of a reference gradient; None if exact",
    "mean_gradient": "(1/R) Σ_r ĝ_r",
    "bias": "mean_gradient − true_gradient, per coordinate",
    "bias_norm": "Euclidean norm of bias",
    "bias_stderr": "per-coordinate standard error of bias (estimate and reference combined)",
    "bias_pvalue": "p-value of 'unbiased': Bonferroni-combined two-sided per-coordinate t-tests",
    "variance": "trace of the covariance of one estimate (ddof 1)",
    "variance_per_coord": "per-coordinate variance of one estimate (ddof 1)",
    "mse": "(1/R) Σ_r ‖ĝ_r − true‖²",
    "cosine": "mean cosine similarity of ĝ_r and the true gradient; None if it is zero",
    "snr": "mean over varying coordinates of |mean| / std; None if none varies",
    "time_per_estimate_s": "median wall time of one estimate (sample, surrogate, backward), synced",
    "peak_memory_bytes": "peak memory of one estimate above the memory in use before it",
}

IDENTITY: dict[str, str] = {
    "problem": "canonical problem spec",
    "estimator": "canonical estimator spec",
    "num_samples": "samples averaged in one estimate (as the estimator's paper counts them)",
    "objective_evaluations": "evaluations of f in one estimate (pathwise: also one ∂f each)",
    "replicates": "R, independent estimates at the same θ",
    "seed": "seed of the estimates' generator",
    "device": "torch device the estimates ran on",
    "dtype": "floating dtype of the estimates",
}

PROVENANCE: dict[str, str] = {
    "parameters": "θ, flat, in parameter order",
    "problem_config": "every constant that defines the problem",
    "estimator_config": "every setting of the estimator, and its diagnostics at θ if any",
    "peak_memory_method": "how peak_memory_bytes was measured on this device",
    "torch_version": "torch.__version__",
    "versions": "python, torch, numpy, scipy, estibench",
    "git_commit": "commit of the estibench source, '-dirty' when it had local changes",
}

FIELDS: tuple[str, ...] = tuple(IDENTITY) + tuple(METRICS) + tuple(PROVENANCE)
