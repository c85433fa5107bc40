"""The labeling viewer, headless (SDL_VIDEODRIVER=dummy from conftest): the real window loop,
driven by posted pygame events, on a run directory holding real Pendulum clips."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pygame
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv

from rlhf.cli import main as cli_main
from rlhf.clips import ClipCollector
from rlhf.config import load_config
from rlhf.environment import env_factory
from rlhf.rundir import RunDir
from rlhf.store import Store
from rlhf.viewer.app import ViewerApp
from rlhf.viewer.layout import Layout
from rlhf.viewer.session import choice_for

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = {"left": ("a", "b"), "right": ("b", "a"), "equal": ("equal", "equal"),
            "skip": ("skip", "skip")}  # side -> choice when (not swapped, swapped)


def make_run(path: Path, n_clips: int = 7, clip_length: int = 8, seed: int = 0) -> RunDir:
    """A run directory whose store holds real Pendulum clips (with states) and a chain of
    queries (clip i vs clip i+1), as a trainer with a human teacher leaves it."""
    cfg = load_config(overrides=[f"run_dir={path}", "env.id=Pendulum-v1",
                                 f"loop.clip_length={clip_length}", "teacher.kind=human",
                                 "viewer.poll_seconds=0.2", "viewer.width=960",
                                 "viewer.height=600"])
    run, lock = RunDir.create(cfg)
    lock.release()  # no trainer: viewers and tests open the store as a trainer left it
    venv = DummyVecEnv([env_factory(cfg.env)])
    venv.seed(seed)
    collector = ClipCollector(venv, clip_length)
    collector.reset()
    rng = np.random.default_rng(seed)
    while len(collector.pool) < n_clips:
        collector.step(rng.uniform(-2, 2, size=(1, 1)).astype(np.float32))
    venv.close()
    with Store(run.store, create=True) as store:
        ids = [c.id for c in store.add_clips(list(collector.pool)[:n_clips])]
        store.add_queries([(ids[i], ids[i + 1]) for i in range(n_clips - 1)], iteration=0)
    return run


@pytest.fixture
def run_dir(tmp_path) -> RunDir:
    return make_run(tmp_path / "run")


def key(k: int) -> None:
    pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=k, mod=0, unicode="",
                                         scancode=0))


def press(app: ViewerApp, k: int) -> None:
    """Press a key once the pair on screen can be answered; wait until it was handled."""
    assert app.run_until(lambda: app.current is not None, 10), "no pair came on screen"
    before = (app.pairs_shown, app.session.answered, len(app.session.history))
    key(k)
    assert app.run_until(
        lambda: (app.pairs_shown, app.session.answered, len(app.session.history)) != before,
        10), f"key {pygame.key.name(k)} had no effect"


@pytest.fixture
def open_app():
    apps: list[ViewerApp] = []

    def _open(run: RunDir, **kwargs) -> ViewerApp:
        app = ViewerApp(run.path, **kwargs)
        app.open()
        apps.append(app)
        return app

    yield _open
    for app in apps:
        app.close()


# -- the store's claims ---------------------------------------------------------------------


# The claim protocol itself (one viewer per query, expiry, first answer wins, concurrency)
# is tested on both backends in tests/test_store.py.


# -- keys, buttons, undo -----------------------------------------------------------------------


def test_scripted_keys_store_exactly_the_expected_labels(run_dir, open_app):
    app = open_app(run_dir, seed=3, teacher="tester")
    script = [(pygame.K_LEFT, "left"), (pygame.K_d, "right"), (pygame.K_DOWN, "equal"),
              (pygame.K_s, "skip"), (pygame.K_u, None), (pygame.K_e, "equal"),
              (pygame.K_BACKSPACE, None), (pygame.K_RIGHT, "right"), (pygame.K_a, "left")]
    pressed: dict[int, str] = {}  # query id -> the side of its standing answer
    sides: dict[int, bool] = {}  # query id -> shown swapped
    for k, side in script:
        assert app.run_until(lambda: app.current is not None, 10)
        shown = app.current.query.id
        sides.setdefault(shown, app.current.swapped)
        press(app, k)
        if side is None:  # undo: the last answered pair is back on screen, same sides
            undone = list(pressed)[-1]
            del pressed[undone]
            assert app.current.query.id == undone and app.current.swapped == sides[undone]
        else:
            pressed[shown] = side
    with Store(run_dir.store) as store:
        labels = {lab.query_id: lab for lab in store.labels()}
        counts = store.counts()
    assert set(labels) == set(pressed)
    for qid, side in pressed.items():
        lab = labels[qid]
        assert lab.choice == EXPECTED[side][int(lab.shown_swapped)], (qid, side)
        assert lab.teacher == "tester" and lab.response_time > 0
    assert {lab.shown_swapped for lab in labels.values()} == {True, False}
    assert counts.label_events == 7 + 2  # two retractions appended, nothing deleted
    assert counts.skipped == 0  # the skip was undone and answered 'equal', then undone
    assert app.session.answered == 5


def test_buttons_answer_like_keys(run_dir, open_app):
    app = open_app(run_dir, seed=0)
    assert app.run_until(lambda: app.current is not None, 10)
    pair = app.current
    pos = app.layout.buttons["right"].center
    pygame.event.post(pygame.event.Event(pygame.MOUSEBUTTONDOWN, button=1, pos=pos))
    assert app.run_until(lambda: app.session.answered == 1, 10)
    (lab,) = Store(run_dir.store).labels()
    assert lab.query_id == pair.query.id
    assert lab.choice == choice_for("right", pair.swapped) == EXPECTED["right"][pair.swapped]


def test_playback_keys_and_required_full_view(run_dir, open_app):
    cfg = run_dir.load_config()
    cfg.viewer.require_full_view = True
    app = open_app(run_dir, cfg=cfg, seed=0)
    assert app.run_until(lambda: app.current is not None, 10)
    for k in (pygame.K_SPACE, pygame.K_PLUS, pygame.K_PLUS, pygame.K_MINUS, pygame.K_h):
        key(k)
    key(pygame.K_LEFT)  # too early: both clips have not played through yet
    app.run_until(lambda: False, 0.1)
    assert app.playback.paused and app.playback.speed == 1.5 and app.show_help
    assert app.session.answered == 0 and "watch both clips" in app.message
    key(pygame.K_SPACE)
    assert app.run_until(lambda: app.playback.played_once, 5)
    press(app, pygame.K_LEFT)
    assert app.session.answered == 1


# -- resume, idle, screenshot ------------------------------------------------------------------


def test_quit_and_reopen_resumes_at_the_next_unanswered_query(run_dir, open_app):
    first = open_app(run_dir, seed=0)
    press(first, pygame.K_LEFT)
    press(first, pygame.K_RIGHT)
    assert first.run_until(lambda: first.current is not None, 10)
    key(pygame.K_q)
    assert first.run_until(lambda: not first.running, 5)
    first.close()
    store = Store(run_dir.store)
    assert store.claim_holders() == {}  # quitting gave back the shown and prefetched pairs
    assert [q.id for q in store.pending_queries()] == [3, 4, 5, 6]
    second = open_app(run_dir, seed=0)
    assert second.run_until(lambda: second.current is not None, 10)
    assert second.current.query.id == 3


def test_idle_viewer_waits_without_busy_looping_then_picks_up_new_queries(tmp_path, open_app):
    run = make_run(tmp_path / "run", n_clips=3)
    store = Store(run.store)
    for q in store.pending_queries():  # nothing left to label
        store.add_label(q.id, "a", "someone")
    app = open_app(run)
    cpu0, ticks0 = time.thread_time(), app.ticks
    app.run_until(lambda: False, 1.5)
    assert app.current is None and app.ticks - ticks0 < 25  # poll 0.2 s: ~8 wake-ups
    assert time.thread_time() - cpu0 < 0.5
    assert "No pair is waiting" in app._waiting_text()
    (q,) = store.add_queries([(1, 3)], iteration=1)
    assert app.run_until(lambda: app.current is not None, 5)
    assert app.current.query.id == q.id


def test_screenshot_shows_both_clips_and_the_hud(run_dir, tmp_path, capsys):
    out = tmp_path / "shot.png"
    assert cli_main(["label", str(run_dir.path), "--screenshot", str(out)]) == 0
    assert "saved" in capsys.readouterr().out
    image = pygame.surfarray.array3d(pygame.image.load(str(out))).swapaxes(0, 1)  # (H, W, 3)
    assert image.shape == (600, 960, 3)
    lay = Layout.for_size(960, 600)

    def region(rect: pygame.Rect) -> np.ndarray:
        return image[rect.top:rect.bottom, rect.left:rect.right]

    left, right = region(lay.left.inflate(-10, -10)), region(lay.right.inflate(-10, -10))
    for clip in (left, right):
        assert (clip > 240).all(axis=-1).mean() > 0.3  # Pendulum's white background
        assert len(np.unique(clip.reshape(-1, 3), axis=0)) > 20  # and the drawn pendulum
    assert not np.array_equal(left, right)
    for hud in (lay.instructions, lay.status, lay.buttons["left"], lay.left_caption):
        part = region(hud)
        assert len(np.unique(part.reshape(-1, 3), axis=0)) > 5, hud  # text drawn
    with Store(run_dir.store) as store:  # a screenshot claims and labels nothing
        assert store.claim_holders() == {} and store.counts().label_events == 0


def test_label_command_errors_are_one_line(tmp_path, capsys):
    assert cli_main(["label", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rlhf: error:") and "not a run directory" in err
    assert "\n" not in err


# -- several processes ---------------------------------------------------------------------

VIEWER_PROCESS = textwrap.dedent("""
    import os, random, sys, time
    os.environ["SDL_VIDEODRIVER"] = "dummy"
    import pygame
    from rlhf.viewer.app import ViewerApp

    keys = [pygame.K_LEFT, pygame.K_RIGHT, pygame.K_DOWN, pygame.K_s]
    app = ViewerApp(sys.argv[1], seed=int(sys.argv[2]), teacher=sys.argv[3],
                    log=lambda line: print(line, flush=True))
    app.open()
    print("ready", flush=True)
    rng = random.Random(int(sys.argv[2]))
    next_key = time.monotonic()
    window_tick = app.tick

    def tick():  # a fast person: a random key every 20-60 ms, posted between ticks
        global next_key
        if time.monotonic() >= next_key:
            pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=rng.choice(keys)))
            next_key = time.monotonic() + rng.uniform(0.02, 0.06)
        window_tick()

    app.tick = tick
    app.run_forever()
""")


class Viewer:
    """A viewer process whose stdout and stderr are read line by line in threads for its
    whole life: nothing it printed is lost (mixing ``readline`` with ``communicate`` drops
    what ``readline`` had buffered) and a full pipe never blocks it."""

    def __init__(self, run: RunDir, seed: int, name: str):
        env = {**os.environ, "SDL_VIDEODRIVER": "dummy", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", VIEWER_PROCESS, str(run.path), str(seed), name],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        self.lines: list[str] = []
        self.err: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(f, out), daemon=True)
                         for f, out in ((self.proc.stdout, self.lines),
                                        (self.proc.stderr, self.err))]
        for t in self._readers:
            t.start()

    @staticmethod
    def _read(f, out: list[str]) -> None:
        for line in f:
            out.append(line.rstrip("\n"))

    def wait_for(self, done, timeout: float) -> None:
        """Until ``done(lines)``; fails with the viewer's stderr if it exits or times out."""
        deadline = time.monotonic() + timeout
        while not done(self.lines):
            assert self.proc.poll() is None, "\n".join(self.err)
            assert time.monotonic() < deadline, "\n".join(self.err)
            time.sleep(0.02)

    def finish(self, sig: int, timeout: float = 30) -> int:
        """Send ``sig``, wait for the exit and for the last output; the return code."""
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        for t in self._readers:
            t.join(10)
        return code

    @property
    def stderr(self) -> str:
        return "\n".join(self.err)


def stored_label_ids(lines: list[str]) -> dict[int, int]:
    """label id -> query id, from a viewer's log lines ('label 3: query 2 left -> a ...')."""
    out = {}
    for line in lines:
        if line.startswith("label "):
            head, _, rest = line.partition(": query ")
            out[int(head.split()[1])] = int(rest.split()[0])
    return out


def test_kill_9_of_a_viewer_loses_no_answered_label(run_dir, open_app):
    viewer = Viewer(run_dir, seed=1, name="killed")
    viewer.wait_for(lambda lines: len(stored_label_ids(lines)) >= 3, 60)
    viewer.finish(signal.SIGKILL)
    said = stored_label_ids(viewer.lines)
    assert len(said) >= 3
    with Store(run_dir.store) as store:  # opens: the database is intact (quick_check)
        events = store.db.execute("SELECT id, query_id FROM labels "
                                  "WHERE choice != 'retract'").fetchall()
        pending = [q.id for q in store.pending_queries()]
    assert said.items() <= dict(events).items()  # every answer it reported is stored
    # The dead viewer's claims do not hold its pairs back from the next viewer.
    app = open_app(run_dir, seed=0)
    assert app.run_until(lambda: app.current is not None, 10)
    assert app.current.query.id == pending[0]


TRAINER_PROCESS = textwrap.dedent("""
    import sys, time
    from rlhf.store import Store
    store = Store(sys.argv[1])
    clips = store.get_clips([1, 2, 3, 4, 5, 6, 7])
    for batch in range(4):  # new clips and queries while the viewers label
        time.sleep(0.3)
        ids = [c.id for c in store.add_clips(clips)]
        store.add_queries([(ids[i], ids[i + 1]) for i in range(6)], iteration=batch + 1)
    print("done", flush=True)
""")


def test_trainer_and_two_viewers_answer_each_query_at_most_once(run_dir):
    viewers = [Viewer(run_dir, seed=s, name=f"person{s}") for s in (1, 2)]
    for v in viewers:  # both windows open before new pairs
        v.wait_for(lambda lines: "ready" in lines, 60)
    trainer = subprocess.Popen([sys.executable, "-c", TRAINER_PROCESS, str(run_dir.store)],
                               stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert trainer.wait(60) == 0
    store = Store(run_dir.store)
    deadline = time.monotonic() + 90
    while store.counts().pending > 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    # SIGTERM quits cleanly, like pressing Q. First: did both viewers exit cleanly? (A
    # crash between storing a label and logging it would otherwise surface below as a count
    # mismatch, without its traceback.)
    codes = [v.finish(signal.SIGTERM) for v in viewers]
    assert codes == [0, 0], [v.stderr for v in viewers]
    said = [stored_label_ids(v.lines) for v in viewers]
    rows = store.db.execute("SELECT id, query_id, teacher FROM labels").fetchall()
    assert store.counts().pending == 0 and store.counts().queries == 6 + 4 * 6
    per_query: dict[int, int] = {}
    for _, qid, _ in rows:
        per_query[qid] = per_query.get(qid, 0) + 1
    assert set(per_query.values()) == {1}  # every query answered exactly once
    stored = {lid: qid for lid, qid, _ in rows}
    for mine in said:
        assert mine and mine.items() <= stored.items()  # both labelled; all answers stored
    unreported = sorted(set(stored) - {lid for m in said for lid in m})
    assert sum(len(m) for m in said) == len(rows), (
        f"stored but never logged by a viewer: labels {unreported}; "
        f"viewer stderr: {[v.stderr[-2000:] for v in viewers]}")


# -- training with a person in the loop ----------------------------------------------------


class Person(threading.Thread):
    """Stands in for someone at the viewer: answers pending pairs like an oracle, through
    the same claims, after the trainer has said it is waiting; stops after ``limit``."""

    def __init__(self, run_dir: Path, limit: int | None = None):
        super().__init__(daemon=True)
        self.rundir, self.limit = RunDir(run_dir), limit
        self.stop = threading.Event()
        self.saw_waiting: dict | None = None
        self.answered = 0

    def run(self) -> None:
        while self.saw_waiting is None and not self.stop.is_set():
            status = self.rundir.read_status()
            if status.get("waiting_for_labels"):
                self.saw_waiting = status
            time.sleep(0.05)
        store = Store(self.rundir.store)
        while not self.stop.is_set() and (self.limit is None or self.answered < self.limit):
            query = store.claim_next_query("person", 30)
            if query is None:
                time.sleep(0.05)
                continue
            a, b = store.get_clips([query.clip_a, query.clip_b])
            store.add_viewer_label(query.id, "a" if a.true_return > b.true_return else "b",
                                   "person", shown_swapped=False, response_time=0.5)
            self.answered += 1
        store.close()


def human_config(run_dir: Path, *overrides: str):
    return load_config(ROOT / "configs" / "smoke.yaml", [
        f"run_dir={run_dir}", "teacher.kind=human", "teacher.min_new_labels=3",
        "loop.total_timesteps=512", "agent.kwargs.n_steps=128", "eval.episodes=1",
        *overrides])


def test_asynchronous_person_run_waits_for_first_labels_then_never_stalls(tmp_path):
    from rlhf.loop import run

    person = Person(tmp_path / "run", limit=5)
    person.start()
    try:
        result = run(human_config(tmp_path / "run"), progress=False)
    finally:
        person.stop.set()
    first = result.metrics[0]
    assert person.saw_waiting is not None and person.saw_waiting["timesteps"] == 0
    assert first["timesteps"] == 0 and first["labels"] >= 3  # no training before labels
    assert not np.isnan(first["rm_train_loss"])  # the first fit happened before training
    assert result.timesteps == 512  # the agent went on while pairs stayed unanswered
    with Store(tmp_path / "run" / "store.sqlite") as store:
        counts = store.counts()
    assert counts.labels == 5 and counts.pending > 0


@pytest.mark.slow
def test_synchronous_person_run_waits_for_every_batch(tmp_path):
    from rlhf.loop import run

    person = Person(tmp_path / "run")
    person.start()
    try:
        result = run(human_config(tmp_path / "run", "teacher.asynchronous=false"),
                     progress=False)
    finally:
        person.stop.set()
    assert all(row["labels"] == row["queries"] for row in result.metrics)
    assert result.metrics[0]["timesteps"] == 0


@pytest.mark.slow
def test_synchronous_person_run_resumed_mid_wait_waits_again(tmp_path):
    # Stopped while waiting for the first batch (nothing answered), the resumed run must
    # wait for those pending pairs, not fit on nothing and ask about more pairs.
    from rlhf.loop import run
    from rlhf.resume import resume_config

    run_dir = tmp_path / "run"
    overrides = [f"{k}={v}" for k, v in (("teacher.kind", "human"),
                 ("teacher.asynchronous", "false"), ("loop.total_timesteps", 512),
                 ("agent.kwargs.n_steps", 128), ("eval.episodes", 1))]
    trainer = subprocess.Popen(
        [sys.executable, "-m", "rlhf.cli", "train", str(ROOT / "configs" / "smoke.yaml"),
         *overrides, "--run-dir", str(run_dir), "--quiet"], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (
                (run_dir / "status.json").exists()
                and RunDir(run_dir).read_status().get("waiting_for_labels")):
            time.sleep(0.1)
        with Store(run_dir / "store.sqlite") as store:
            asked = store.counts()
        assert asked.pending > 0 and asked.labels == 0
    finally:
        trainer.send_signal(signal.SIGTERM)
        trainer.communicate(timeout=60)
    RunDir(run_dir).write_status({})  # the person waits until the resumed run says so
    person = Person(run_dir)
    person.start()
    try:
        result = run(resume_config(run_dir), resume=True, progress=False)
    finally:
        person.stop.set()
    assert all(row["labels"] == row["queries"] for row in result.metrics)
    first = result.metrics[0]
    assert first["queries"] == asked.queries  # the pending pairs, not new ones
    assert not np.isnan(first["rm_train_loss"])


@pytest.mark.slow
def test_train_with_label_opens_the_viewer_in_a_child_process(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy"}
    trainer = subprocess.Popen(
        [sys.executable, "-m", "rlhf.cli", "train", str(ROOT / "configs" / "smoke.yaml"),
         "teacher.kind=human", f"run_dir={run_dir}", "--label", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT,
        # Ctrl-C must reach the trainer even when pytest itself was started in the
        # background (`pytest &`), where SIGINT is inherited as ignored and Python then
        # installs no KeyboardInterrupt handler.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        holders: dict = {}
        while not holders and time.monotonic() < deadline:  # the viewer claims a pair
            time.sleep(0.5)
            if (run_dir / "store.sqlite").exists() and RunDir(run_dir).read_status():
                with Store(run_dir / "store.sqlite") as store:
                    holders = store.claim_holders()
        assert holders, "the viewer never claimed a pair"
        assert RunDir(run_dir).read_status()["waiting_for_labels"] > 0
    finally:
        trainer.send_signal(signal.SIGINT)
        # A hang guard, not a timing (the exit takes about 5 s alone on 2 cores).
        out, _ = trainer.communicate(timeout=120)
    assert "waiting for" in out and "rlhf label" in out
    with Store(run_dir / "store.sqlite") as store:
        assert store.claim_holders() == {}  # the viewer was closed with the trainer
