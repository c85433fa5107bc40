"""The viewers' lease protocol on the store: which viewer is showing which query.

A viewer claims a query before showing it, for ``lease`` seconds, and renews its claims
while it runs. Picking and claiming happen in one BEGIN IMMEDIATE transaction, so two
viewers never get the same query at once; a crashed viewer's claims simply expire. A
viewer's answer releases the query's claim and its undo claims the query again, each in
the transaction that stores the label or the retraction.

``Claims`` is mixed into ``rlhf.store.Store``, whose connection, transactions and label
and retraction inserts it uses.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rlhf.store_errors import StoreError, _guarded
from rlhf.store_pg import PgLocation
from rlhf.store_schema import PENDING, SAME_PAIR, Query, pair_answered, query_rows

if TYPE_CHECKING:
    from rlhf.store_errors import _Transaction


_FOR_THIS_PERSON = (
    # addressed to nobody, or to this annotator (parameter 1)
    "(q.for_annotator IS NULL OR q.for_annotator = ?) "
    # a repeat, or a pair this annotator (parameter 2) has no live label on
    f"AND (q.repeat_of IS NOT NULL OR NOT {pair_answered(by=True)}) "
    # and not another copy of a pair this viewer (parameter 3) or this annotator (4) holds
    # a live claim on (5: now)
    f"AND NOT EXISTS (SELECT 1 FROM queries s WHERE s.id != q.id AND {SAME_PAIR} "
    "AND (s.claimed_by = ? OR s.claimed_annotator = ?) AND s.claimed_until > ?)")
"""A condition on ``queries q`` for ``claim_next_query``, with five parameters."""


class Claims:
    """The claim methods of ``Store`` (which provides the attributes declared below)."""

    path: Path | PgLocation
    db: sqlite3.Connection  # or a PgConnection, which has the same execute()
    version: int

    if TYPE_CHECKING:
        def transaction(self) -> _Transaction: ...
        def get_query(self, query_id: int) -> Query: ...
        def _check_choice(self, choice: str) -> None: ...
        def _append_label(self, query_id: int, choice: str, teacher: str,
                          shown_swapped: bool | None, response_time: float | None,
                          only_pending: bool = False,
                          annotator: str | None = None) -> int | None: ...
        def _append_retraction(self, label_id: int, teacher: str, live: bool,
                               annotator: str | None = None) -> tuple[int, int] | None: ...

    def _claim(self, query_id: int, viewer: str | None, lease: float = 0.0,
               annotator: str | None = None) -> None:
        """Inside a transaction: ``viewer`` (with ``annotator`` at it) holds ``query_id`` for
        ``lease`` seconds from now (None: nobody does)."""
        until = None if viewer is None else time.time() + lease
        self.db.execute("UPDATE queries SET claimed_by=?, claimed_until=?, claimed_annotator=? "
                        "WHERE id=?", (viewer, until, annotator, query_id))

    @_guarded
    def claim_next_query(self, viewer: str, lease: float, exclude: Sequence[int] = (),
                         annotator: str | None = None) -> Query | None:
        """Claim the oldest pending query that no other viewer holds, for ``lease`` seconds.

        ``exclude``: query ids this viewer already holds and does not want again. Returns
        None when no such query is waiting.

        ``annotator``, the person at this viewer, is never given a pair they have already
        answered, nor a second copy of one this viewer holds (``query.overlap`` asks several
        people the same pair), nor a query addressed to someone else. Queries addressed to
        them (repeats) come after everything else they can be given.
        """
        now = time.time()
        skip = [int(i) for i in exclude]
        not_in = f"AND q.id NOT IN ({','.join('?' * len(skip))})" if skip else ""
        with self.transaction():
            row = self.db.execute(
                f"{query_rows(self.version)} WHERE (q.claimed_by IS NULL OR q.claimed_by = ? "
                "OR q.claimed_until IS NULL OR q.claimed_until <= ?) "
                f"{not_in} AND {PENDING} AND {_FOR_THIS_PERSON} "
                "ORDER BY (q.repeat_of IS NOT NULL), q.id LIMIT 1",
                (viewer, now, *skip, annotator, annotator, viewer, annotator, now)).fetchone()
            if row is None:
                return None
            self._claim(row[0], viewer, lease, annotator)
        return Query(*row)

    @_guarded
    def renew_claims(self, viewer: str, lease: float) -> None:
        """Extend every claim ``viewer`` holds to ``lease`` seconds from now (a heartbeat)."""
        with self.transaction():
            self.db.execute("UPDATE queries SET claimed_until=? WHERE claimed_by=?",
                            (time.time() + lease, viewer))

    @_guarded
    def release_claims(self, viewer: str, query_ids: Sequence[int] | None = None) -> None:
        """Give back ``viewer``'s claims (all of them, or those on ``query_ids``)."""
        sql = ("UPDATE queries SET claimed_by=NULL, claimed_until=NULL, claimed_annotator=NULL "
               "WHERE claimed_by=?")
        args: list[object] = [viewer]
        if query_ids is not None:
            ids = [int(i) for i in query_ids]
            if not ids:
                return
            sql += f" AND id IN ({','.join('?' * len(ids))})"
            args += ids
        with self.transaction():
            self.db.execute(sql, args)

    @_guarded
    def claim_holders(self) -> dict[str, float]:
        """Viewers holding live claims on pending queries -> their latest claimed_until."""
        rows = self.db.execute(
            "SELECT q.claimed_by, MAX(q.claimed_until) FROM queries q WHERE q.claimed_by "
            f"IS NOT NULL AND q.claimed_until > ? AND {PENDING} GROUP BY q.claimed_by",
            (time.time(),))
        return {r[0]: float(r[1]) for r in rows}

    @_guarded
    def add_viewer_label(self, query_id: int, choice: str, teacher: str,
                         shown_swapped: bool | None = None,
                         response_time: float | None = None,
                         annotator: str | None = None) -> int | None:
        """A viewer's answer, committed before this returns; None if not stored because the
        query already has a standing label (another viewer answered it first).

        Check and insert happen in one transaction, so a query is answered at most once
        however many viewers show it. The query's claim is released.
        """
        self._check_choice(choice)
        with self.transaction():
            label_id = self._append_label(query_id, choice, teacher, shown_swapped,
                                          response_time, only_pending=True,
                                          annotator=annotator)
            if label_id is not None:
                # Answered: the claim has done its job (an undo claims the query again).
                self._claim(query_id, None)
            return label_id

    @_guarded
    def undo_label(self, label_id: int, teacher: str, viewer: str, lease: float,
                   annotator: str | None = None) -> Query:
        """Retract a label (appending, deleting nothing) and claim its query for ``viewer``,
        in one transaction, so no other viewer can take the query in between."""
        with self.transaction():
            retracted = self._append_retraction(label_id, teacher, live=True,
                                                annotator=annotator)
            if retracted is None:
                raise StoreError(f"cannot undo label {label_id}: no such standing label")
            query_id, _ = retracted
            self._claim(query_id, viewer, lease, annotator)
        return self.get_query(query_id)
