"""Demo tooling, not business rules: the synthetic consumer-finance world (with its ground truth) and the
simulation of conversions from that truth. Used by ``mktg demo``, ``mktg data generate``, tests and benchmarks;
no rule of the domain depends on it."""
