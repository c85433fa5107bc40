"""The store's queries: pairs asked (``add_queries``; ``query.overlap`` stores a pair once per
annotator wanted), earlier answers asked again to the same person (``repeat_candidates``,
``add_repeats``; ``query.repeat_fraction``), and reading them back.

``Queries`` is mixed into ``rlhf.store.Store``, whose connection, transactions and answered
pairs it uses.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

from rlhf.store_errors import StoreError, _guarded
from rlhf.store_pg import PgLocation
from rlhf.store_schema import LIVE_LABELS, PENDING, AnsweredPair, Query, query_rows

if TYPE_CHECKING:
    from rlhf.store_errors import _Transaction


class Queries:
    """The query methods of ``Store`` (which provides the attributes declared below)."""

    path: Path | PgLocation
    db: sqlite3.Connection  # or a PgConnection, which has the same execute()
    version: int

    if TYPE_CHECKING:
        def transaction(self) -> _Transaction: ...
        def _answered(self, where: str = "") -> list[AnsweredPair]: ...

    @_guarded
    def add_queries(self, pairs: list[tuple[int, int]], iteration: int) -> list[Query]:
        now = time.time()
        out = []
        with self.transaction():
            for a, b in pairs:
                (qid,) = self.db.execute(
                    "INSERT INTO queries (clip_a, clip_b, iteration, created) VALUES (?,?,?,?) "
                    "RETURNING id", (int(a), int(b), int(iteration), now)).fetchone()
                out.append(Query(qid, int(a), int(b), int(iteration)))
        return out

    @_guarded
    def add_repeats(self, labels: list[AnsweredPair], iteration: int) -> list[Query]:
        """Ask each label's pair again, to the same annotator only (``repeat_candidates``
        says which may be): their self-consistency in ``rlhf annotators``."""
        now = time.time()
        out = []
        with self.transaction():
            for a in labels:
                (qid,) = self.db.execute(
                    "INSERT INTO queries (clip_a, clip_b, iteration, created, for_annotator, "
                    "repeat_of) VALUES (?,?,?,?,?,?) RETURNING id",
                    (a.clip_a, a.clip_b, int(iteration), now, a.annotator, a.label_id)
                ).fetchone()
                out.append(Query(qid, a.clip_a, a.clip_b, int(iteration), a.annotator,
                                 a.label_id))
        return out

    @_guarded
    def repeat_candidates(self, annotators: Collection[str] | None = None
                          ) -> list[AnsweredPair]:
        """Standing answers that may be asked again to the same person: named (one of
        ``annotators``, where the teacher can only answer as those), not skips, not repeats
        themselves, their pair not yet repeated to that person, and not that person's
        latest live answer (so a repeat, shown after the rest of their queue, never comes
        back to back)."""
        if self.version < 3:
            return []
        found = self._answered(
            "WHERE e.choice != 'skip' AND e.annotator IS NOT NULL AND q.repeat_of IS NULL "
            "AND NOT EXISTS (SELECT 1 FROM queries r WHERE r.repeat_of IS NOT NULL AND "
            "r.for_annotator = e.annotator AND ((r.clip_a = q.clip_a AND r.clip_b = q.clip_b) "
            "OR (r.clip_a = q.clip_b AND r.clip_b = q.clip_a))) "
            f"AND e.id < (SELECT MAX(m.id) FROM ({LIVE_LABELS}) m "
            "WHERE m.annotator = e.annotator)")
        if annotators is None:
            return found
        allowed = set(annotators)
        return [a for a in found if a.annotator in allowed]

    @property
    def _query_rows(self) -> str:
        return query_rows(self.version)

    @_guarded
    def get_query(self, query_id: int) -> Query:
        row = self.db.execute(f"{self._query_rows} WHERE q.id=?", (query_id,)).fetchone()
        if row is None:
            raise StoreError(f"no query with id {query_id} in {self.path}")
        return Query(*row)

    @_guarded
    def queries(self) -> list[Query]:
        """Every query, oldest first."""
        return [Query(*row) for row in self.db.execute(f"{self._query_rows} ORDER BY q.id")]

    @_guarded
    def asked_pairs(self, clip_ids: list[int]) -> list[tuple[int, int]]:
        """(clip_a, clip_b) of every query among ``clip_ids``."""
        if len(clip_ids) < 2:
            return []
        # Filtered here, not in SQL: an IN (...) list of a large pool's ids would pass
        # SQLite's limit on bound variables, and a run has far fewer queries than clips.
        among = set(clip_ids)
        return [(a, b) for a, b in self.db.execute("SELECT clip_a, clip_b FROM queries")
                if a in among and b in among]

    @_guarded
    def pending_queries(self, limit: int | None = None) -> list[Query]:
        """Queries without a standing label, oldest first."""
        sql = f"{self._query_rows} WHERE {PENDING} ORDER BY q.id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [Query(*row) for row in self.db.execute(sql)]
