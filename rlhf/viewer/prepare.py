"""Preparing pairs in the background: claim the next query, render both clips, scale them.

A ``PairPreparer`` thread keeps ``prefetch`` pairs ready while the person watches the one on
screen, so after a key press the next pair is shown without waiting for a render. It owns its
own store connection and its own render env (a MuJoCo GL context belongs to the thread that
made it). When no query is waiting it sleeps, waking every ``poll`` seconds to look again.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pygame

from rlhf.config import EnvConfig
from rlhf.render import ClipRenderer
from rlhf.store import Query, Store, StoreUnavailable
from rlhf.store_pg import PgLocation
from rlhf.viewer.session import reap_dead_claims


@dataclass(frozen=True, eq=False)
class PreparedPair:
    """A query ready to show.

    Attributes:
        query: the pair in the store's order (clip_a, clip_b).
        swapped: True when clip_b is shown on the left.
        left, right: frames (T,) as surfaces scaled to fit a clip panel.
        fps: the env's frames per second at speed 1.
        seconds: wall time spent preparing (loading, rendering, scaling).
    """

    query: Query
    swapped: bool
    left: tuple[pygame.Surface, ...]
    right: tuple[pygame.Surface, ...]
    fps: float
    seconds: float = 0.0

    @property
    def length(self) -> int:
        return max(len(self.left), len(self.right))


def fit_size(frame_size: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    """(w, h) of a frame of size (w, h) scaled to fit ``box``, keeping its aspect ratio."""
    (fw, fh), (bw, bh) = frame_size, box
    scale = min(bw / fw, bh / fh)
    return max(1, round(fw * scale)), max(1, round(fh * scale))


def to_surfaces(frames: np.ndarray, box: tuple[int, int]) -> tuple[pygame.Surface, ...]:
    """Frames (T, H, W, 3) uint8 -> T surfaces scaled to fit ``box`` (w, h)."""
    h, w = frames.shape[1:3]
    size = fit_size((w, h), box)
    out = []
    for frame in frames:
        surface = pygame.image.frombuffer(np.ascontiguousarray(frame).tobytes(), (w, h), "RGB")
        out.append(pygame.transform.smoothscale(surface, size) if size != (w, h)
                   else surface.copy())
    return tuple(out)


class SurfaceCache:
    """The scaled frames of the last few clips: a clip often appears in several queries."""

    def __init__(self, size: int = 4):
        self.size = size
        self._items: collections.OrderedDict[int, tuple[pygame.Surface, ...]] = \
            collections.OrderedDict()

    def get(self, clip_id: int) -> tuple[pygame.Surface, ...] | None:
        if clip_id in self._items:
            self._items.move_to_end(clip_id)
        return self._items.get(clip_id)

    def put(self, clip_id: int, surfaces: tuple[pygame.Surface, ...]) -> None:
        self._items[clip_id] = surfaces
        while len(self._items) > self.size:
            self._items.popitem(last=False)


def prepare_pair(store: Store, renderer: ClipRenderer, query: Query, swapped: bool,
                 box: tuple[int, int], cache: SurfaceCache | None = None) -> PreparedPair:
    """Load a query's clips, render them, and scale their frames to fit ``box`` (w, h)."""
    t0 = time.perf_counter()
    sides = []
    for clip_id in (query.clip_a, query.clip_b):
        surfaces = cache.get(clip_id) if cache is not None else None
        if surfaces is None:
            (clip,) = store.get_clips([clip_id])
            surfaces = to_surfaces(renderer.frames(clip), box)
            if cache is not None:
                cache.put(clip_id, surfaces)
        sides.append(surfaces)
    left, right = (sides[1], sides[0]) if swapped else (sides[0], sides[1])
    return PreparedPair(query, swapped, left, right, renderer.fps, time.perf_counter() - t0)


class PairPreparer(threading.Thread):
    """Keeps up to ``prefetch`` claimed, rendered pairs ready for the viewer.

    Args:
        store_path: where the run's store is (opened again in this thread).
        env_cfg: the run's env config, for the render env.
        viewer: this viewer's id, under which queries are claimed.
        box: (w, h) of a clip panel; frames are scaled to fit it.
        lease: seconds a claim lasts (the viewer renews them).
        poll: seconds between looks at the store while no query is waiting.
        prefetch: pairs kept ready.
        rng: draws which side each clip is shown on.
        notify: called (from this thread) when a pair is ready or an error happened.
    """

    def __init__(self, store_path: Path | PgLocation, env_cfg: EnvConfig, viewer: str,
                 box: tuple[int, int], lease: float, poll: float, prefetch: int,
                 rng: np.random.Generator, notify: Callable[[], None] = lambda: None,
                 annotator: str | None = None):
        super().__init__(name="rlhf-pair-preparer", daemon=True)
        self.store_path, self.env_cfg, self.viewer = store_path, env_cfg, viewer
        self.annotator = annotator
        """The person at this viewer: never shown a pair twice, except as a repeat."""
        self.box, self.lease, self.poll, self.prefetch = box, lease, poll, prefetch
        self.rng, self.notify = rng, notify
        self.error: BaseException | None = None
        self.busy = False
        """True while rendering (the viewer says 'preparing' rather than 'no query')."""
        self._ready: queue.Queue[PreparedPair] = queue.Queue()
        self._priority: queue.Queue[PreparedPair] = queue.Queue()  # requested pairs
        self._requests: queue.Queue[tuple[Query, bool]] = queue.Queue()
        self._held: set[int] = set()  # pending queries this viewer holds (shown or ready)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()

    # -- called by the viewer (main thread) ------------------------------------------------

    def take(self) -> PreparedPair | None:
        """The next ready pair (requested ones first), or None; asks for another to be
        prepared."""
        for ready in (self._priority, self._ready):
            try:
                pair = ready.get_nowait()
            except queue.Empty:
                continue
            self._wake.set()
            return pair
        return None

    def request(self, query: Query, swapped: bool) -> None:
        """Prepare this (already claimed) query next, ahead of new ones (e.g. after undo)."""
        self.hold(query.id)
        self._requests.put((query, swapped))
        self._wake.set()

    def hold(self, query_id: int) -> None:
        with self._lock:
            self._held.add(query_id)

    def drop(self, query_id: int) -> None:
        """The viewer is done with this query (answered): never exclude it again."""
        with self._lock:
            self._held.discard(query_id)

    def held(self) -> set[int]:
        with self._lock:
            return set(self._held)

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self.is_alive():
            self.join(timeout)

    # -- the thread --------------------------------------------------------------------------

    def run(self) -> None:
        store = renderer = None
        try:
            store = Store(self.store_path)
            renderer = ClipRenderer(self.env_cfg)
            cache = SurfaceCache()
            while not self._stopping.is_set():
                try:
                    job = self._next_job(store)
                except StoreUnavailable:  # a server restarting: look again after a while
                    self._wake.wait(self.poll)
                    self._wake.clear()
                    continue
                if job is None:
                    # Nothing to do: sleep until the viewer takes a pair, asks for one, or
                    # the poll interval passes; never spin.
                    self._wake.wait(self.poll)
                    self._wake.clear()
                    continue
                query, swapped, requested = job
                self.busy = True
                try:
                    pair = prepare_pair(store, renderer, query, swapped, self.box, cache)
                except StoreUnavailable:  # its clips come once the server is back: this
                    self._requests.put((query, swapped))  # pair first, then
                    self._wake.wait(self.poll)
                    continue
                finally:
                    self.busy = False
                (self._priority if requested else self._ready).put(pair)
                self.notify()
        except BaseException as e:  # handed to the viewer's thread, which raises it
            self.error = e
            self.notify()
        finally:
            if renderer is not None:
                renderer.close()
            if store is not None:
                store.close()

    def _next_job(self, store: Store) -> tuple[Query, bool, bool] | None:
        """(query, swapped, requested by the viewer) to prepare next, or None."""
        try:
            return (*self._requests.get_nowait(), True)
        except queue.Empty:
            pass
        if self._ready.qsize() >= self.prefetch:
            return None
        # A viewer killed on this host would hold its pairs until its claims expire; give
        # them back first, so the oldest pending pair comes next.
        reap_dead_claims(store, self.viewer)
        query = store.claim_next_query(self.viewer, self.lease, exclude=sorted(self.held()),
                                       annotator=self.annotator)
        if query is None:
            return None
        self.hold(query.id)
        return query, bool(self.rng.random() < 0.5), False
