"""One person's labeling session, on the store side: answers, undo, claims.

Kept free of pygame so the rules (which side maps to which clip, what undo takes back, how
claims are kept alive and given back) are plain code.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import secrets
import socket
from dataclasses import dataclass
from typing import Literal

from rlhf.store import Query, Store

Side = Literal["left", "right", "equal", "skip"]
SIDES: tuple[str, ...] = ("left", "right", "equal", "skip")


def choice_for(side: str, swapped: bool) -> str:
    """The store's choice ('a', 'b', 'equal', 'skip') for an answer given on screen.

    ``swapped``: clip_b was shown on the left. Left is better -> the left clip is better.
    """
    if side == "left":
        return "b" if swapped else "a"
    if side == "right":
        return "a" if swapped else "b"
    if side in ("equal", "skip"):
        return side
    raise ValueError(f"unknown answer {side!r}; expected one of {SIDES}")


def new_viewer_id() -> str:
    """``user@host:pid:token``: unique per viewer process, and says where it runs, so a
    viewer on the same host can tell that another one has died (see ``reap_dead_claims``)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "someone"
    return f"{user}@{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def _dead_on_this_host(viewer: str) -> bool:
    _, _, where = viewer.rpartition("@")
    host, _, rest = where.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def reap_dead_claims(store: Store, me: str) -> None:
    """Release the claims of viewers on this host whose process is gone (e.g. killed), so
    their queries come back at once instead of when the claims expire."""
    for holder in store.claim_holders():
        if holder != me and _dead_on_this_host(holder):
            store.release_claims(holder)


@dataclass(frozen=True)
class Answer:
    """One answer given in this session (kept for undo)."""

    label_id: int
    query: Query
    side: str
    swapped: bool
    choice: str


def default_annotator() -> str:
    """Who is labelling, where nobody said (``rlhf label --annotator``): the OS user."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        return "human"


class LabelSession:
    """Answers and undo for one viewer, written through to the store at once.

    Args:
        store: the run's store (this thread's connection).
        viewer: this viewer's id (claims are held under it).
        teacher: the name recorded with each label.
        lease: seconds a claim lasts without renewal.
        annotator: the person answering (default: the OS user's name).
    """

    def __init__(self, store: Store, viewer: str, teacher: str = "human", lease: float = 60.0,
                 annotator: str | None = None):
        self.store, self.viewer, self.teacher, self.lease = store, viewer, teacher, lease
        self.annotator = annotator or default_annotator()
        self.history: list[Answer] = []
        self.answered = 0
        """Labels given and still standing this session (undo subtracts)."""
        self.response_times: list[float] = []
        """Seconds each answer of this session took (the person's pace)."""

    def answer(self, query: Query, side: str, swapped: bool,
               response_time: float | None) -> Answer | None:
        """Store one answer; None if another viewer answered this query first."""
        choice = choice_for(side, swapped)
        label_id = self.store.add_viewer_label(query.id, choice, self.teacher,
                                               shown_swapped=swapped,
                                               response_time=response_time,
                                               annotator=self.annotator)
        if label_id is None:
            return None
        answer = Answer(label_id, query, side, swapped, choice)
        self.history.append(answer)
        self.answered += 1
        if response_time is not None:
            self.response_times.append(response_time)
        return answer

    def undo(self) -> Answer | None:
        """Take back this session's last answer (appends a retraction) and claim its query
        again; None if there is nothing to undo."""
        if not self.history:
            return None
        answer = self.history.pop()
        self.store.undo_label(answer.label_id, self.teacher, self.viewer, self.lease,
                              annotator=self.annotator)
        self.answered -= 1
        return answer

    def heartbeat(self) -> None:
        """Keep this viewer's claims alive."""
        self.store.renew_claims(self.viewer, self.lease)

    def release(self) -> None:
        """Give back every claim (on quit): the queries go to the next viewer at once."""
        with contextlib.suppress(Exception):  # quitting must not fail; claims expire anyway
            self.store.release_claims(self.viewer)
