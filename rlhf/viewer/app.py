"""The labeling window: the event loop that ties playback, the HUD, the session and the
background pair preparation together.

One ``tick()`` handles the pending input, draws one frame and waits: at the playback frame
rate while clips play, and in a blocking wait (woken by input, by a prepared pair, or by the
poll interval) while nothing moves, so an idle viewer uses no CPU. Every answer is committed
to the store before the next pair is shown.
"""

from __future__ import annotations

import collections
import contextlib
import math
import signal
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pygame

from rlhf.config import Config
from rlhf.rundir import RunDir
from rlhf.store import Store, StoreUnavailable
from rlhf.store_pg import PgLocation
from rlhf.viewer.layout import BACKGROUND, Hud, Layout
from rlhf.viewer.playback import Playback
from rlhf.viewer.prepare import PairPreparer, PreparedPair
from rlhf.viewer.session import LabelSession, new_viewer_id

KEYS: dict[int, str] = {
    pygame.K_LEFT: "left", pygame.K_a: "left",
    pygame.K_RIGHT: "right", pygame.K_d: "right",
    pygame.K_DOWN: "equal", pygame.K_e: "equal",
    pygame.K_s: "skip",
    pygame.K_SPACE: "pause",
    pygame.K_PLUS: "faster", pygame.K_EQUALS: "faster", pygame.K_KP_PLUS: "faster",
    pygame.K_MINUS: "slower", pygame.K_KP_MINUS: "slower",
    pygame.K_u: "undo", pygame.K_BACKSPACE: "undo",
    pygame.K_h: "help",
    pygame.K_q: "quit", pygame.K_ESCAPE: "quit",
}
ANSWERS = ("left", "right", "equal", "skip")
KEPT_FOR_UNDO = 3  # answered pairs kept rendered, so undoing them shows them at once
MAX_DRAW_FPS = 120.0


class ViewerApp:
    """The pygame labeling app for one run directory.

    Args:
        run_dir: the run to label.
        cfg: the run's config (its ``viewer`` section and ``teacher.instructions`` are used);
            default: the run's own ``config.yaml``.
        teacher: name recorded with each label.
        annotator: the person labelling, recorded with each label (default: the OS user).
        seed: seeds the left/right assignment (None: fresh entropy).
        log: called with a line for each answer, undo and notable event (e.g. ``print``).
    """

    def __init__(self, run_dir: str | Path | PgLocation, cfg: Config | None = None,
                 teacher: str = "human", seed: int | None = None,
                 log: Callable[[str], None] | None = None, annotator: str | None = None):
        if isinstance(run_dir, PgLocation):  # a run on a server, from another machine
            if cfg is None:
                raise ValueError("a viewer on a PostgreSQL run needs its config (remote_config)")
            self.run: RunDir | None = None
            self.location: Path | PgLocation = run_dir
            self.cfg = cfg
        else:
            self.run = RunDir.open(run_dir)
            self.cfg = cfg if cfg is not None else self.run.load_config()
            self.location = self.run.store_location(self.cfg)
        self.vcfg = self.cfg.viewer
        self.teacher = teacher
        self.annotator = annotator
        self.rng = np.random.default_rng(seed)
        self.log = log or (lambda line: None)
        self.viewer = new_viewer_id()
        self.layout = Layout.for_size(self.vcfg.width, self.vcfg.height)
        self.store: Store | None = None
        self.session: LabelSession | None = None
        self.preparer: PairPreparer | None = None
        self.screen: pygame.Surface | None = None
        self.hud: Hud | None = None
        self.pair_ready_event = 0
        # What is on screen and what comes next.
        self.current: PreparedPair | None = None
        self.playback: Playback | None = None
        self.upcoming: list[PreparedPair] = []  # pairs put back by an undo, shown first
        self.kept: collections.deque[tuple[int, PreparedPair]] = collections.deque(
            maxlen=KEPT_FOR_UNDO)  # (label id, pair) of the last answers
        self.awaiting: int | None = None  # query id of an undone pair being re-rendered
        self.speed = self.vcfg.speed
        self.show_help = False
        self.message = ""
        self.running = False
        # Timing: when the current pair first reached the screen, for response times and
        # the benchmark's key-to-next-pair latency.
        self.shown_at: float | None = None
        self.last_pair_shown_at: float | None = None  # perf_counter of that flip
        self.pairs_shown = 0
        self.frames_drawn = 0
        self.ticks = 0
        self._last_tick: float | None = None
        self._next_heartbeat = 0.0
        self._next_status = 0.0
        self._status_text = ""
        self._first_flip_pending = False
        self._dirty = True  # something changed on screen: draw without waiting for a frame
        self._next_frame = 0.0  # monotonic time the next playback frame is due

    # -- lifecycle ----------------------------------------------------------------------------

    def open(self, background: bool = True) -> None:
        """Open the window and the store; start preparing pairs (unless ``background`` is
        False, as for a screenshot)."""
        pygame.display.init()
        pygame.font.init()
        self.screen = pygame.display.set_mode(self.layout.size)
        pygame.display.set_caption(f"rlhf label: {self.run.path if self.run else self.location}")
        self.hud = Hud(self.layout)
        self.pair_ready_event = pygame.event.custom_type()
        # A screenshot (no background worker) only reads: it works on a read-only run too.
        location = self.location
        self.store = Store(location, readonly=not background)
        self.session = LabelSession(self.store, self.viewer, self.teacher,
                                    self.vcfg.claim_seconds, annotator=self.annotator)
        self.running = True
        if background:
            self.preparer = PairPreparer(
                location, self.cfg.env, self.viewer, self.layout.frame_box,
                lease=self.vcfg.claim_seconds, poll=self.vcfg.poll_seconds,
                prefetch=self.vcfg.prefetch, rng=self.rng, notify=self._notify,
                annotator=self.session.annotator)
            self.preparer.start()

    def close(self) -> None:
        """Stop preparing, give back every claim, close the window. Answers are already
        committed, so nothing is lost whenever this runs (or does not, after a crash)."""
        self.running = False
        if self.preparer is not None:
            self.preparer.stop()
            self.preparer = None
        if self.session is not None:
            self.session.release()
        if self.store is not None:
            self.store.close()
            self.store = None
        with contextlib.suppress(pygame.error):
            pygame.display.quit()

    def run_forever(self) -> None:
        """Open (unless open), label until the person quits (Q, Esc, window close,
        SIGTERM), close."""
        if self.screen is None:
            self.open()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: self.quit())
        try:
            while self.running:
                self.tick()
        finally:
            self.close()

    def run_until(self, done: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Tick until ``done()`` (True) or ``timeout`` seconds pass (False)."""
        end = time.monotonic() + timeout
        while self.running and time.monotonic() < end:
            if done():
                return True
            self.tick()
        return done()

    def quit(self) -> None:
        self.running = False

    def _notify(self) -> None:
        # From the preparer's thread: wake the blocking wait. SDL's event queue is
        # thread-safe; the display may already be gone while quitting.
        with contextlib.suppress(pygame.error):
            pygame.event.post(pygame.event.Event(self.pair_ready_event))

    # -- one step of the loop ----------------------------------------------------------------

    def tick(self) -> None:
        """Draw if a frame is due or something changed, then wait for input until the next
        frame is due (or, with nothing moving, until it is time to look at the store), and
        handle it. A key press wakes the wait at once: it is never held for a frame."""
        now = time.monotonic()
        dt = 0.0 if self._last_tick is None else now - self._last_tick
        self._last_tick = now
        self.ticks += 1
        if self.preparer is not None and self.preparer.error is not None:
            raise self.preparer.error
        if self.current is not None and self.playback is not None:
            self.playback.advance(dt)
        self._periodic(now)
        if self.current is None:
            self._show_next()
        if self._dirty or now >= self._next_frame:
            self.draw()
        for event in self._events():
            self.handle(event)
            if not self.running:
                return

    def _events(self) -> list[pygame.event.Event]:
        if self._dirty:
            return pygame.event.get()
        if self.current is not None and not self.playback.paused:
            until = self._next_frame
        else:
            until = min(self._next_heartbeat, self._next_status)
        wait = min(self.vcfg.poll_seconds, until - time.monotonic())
        if wait <= 0:
            return pygame.event.get()
        first = pygame.event.wait(max(1, math.ceil(1000 * wait)))
        events = [first] if first.type != pygame.NOEVENT else []
        return events + pygame.event.get()

    def _periodic(self, now: float) -> None:
        try:
            if now >= self._next_heartbeat:
                self.session.heartbeat()
                self._next_heartbeat = now + self.vcfg.claim_seconds / 3
            if now >= self._next_status:
                self._refresh_status()
                self._next_status = now + self.vcfg.poll_seconds
        except StoreUnavailable as e:  # a server restarting: keep the window, try again
            self.message = "The store cannot be reached; trying again (your answers are saved)."
            self.log(f"store unavailable: {e}")
            self._next_heartbeat = self._next_status = now + self.vcfg.poll_seconds

    def _show_next(self) -> bool:
        pair = None
        if self.upcoming:
            pair = self.upcoming.pop()
        elif self.preparer is not None:
            pair = self.preparer.take()
            if pair is not None and self.awaiting == pair.query.id:
                self.awaiting = None
        if pair is None:
            return False
        self.show(pair)
        return True

    def show(self, pair: PreparedPair) -> None:
        """Put a pair on screen, playing from its first frame."""
        self.current = pair
        self.playback = Playback(pair.length, self.vcfg.fps or pair.fps, self.speed,
                                 self.vcfg.loop_pause_frames)
        self.shown_at = None
        self._first_flip_pending = True
        self._dirty = True
        self._last_tick = time.monotonic()  # time spent waiting for it is not playback

    # -- input -------------------------------------------------------------------------------

    def handle(self, event: pygame.event.Event) -> None:
        if event.type == pygame.QUIT:
            self.quit()
        elif event.type == pygame.KEYDOWN and event.key in KEYS:
            self.act(KEYS[event.key])
        elif event.type == pygame.MOUSEBUTTONDOWN and event.button == 1:
            action = self.layout.button_at(event.pos)
            if action is not None:
                self.act(action)

    def act(self, action: str) -> None:
        """Do what a key or button asks."""
        self.message = ""
        self._dirty = True
        if action in ANSWERS:
            self.answer(action)
        elif action == "undo":
            self.undo()
        elif action == "quit":
            self.quit()
        elif action == "help":
            self.show_help = not self.show_help
        elif self.playback is not None:
            if action == "pause":
                self.playback.toggle_pause()
            elif action == "faster":
                self.playback.faster()
            elif action == "slower":
                self.playback.slower()
            self.speed = self.playback.speed

    def answer(self, side: str) -> None:
        pair, playback = self.current, self.playback
        if pair is None or playback is None:
            self.message = "No pair on screen to answer."
            return
        if self.vcfg.require_full_view and not playback.played_once:
            self.message = "Please watch both clips to the end first."
            return
        rt = None if self.shown_at is None else time.monotonic() - self.shown_at
        try:
            answer = self.session.answer(pair.query, side, pair.swapped, rt)
        except StoreUnavailable as e:
            # Not saved (the server is gone for now): the pair stays on screen, the person
            # can answer again once the store is back; nothing earlier is lost.
            self.message = "Not saved, the store cannot take it now; answer again in a moment."
            self.log(f"query {pair.query.id}: not saved: {e}")
            return
        if self.preparer is not None:
            self.preparer.drop(pair.query.id)
        self.current = self.playback = None
        if answer is None:
            self.message = f"Pair {pair.query.id} was answered in another viewer first."
            self.log(f"query {pair.query.id}: already answered elsewhere; not stored")
        else:
            self.kept.append((answer.label_id, pair))
            self.log(f"label {answer.label_id}: query {pair.query.id} {side} "
                     f"-> {answer.choice} (swapped={pair.swapped}, {rt or 0:.2f}s)")
        self._next_status = 0.0
        self._show_next()

    def undo(self) -> None:
        answer = self.session.undo()
        if answer is None:
            self.message = "Nothing to undo in this session."
            return
        if self.current is not None:
            self.upcoming.append(self.current)
        self.current = self.playback = None
        kept = next((p for lid, p in self.kept if lid == answer.label_id), None)
        if kept is not None:
            self.kept.remove((answer.label_id, kept))
            self.show(kept)
        elif self.preparer is not None:
            self.awaiting = answer.query.id
            self.preparer.request(answer.query, answer.swapped)
        if self.preparer is not None:
            self.preparer.hold(answer.query.id)
        self.message = f"Undone: your answer to pair {answer.query.id} was taken back."
        self.log(f"undo label {answer.label_id}: query {answer.query.id} is pending again")
        self._next_status = 0.0

    # -- drawing -----------------------------------------------------------------------------

    def _refresh_status(self) -> None:
        counts = self.store.counts()
        # A run on a server labelled from elsewhere has no status.json here: counts only.
        status = self.run.read_status() if self.run is not None else {}
        agent = ""
        if status.get("kind") == "tune":  # a tuning run: comparisons and the best so far
            parts = [f"this session: {self.session.answered}", f"pending: {counts.pending}",
                     f"comparisons: {counts.labels}/{status.get('total_comparisons', '?')}"]
            if status.get("utility_mean") is not None:
                parts.append(f"best so far: estimated utility {status['utility_mean']:.2f} "
                             f"± {status['utility_std']:.2f}")
            if status.get("finished"):
                parts.append("finished")
            self._status_text = "   ·   ".join(parts)
            self._dirty = True
            return
        if status:
            agent = (f"agent: {status.get('timesteps', 0):,}/"
                     f"{status.get('total_timesteps', 0):,} steps")
            ret = status.get("latest_eval_return")
            if ret is not None:
                agent += f", return {ret:.1f}"
            if status.get("waiting_for_labels"):
                agent += f", waiting for {status['waiting_for_labels']} labels"
            if status.get("finished"):
                agent += ", finished"
        total = status.get("total_labels", self.cfg.loop.total_labels)
        parts = [self._own_pace(), f"pending: {counts.pending}",
                 f"labels: {counts.labels}/{total}"]
        if agent:
            parts.append(agent)
        self._status_text = "   ·   ".join(parts)
        self._dirty = True

    def _own_pace(self) -> str:
        """The person's own count and pace this session, for the HUD."""
        s = self.session
        who = s.annotator if s.annotator != "human" else "this session"
        text = f"{who}: {s.answered}"
        if s.response_times:
            text += f" ({statistics.median(s.response_times):.1f} s a pair)"
        return text

    def draw(self) -> None:
        screen, hud, layout = self.screen, self.hud, self.layout
        screen.fill(BACKGROUND)
        hud.instructions(screen, self.cfg.teacher.instructions)
        pair, playback = self.current, self.playback
        if pair is not None:
            i, hold = playback.frame, playback.at_loop_point
            left = pair.left[min(i, len(pair.left) - 1)]
            right = pair.right[min(i, len(pair.right) - 1)]
            hud.panel(screen, layout.left, left, hold)
            hud.panel(screen, layout.right, right, hold)
        else:
            waiting = self._waiting_text()
            hud.panel(screen, layout.left, None, False, waiting)
            hud.panel(screen, layout.right, None, False, "")
        answers_ok = pair is not None and (not self.vcfg.require_full_view
                                           or playback.played_once)
        hud.captions(screen, pair is not None)
        hud.message(screen, self.message or self._playback_text())
        hud.buttons(screen, answers_ok)
        hud.status(screen, self._status_text)
        if self.show_help:
            hud.help(screen)
        pygame.display.flip()
        self.frames_drawn += 1
        self._dirty = False
        if playback is not None and not playback.paused:
            rate = min(MAX_DRAW_FPS, max(10.0, playback.frames_per_second))
            # On schedule, not "a frame after this one", so drawing time does not slow the
            # frame rate; after a stall (or a pause) the schedule starts again from now.
            now, due = time.monotonic(), self._next_frame + 1 / rate
            self._next_frame = due if now < due < math.inf else now + 1 / rate
        else:
            self._next_frame = math.inf
        if self._first_flip_pending and pair is not None:
            self._first_flip_pending = False
            self.shown_at = time.monotonic()
            self.last_pair_shown_at = time.perf_counter()
            self.pairs_shown += 1

    def _waiting_text(self) -> str:
        if self.awaiting is not None or (self.preparer is not None and self.preparer.busy):
            return "Preparing the next pair..."
        return (f"No pair is waiting to be labelled. The trainer adds pairs as it goes; "
                f"looking again every {self.vcfg.poll_seconds:g} s. Press Q to quit.")

    def _playback_text(self) -> str:
        if self.playback is None:
            return ""
        state = "paused" if self.playback.paused else "playing"
        return (f"pair {self.current.query.id}   ·   {state} at {self.playback.speed:g}x   ·   "
                f"frame {self.playback.frame + 1}/{self.playback.length}")
