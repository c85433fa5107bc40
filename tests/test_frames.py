"""Recorded frames, the fallback for envs whose state cannot be restored, when a person labels.

``DotsEnv`` has no ``get_state``/``set_state`` and draws its frame from (position, step), both
of which its observation holds exactly, so every recorded frame can be checked against the
frame ``render()`` would show for the observation the agent acted on.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pygame
import pytest

from rlhf import loop
from rlhf.agent import EnvStack, make_env_stack, rollout
from rlhf.checkenv import check, preflight
from rlhf.clips import Clip
from rlhf.config import Config, ConfigError, load_config
from rlhf.environment import EnvError, downscale_frame, needs_recorded_frames
from rlhf.loop import Run
from rlhf.rundir import RunDir
from rlhf.store import Store
from rlhf.viewer import screenshot
from rlhf.viewer.layout import Layout


class DotsEnv(gym.Env):
    """A dot on 25 cells; no restorable state. Observation [p, t] float32 (exact integers).

    Frame (150, 250, 3): the top half is one colour (R = 20 + 10 t, G = 100, B = 8 p), the
    bottom half black with a white bar at cells [10 p, 10 p + 10). ``renders`` counts
    ``render()`` calls.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    H, W = 150, 250

    def __init__(self, horizon: int = 10, render_mode: str | None = None):
        self.horizon = horizon
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(0, 25, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(3)
        self.p, self.t, self.renders = 0, 0, 0

    def _obs(self) -> np.ndarray:
        return np.array([self.p, self.t], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.p, self.t = int(self.np_random.integers(0, 25)), 0
        return self._obs(), {}

    def step(self, action):
        self.p = int(np.clip(self.p + int(action) - 1, 0, 24))
        self.t += 1
        return self._obs(), -abs(self.p - 12.0), False, self.t >= self.horizon, {}

    @classmethod
    def draw(cls, p: int, t: int) -> np.ndarray:
        """(150, 250, 3) uint8 frame of position p at step t."""
        frame = np.zeros((cls.H, cls.W, 3), dtype=np.uint8)
        frame[: cls.H // 2] = (20 + 10 * t, 100, 8 * p)
        frame[cls.H // 2:, 10 * p: 10 * p + 10] = 255
        return frame

    def render(self) -> np.ndarray:
        self.renders += 1
        return self.draw(self.p, self.t)


class BlindDotsEnv(DotsEnv):
    """Neither restorable state nor rgb_array frames: a person cannot label it at all."""

    metadata = {"render_modes": [], "render_fps": 10}


DOTS, BLIND = "test/Dots-v0", "test/BlindDots-v0"
for _id, _cls in ((DOTS, DotsEnv), (BLIND, BlindDotsEnv)):
    if _id not in gym.registry:
        gym.register(_id, entry_point=_cls)


def dots_config(*overrides: str) -> Config:
    return load_config(overrides=[f"env.id={DOTS}", "env.n_envs=3", "loop.clip_length=5",
                                  "teacher.kind=human", "teacher.score=null",
                                  "agent.kwargs.n_steps=32", "agent.kwargs.batch_size=32",
                                  "reward.ensemble=2", "reward.threads=1", *overrides])


def collect(stack: EnvStack, steps: int, seed: int = 0) -> None:
    """Step the collector with random actions (the horizon, 10, divides ``steps``)."""
    rng = np.random.default_rng(seed)
    col = stack.collector
    col.reset()
    for _ in range(steps):
        col.step(rng.integers(0, 3, col.num_envs))


def renders(stack: EnvStack) -> int:
    return sum(env.unwrapped.renders for env in stack.venv.envs)


def expected_frames(clip: Clip, size: int) -> np.ndarray:
    """(T, h, w, 3): what render() showed for each step's observation, downscaled."""
    return np.stack([downscale_frame(DotsEnv.draw(int(p), int(t)), size) for p, t in clip.obs])


# -- collection ------------------------------------------------------------------------------


def test_recorded_frames_show_the_observation_each_step_acted_on():
    cfg = dots_config("env.frame_fraction=0.5")
    assert needs_recorded_frames(cfg)
    stack = make_env_stack(cfg)
    try:
        collect(stack, 200)
        pool = list(stack.collector.pool)
        assert len(pool) == stack.collector.clips_recorded > 20
        for clip in pool:
            assert clip.states is None
            assert clip.frames.shape == (5, 77, 128, 3) and clip.frames.dtype == np.uint8
            np.testing.assert_array_equal(clip.frames, expected_frames(clip, 128))
        # Both sides of an auto-reset: clips ending on an episode's last step (their last
        # frame is the state before it, not the next episode's reset state), and clips of a
        # later episode starting at its reset state (not the previous terminal state).
        ends = [c for c in pool if c.dones[-1]]
        restarts = [c for c in pool if c.obs[0, 1] == 0 and c.env_step > 3 * 10]
        assert ends and restarts
        assert all(c.obs[-1, 1] == 9 for c in ends)
    finally:
        stack.close()


def test_about_frame_fraction_of_clips_are_recorded_and_only_they_render():
    cfg = dots_config("env.frame_fraction=0.25", "env.n_envs=4")
    stack = make_env_stack(cfg)
    try:
        collect(stack, 600)
        col = stack.collector
        assert col.clips_collected == 4 * 600 // 5
        share = col.clips_recorded / col.clips_collected
        assert 0.19 < share < 0.31, share
        # A person can only be shown recorded clips: nothing else is a query candidate.
        assert len(col.pool) == col.clips_recorded
        assert all(c.frames is not None for c in col.pool)
        # Only recorded clips rendered, one frame per step (no partial clips: 10 = 2 * 5).
        assert renders(stack) == col.clips_recorded * 5
        steps = [c.env_step for c in col.pool]
    finally:
        stack.close()
    again = make_env_stack(cfg)  # the decisions come from a generator seeded by cfg.seed
    try:
        collect(again, 600)
        assert [c.env_step for c in again.collector.pool] == steps
    finally:
        again.close()


def test_a_simulated_teacher_never_renders():
    cfg = dots_config("teacher.kind=oracle")
    assert not needs_recorded_frames(cfg)
    stack = make_env_stack(cfg)
    try:
        collect(stack, 100)
        col = stack.collector
        assert col.clips_recorded == 0 and len(col.pool) == col.clips_collected == 60
        assert all(c.frames is None and c.states is None for c in col.pool)
        assert renders(stack) == 0
        assert all(env.unwrapped.render_mode is None for env in stack.venv.envs)
    finally:
        stack.close()


def test_restorable_envs_replay_states_and_record_no_frames(line_env_id):
    cfg = dots_config(f"env.id={line_env_id}", "env.frame_fraction=1.0")
    assert not needs_recorded_frames(cfg)
    stack = make_env_stack(cfg)
    try:
        rng = np.random.default_rng(0)
        stack.collector.reset()
        for _ in range(20):
            stack.collector.step(rng.uniform(-1, 1, (3, 1)).astype(np.float32))
        pool = list(stack.collector.pool)
        assert pool and all(c.frames is None and c.states is not None for c in pool)
        assert all(env.unwrapped.render_mode is None for env in stack.venv.envs)
    finally:
        stack.close()


def test_frames_are_small_and_the_pool_keeps_to_its_frame_memory():
    clip_bytes = 5 * 19 * 32 * 3  # 5 frames of 150x250 scaled to 19x32
    cfg = dots_config("env.frame_size=32", "env.frame_fraction=1.0",
                      f"env.frame_memory_mb={4.5 * clip_bytes / 2**20}")
    stack = make_env_stack(cfg)
    try:
        collect(stack, 40)
        col = stack.collector
        assert col.clips_recorded == 24
        assert col.pool.maxlen == 4 and len(col.pool) == 4  # the most recent 4
        assert [c.env_step for c in col.pool] == sorted(c.env_step for c in col.pool)[-4:]
        for clip in col.pool:
            assert clip.frames.shape == (5, 19, 32, 3) and clip.frames.nbytes == clip_bytes
            np.testing.assert_array_equal(clip.frames, expected_frames(clip, 32))
    finally:
        stack.close()


def test_downscale_is_an_area_average_that_keeps_thin_lines():
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[:, 321] = 255  # one pixel wide
    small = downscale_frame(frame, 128)
    assert small.shape == (96, 128, 3) and small.dtype == np.uint8
    assert small[:, 64].min() == 51  # 1 of the 5 columns each output pixel averages
    assert small.sum() == small[:, 64].sum()
    frame[:240] = (10, 20, 30)
    np.testing.assert_array_equal(downscale_frame(frame, 128)[:48, :10],
                                  np.broadcast_to([10, 20, 30], (48, 10, 3)))
    tiny = np.ones((8, 40, 3), np.uint8)
    same = downscale_frame(tiny, 128)
    np.testing.assert_array_equal(same, tiny)
    assert same is not tiny  # a renderer reusing its buffer cannot change a recorded frame


@pytest.mark.parametrize(("override", "message"), [
    ("env.frame_fraction=0", "env.frame_fraction: must be in (0, 1]"),
    ("env.frame_fraction=1.5", "env.frame_fraction: must be in (0, 1]"),
    ("env.frame_size=8", "env.frame_size: must be >= 16"),
    ("env.frame_memory_mb=0", "env.frame_memory_mb: must be > 0"),
])
def test_frame_settings_are_validated(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("]", r"\]")):
        load_config(overrides=[override])


# -- the loop, the store and the viewer ----------------------------------------------------------


def test_loop_asks_about_recorded_clips_and_the_viewer_shows_their_frames(tmp_path):
    cfg = dots_config(f"run_dir={tmp_path / 'run'}", "env.frame_fraction=0.3",
                      "viewer.width=960", "viewer.height=600")
    run = Run(cfg, progress=False)
    try:
        rollout(run.sb3, run.envs.agent_env, 300)
        pool = list(run.envs.collector.pool)
        assert len(pool) >= 6 and all(c.frames is not None for c in pool)
        run.ask(4, iteration=0)
        # The loop keeps no frames in memory for its own use; the store has them all.
        clips = run.learner.clips
        assert clips and all(c.frames is None for c in clips.values())
        with Store(run.dir.store) as store:
            queries = store.pending_queries()
            assert len(queries) == 4
            ids = sorted({i for q in queries for i in (q.clip_a, q.clip_b)})
            stored = {c.id: c for c in store.get_clips(ids)}
        in_pool = {c.id: c for c in run.envs.collector.pool if c.id is not None}
        assert sorted(in_pool) == ids  # the asked clips, stored from the candidate pool
        for clip in stored.values():  # the store round trip keeps the frames exactly
            assert clip.states is None and clip.frames.dtype == np.uint8
            np.testing.assert_array_equal(clip.frames, expected_frames(clip, 128))
            np.testing.assert_array_equal(clip.frames, in_pool[clip.id].frames)
    finally:
        run.close()

    out = tmp_path / "shot.png"
    assert screenshot(RunDir.open(cfg.run_dir).path, out)  # the first pending pair
    image = pygame.surfarray.array3d(pygame.image.load(str(out))).swapaxes(0, 1)  # (H, W, 3)
    lay = Layout.for_size(960, 600)
    first = queries[0]
    for rect, clip_id in ((lay.left, first.clip_a), (lay.right, first.clip_b)):
        panel = image[rect.top + 5:rect.bottom - 5, rect.left + 5:rect.right - 5]
        clip = stored[clip_id]
        shown = clip.frames[int(0.5 * (len(clip) - 1))]  # the frame the screenshot draws
        colour = shown[0, 0]  # the top half's colour encodes (p, t)
        assert (panel == colour).all(axis=-1).mean() > 0.15, (rect, colour)
        assert (panel > 200).all(axis=-1).any()  # the white bar at the dot's position


# -- a person on an env that cannot show anything ----------------------------------------------


def test_human_teacher_on_an_env_without_state_or_frames_fails_at_start(tmp_path):
    cfg = dots_config(f"env.id={BLIND}", f"run_dir={tmp_path / 'run'}")
    with pytest.raises(EnvError) as info:
        loop.run(cfg, progress=False)  # the preflight, before anything of the run is made
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{BLIND}: render: BlindDotsEnv does not offer render_mode "
                              "'rgb_array'")
    assert "add it and return an (H, W, 3) uint8 array from render()" in message
    assert f"`rlhf check-env {BLIND}` shows the full report" in message
    assert not (tmp_path / "run").exists()
    # A simulated teacher needs no frames: the same env trains.
    cfg.teacher.kind = "oracle"
    assert preflight(cfg).ok and not needs_recorded_frames(cfg)


def test_check_env_reports_recorded_frames_for_a_rendering_env_without_state():
    report = check(dots_config("env.frame_fraction=0.2", "env.frame_size=96"),
                   gym_checker=False)
    assert report.ok, report.format()
    (viewer,) = [f for f in report.findings if f.check == "viewer"]
    assert viewer.message.startswith("recorded frames:")
    assert "env.frame_fraction 0.2 of clips, at most 96 px" in viewer.message
