"""How much to prune where: sensitivity analysis, a budgeted per-layer ratio search, learned L0 gates.

- :mod:`~prunekit.search.sensitivity`: prune one layer (or group) at a time at each ratio, measure the
  validation metric without retraining; cached on disk, resumable.
- :mod:`~prunekit.search.budget`: what a plan costs (parameters, MACs, measured per-layer latency).
- :mod:`~prunekit.search.annealing`: simulated annealing over per-layer ratios on the sensitivity
  proxy, the best candidates evaluated for real.
- :mod:`~prunekit.search.plan`: the plan file (YAML) that ``prunekit prune --plan`` applies.
- :mod:`~prunekit.search.l0`: hard-concrete gates learned during fine-tuning (``--learn-structure``).
"""
