"""Where each env's random stream starts, relative to the run's ``seed``: one table, so that
no two streams share initial states (training envs start at the run's seed itself)."""

LOOP_EVAL = 10_000
"""The loop's periodic true-return evaluation (``eval.every``) and the benchmarks' baselines."""
CLI_EVAL = 20_000
"""``rlhf eval`` and its ``--video``."""
RANDOM_FLOOR = 50_000
"""The benchmarks' random-action floor of a normalised score."""
TUNE_PAIRS = 30_000
"""A tuning run's pairs: both behaviours of a pair play episodes from ``reset(seed +
TUNE_PAIRS + j)`` (``rlhf.tune.run.pair_starts``)."""
TUNE_UTILITY = 40_000
"""The tuning benchmark's true utility of a parameter vector: its mean over episodes from
here (none of them a start any pair was shown from)."""
