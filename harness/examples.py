"""Example specs for every registered entry: the partners the conformance checks run against.

Like torch.distributions' list of examples: each registered name needs at least one example
here, and ``tests/test_meta.py`` fails when one is missing, so a new entry cannot slip past the
suite. ``estibench check SPEC`` and ``tests/conformance`` (``harness.checks``) meet a spec with
the examples of every registered entry of the other kind; an entry with no example here (a
plug-in's) takes part with its default spec. Examples are small so that the whole suite runs in
CI on two cores.
"""

PROBLEM_EXAMPLES: dict[str, list[str]] = {
    "bernoulli-toy": ["bernoulli-toy", "bernoulli-toy:dim=3,target=0.499,logit=0.5"],
    "categorical-linear": ["categorical-linear:k=5", "categorical-linear:k=12,seed=3"],
    "polynomial": ["polynomial:dim=3,power=1.5", "polynomial:dim=2,power=3.0,target=0.7,seed=1"],
    "subset-linear": ["subset-linear:n=6,k=2", "subset-linear:n=5,k=5,seed=1"],
    "subset-quadratic": ["subset-quadratic:n=7,k=3,seed=2", "subset-quadratic:n=4,k=1"],
    "subset-graded": ["subset-graded", "subset-graded:n=6,k=3"],
    "exactk-linear": ["exactk-linear:n=6,k=2", "exactk-linear:n=5,k=5,seed=1"],
    "exactk-quadratic": ["exactk-quadratic:n=7,k=3,seed=2"],
    "permutation-assignment": ["permutation-assignment:n=4", "permutation-assignment:n=5,seed=2"],
    "permutation-sort": ["permutation-sort:n=4,seed=1", "permutation-sort:n=3"],
    "poisson-quadratic": ["poisson-quadratic", "poisson-quadratic:dim=2,rate=0.5,target=1.0"],
    "binomial-quadratic": ["binomial-quadratic:total_count=6,logit=0.5"],
    "negbinomial-quadratic": ["negbinomial-quadratic:total_count=2.5,logit=-0.3"],
    "geometric-quadratic": ["geometric-quadratic:logit=0.4"],
    # Real tasks: small networks, a few training steps for the checkpoint (trained once per
    # process, well under a second each), minibatches small enough for exact enumeration.
    "vae-bernoulli": ["vae-bernoulli:latent=4,batch=2,train_steps=40"],
    "vae-categorical": ["vae-categorical:latent=2,classes=3,batch=2,train_steps=40"],
    "vae-poisson": ["vae-poisson:latent=3,batch=2,train_steps=40"],
    "knn-subset": ["knn-subset:n=6,k=2,train_steps=40",
                   "knn-subset:family=permutation,n=5,k=2,train_steps=40",
                   "knn-subset:distribution=exactk,n=6,k=2,train_steps=40"],
    "l2x": ["l2x:patch=4,k=2,train_steps=40", "l2x:distribution=exactk,patch=4,k=2,train_steps=40"],
    "sort-digits": ["sort-digits:n=4,train_steps=40"],
    "quantile-regression": ["quantile-regression:n=3,train_steps=40"],
    "tsne-subset": ["tsne-subset:n=6,k=2,train_steps=40"],
    "topic-poisson": ["topic-poisson:topics=3,batch=2,train_steps=40"],
}

ESTIMATOR_EXAMPLES: dict[str, list[str]] = {
    "reinforce": ["reinforce", "reinforce:baseline=loo"],
    "gumbel-softmax": ["gumbel-softmax:temperature=0.5"],
    "st-gumbel-softmax": ["st-gumbel-softmax:temperature=1.0"],
    "straight-through": ["straight-through"],
    "exact": ["exact"],
    "relaxed-topk": ["relaxed-topk:temperature=0.5"],
    "st-relaxed-topk": ["st-relaxed-topk:temperature=1.0"],
    "neuralsort": ["neuralsort:temperature=1.0", "neuralsort:temperature=0.5,stochastic=false"],
    "softsort": ["softsort:temperature=0.5"],
    "st-neuralsort": ["st-neuralsort:temperature=1.0"],
    "gengs": ["gengs:temperature=0.5", "gengs:temperature=0.3,tail=0.01,remainder=renormalize"],
    "st-gengs": ["st-gengs:temperature=1.0"],
    "arm": ["arm"],
    "disarm": ["disarm"],
    "gumbel-rao": ["gumbel-rao:temperature=0.5,mc_samples=10", "gumbel-rao:mc_samples=1"],
    "reinmax": ["reinmax:temperature=1.0", "reinmax:temperature=0.3"],
    "gst": ["gst:gap=1.0,temperature=1.0"],
    "unordered-set": ["unordered-set"],
    # Learning estimators: adapt_steps=0 is the state before adaptation (measure() adapts
    # first, so the unbiasedness test sees both).
    "rebar": ["rebar:adapt_steps=0", "rebar:adapt_steps=30"],
    "relax": ["relax:adapt_steps=0,hidden=4", "relax:adapt_steps=30"],
    "mvd": ["mvd"],
    "sinkhorn": ["sinkhorn:temperature=1.0,iterations=20"],
    "gumbel-sinkhorn": ["gumbel-sinkhorn:temperature=0.5,iterations=30"],
    "st-gumbel-sinkhorn": ["st-gumbel-sinkhorn:temperature=1.0"],
    "diffsort": ["diffsort:network=odd_even,steepness=10.0"],
    "simple": ["simple"],
    "imle": ["imle", "imle:lambda=1.0,noise_samples=3"],
}


def all_problem_examples() -> list[str]:
    """Every problem example spec, in registration-table order."""
    return [spec for specs in PROBLEM_EXAMPLES.values() for spec in specs]


def all_estimator_examples() -> list[str]:
    """Every estimator example spec, in registration-table order."""
    return [spec for specs in ESTIMATOR_EXAMPLES.values() for spec in specs]
