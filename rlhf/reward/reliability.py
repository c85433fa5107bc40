"""How reliable each annotator is, estimated against the reward model, and what their labels
are worth in a fit (``reward.annotator_reliability``).

Each annotator k is modelled as answering like the reward model's preference except that
they flip their answer with probability eps_k (B-Pref's "mistake"). Given the model's
probability sigma_i of each strict label as given, EM alternates the posterior that label i
was a flip, q_i = eps (1 - sigma_i) / (eps (1 - sigma_i) + (1 - eps) sigma_i), and
eps_k = (sum of k's q_i + a) / (n_k + a + b), with a Beta(a, b) prior (mean 0.1) so that an
annotator with few labels is not judged on them alone. The fit then trains on soft targets
mu' = (1 - eps_k) mu + eps_k (1 - mu): a careless person's answers pull less, a reliable
person's keep their weight. Ties stay 1/2.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PRIOR = (1.0, 9.0)
"""Beta prior of a flip rate (pseudo-counts of flips and of faithful answers)."""
MAX_FLIP = 0.45
"""Nobody is trusted less than this: at 0.5 an answer would carry no information at all,
and the model it is judged against is itself learnt from the answers."""


def flip_rates(answer_prob: np.ndarray, annotators: Sequence[str | None],
               strict: np.ndarray, iters: int = 30) -> dict[str | None, float]:
    """Each annotator's estimated flip rate.

    Args:
        answer_prob: (N,) the model's probability of each label's answer as given.
        annotators: (N,) who gave each label.
        strict: (N,) True where the label prefers one clip (ties and skips say nothing
            about flips).
    """
    sigma = np.clip(np.asarray(answer_prob, dtype=np.float64), 1e-6, 1 - 1e-6)
    who = np.asarray([str(a) if a is not None else "" for a in annotators])
    a, b = PRIOR
    rates: dict[str | None, float] = {}
    for name in dict.fromkeys(annotators):
        mine = (who == (str(name) if name is not None else "")) & strict
        s = sigma[mine]
        eps = a / (a + b)
        for _ in range(iters):
            q = eps * (1 - s) / (eps * (1 - s) + (1 - eps) * s)
            eps = min((q.sum() + a) / (len(s) + a + b), MAX_FLIP)
        rates[name] = float(eps)
    return rates


def soft_targets(mu: np.ndarray, flip: np.ndarray) -> np.ndarray:
    """(N,) targets ``(1 - flip) mu + flip (1 - mu)``; ties (1/2) are unchanged."""
    return (1 - flip) * mu + flip * (1 - mu)
