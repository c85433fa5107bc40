"""Who answered what, and how reliably: per-annotator statistics of a run's labels
(``rlhf annotators RUN``).

Computed from the standing labels alone (``Store.answered``). A pair is the unordered pair
of clips: the same two clips asked again (a repeat for the same person, or the same pair for
several people) are answers to one pair. A verdict is the answer in the pair's own order
(lower clip id first): ``first``, ``second`` or ``equal``; skips have none.

- agreement: over pairs this annotator and another both gave a verdict on, the fraction of
  (this answer, other person's answer) couples that match;
- self-consistency: over pairs this annotator answered more than once, the fraction of
  couples of their own answers that match;
- gold agreement: the fraction of strict answers (not ties) that prefer the clip with the
  higher true return (the env's reward, or the run's scoring function), over pairs whose
  returns differ.

None where there is nothing to compare.
"""

from __future__ import annotations

import itertools
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass

from rlhf.store_schema import AnsweredPair

UNKNOWN = "(unknown)"
"""The name shown for labels stored before annotators were recorded."""


@dataclass(frozen=True)
class AnnotatorStats:
    """One annotator's row of ``rlhf annotators``."""

    annotator: str
    labels: int
    """Standing answers, skips and ties included."""
    skips: int
    ties: int
    median_response_s: float | None
    agreement: float | None
    agreement_n: int
    """Couples of answers with other annotators behind ``agreement``."""
    self_consistency: float | None
    self_consistency_n: int
    gold_agreement: float | None
    gold_n: int

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def verdict(answer: AnsweredPair) -> str | None:
    """The answer in its pair's own order (lower clip id first); None for a skip."""
    if answer.choice == "skip":
        return None
    if answer.choice == "equal":
        return "equal"
    better = answer.clip_a if answer.choice == "a" else answer.clip_b
    return "first" if better == min(answer.clip_a, answer.clip_b) else "second"


def _rate(hits: int, n: int) -> float | None:
    return hits / n if n else None


def annotator_stats(answers: list[AnsweredPair]) -> list[AnnotatorStats]:
    """Per annotator, most labels first (then by name)."""
    by_pair: dict[tuple[int, int], list[tuple[str, str]]] = defaultdict(list)
    mine: dict[str, list[AnsweredPair]] = defaultdict(list)
    for a in answers:
        name = a.annotator or UNKNOWN
        mine[name].append(a)
        v = verdict(a)
        if v is not None:
            by_pair[(min(a.clip_a, a.clip_b), max(a.clip_a, a.clip_b))].append((name, v))
    rows = []
    for name, given in mine.items():
        agree = agree_n = same = same_n = 0
        for pair_answers in by_pair.values():
            own = [v for who, v in pair_answers if who == name]
            others = [v for who, v in pair_answers if who != name]
            for x, y in itertools.product(own, others):
                agree_n += 1
                agree += x == y
            for x, y in itertools.combinations(own, 2):
                same_n += 1
                same += x == y
        gold = gold_n = 0
        for a in given:
            if a.choice in ("a", "b") and a.true_a != a.true_b:
                gold_n += 1
                gold += (a.choice == "a") == (a.true_a > a.true_b)
        times = [a.response_time for a in given if a.response_time is not None]
        rows.append(AnnotatorStats(
            annotator=name, labels=len(given),
            skips=sum(a.choice == "skip" for a in given),
            ties=sum(a.choice == "equal" for a in given),
            median_response_s=statistics.median(times) if times else None,
            agreement=_rate(agree, agree_n), agreement_n=agree_n,
            self_consistency=_rate(same, same_n), self_consistency_n=same_n,
            gold_agreement=_rate(gold, gold_n), gold_n=gold_n))
    return sorted(rows, key=lambda r: (-r.labels, r.annotator))


def format_table(rows: list[AnnotatorStats]) -> str:
    """The table ``rlhf annotators`` prints: one line per annotator."""
    def pct(x: float | None, n: int) -> str:
        return "-" if x is None else f"{100 * x:.0f}% ({n})"

    head = ("annotator", "labels", "skips", "ties", "median s", "agreement",
            "self-consistency", "gold")
    body = [(r.annotator, str(r.labels), str(r.skips), str(r.ties),
             "-" if r.median_response_s is None else f"{r.median_response_s:.1f}",
             pct(r.agreement, r.agreement_n), pct(r.self_consistency, r.self_consistency_n),
             pct(r.gold_agreement, r.gold_n)) for r in rows]
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True))
                     .rstrip() for line in [head, *body])
