"""Preferential Bayesian optimisation: tune a handful of parameters from a person's pairwise
choices (``rlhf tune``), with BoTorch's ``PairwiseGP`` in place of a reward model and an RL
agent. The rooms, in the order a tuning run uses them:

- ``space``: the parameters (bounds, log scale, integers) and the unit cube the GP sees;
- ``behaviour``: ``behaviour(params) -> policy``, rolled out into clips;
- ``model``: the GP on the store's labels;
- ``pairs``: which two candidates to show next (EUBO, incumbent-random, random);
- ``result``: best.json, status.json and the utility plot;
- ``run``: the loop (``tune``, ``run_tune``).
"""

from rlhf.tune.run import TuneResult, run_tune, tune

__all__ = ["TuneResult", "run_tune", "tune"]
