"""Clips of the agent's behaviour, and the collector that cuts them from its rollouts.

The collector is a VecEnvWrapper that sits directly on the environments, *below* the
learned-reward wrapper: it records the environment's own reward beside each step, so the
simulated teacher and the evaluation can use it, while the reward model never does.

For envs whose state cannot be restored, when a person labels, it also records frames for a
random share of clips (``FrameSampling``); only those clips become query candidates.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper


@dataclass(frozen=True, eq=False)
class Clip:
    """A fixed-length piece of one episode.

    Attributes:
        obs: (T, *obs_shape) observations the agent acted on (Dict observations flattened).
        actions: (T, *act_shape) actions taken.
        rewards: (T,) float64, the environment's own (true) reward; never shown to the
            reward model.
        dones: (T,) bool, episode ended after this step (only the last step can be True,
            except in a tuning candidate's clip of several episodes, ``tune.starts``).
        last_obs: (*obs_shape) observation after the final step (terminal one at an end).
        states: (T, S) float64 env state before each step, for replay rendering; or None.
        frames: (T, H, W, 3) uint8 frames recorded at collection (fallback); or None.
        env_step: total env steps of the run when the clip ended.
        id: the clip's id in the store, once stored.
    """

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    dones: np.ndarray
    last_obs: np.ndarray
    states: np.ndarray | None = None
    frames: np.ndarray | None = None
    env_step: int = 0
    id: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        t = len(self.obs)
        if t == 0:
            raise ValueError("a clip needs at least one step")
        for name in ("actions", "rewards", "dones"):
            if len(getattr(self, name)) != t:
                raise ValueError(f"Clip.{name} has {len(getattr(self, name))} steps, obs has {t}")
        if self.states is not None and len(self.states) != t:
            raise ValueError(f"Clip.states has {len(self.states)} steps, obs has {t}")
        if self.frames is not None and len(self.frames) != t:
            raise ValueError(f"Clip.frames has {len(self.frames)} steps, obs has {t}")
        if self.last_obs.shape != self.obs.shape[1:]:
            raise ValueError(f"Clip.last_obs shape {self.last_obs.shape} != {self.obs.shape[1:]}")

    def __len__(self) -> int:
        return len(self.obs)

    @property
    def next_obs(self) -> np.ndarray:
        """(T, *obs_shape) observation after each step."""
        return np.concatenate([self.obs[1:], self.last_obs[None]], axis=0)

    @property
    def true_return(self) -> float:
        return float(self.rewards.sum())

    def with_id(self, clip_id: int) -> Clip:
        return Clip(**{**self.__dict__, "id": clip_id})

    def without_frames(self) -> Clip:
        """The same clip without its recorded frames (what the reward model and the
        simulated teacher need; frames are only for a person)."""
        return self if self.frames is None else Clip(**{**self.__dict__, "frames": None})


def flatten_obs(space: gym.Space, obs: np.ndarray | dict) -> np.ndarray:
    """A batch of observations as arrays (n, *shape); Dict spaces flattened to (n, D).

    Matches ``gymnasium.spaces.flatten`` per item for Dict spaces of Box entries.
    """
    if isinstance(space, gym.spaces.Dict):
        n = len(next(iter(obs.values())))
        return np.concatenate(
            [np.asarray(obs[k], dtype=np.float32).reshape(n, -1) for k in space.spaces], axis=1
        )
    return np.asarray(obs)


@dataclass
class FrameSampling:
    """Which clips record frames, for envs a person labels but whose state cannot be replayed.

    Each env draws, at the start of every clip, whether that clip is recorded (probability
    ``fraction``, from ``rng``); recorded frames are kept for at most ``memory_bytes`` worth
    of candidate clips. The VecEnv's envs must be wrapped in ``FrameRecorder``
    (``env_factory(..., record_frames=True)``).
    """

    fraction: float
    rng: np.random.Generator
    memory_bytes: int = 512 * 2**20


class ClipCollector(VecEnvWrapper):
    """Cuts fixed-length clips from every env's stream of steps.

    Clips never cross an episode boundary: the partial clip at an episode's end is dropped,
    and the next clip starts at the reset observation. Finished clips go into ``pool``, a
    bounded deque of the most recent clips, from which query candidates are drawn.

    With ``frames`` (a person labels an env without restorable state), each env decides at
    every clip start whether to record that clip and switches its ``FrameRecorder`` on or off
    accordingly; recorded clips carry ``frames`` (T, H, W, 3) uint8, and only they enter the
    pool, since a person can be shown nothing else. The pool then also holds at most
    ``frames.memory_bytes`` of frames.
    """

    def __init__(self, venv: VecEnv, clip_length: int, pool_size: int = 2000,
                 frames: FrameSampling | None = None):
        super().__init__(venv)
        self.clip_length = clip_length
        self.pool: collections.deque[Clip] = collections.deque(maxlen=pool_size)
        self.clips_collected = 0
        """Clips cut so far (recorded or not)."""
        self.clips_recorded = 0
        """Clips cut with recorded frames."""
        self.env_steps = 0
        self.frame_sampling = frames
        self._recording = np.zeros(venv.num_envs, dtype=bool)
        """Whether each env's current clip is recorded (and its FrameRecorder is on)."""
        self._frames: list[list[np.ndarray]] = [[] for _ in range(venv.num_envs)]
        """Frames (H, W, 3) of each env's current clip so far, while it is recorded."""
        self._pool_capped = False
        self._space = venv.observation_space
        n, t = venv.num_envs, clip_length
        probe = flatten_obs(self._space, _sample_batch(self._space, 1))[0]
        self._obs = np.zeros((n, t, *probe.shape), dtype=probe.dtype)
        act_shape = venv.action_space.shape or ()
        self._act = np.zeros((n, t, *act_shape), dtype=venv.action_space.dtype or np.int64)
        self._rew = np.zeros((n, t), dtype=np.float64)
        self._states: np.ndarray | None = None  # allocated on the first step with states
        self._pos = np.zeros(n, dtype=np.int64)
        self._last_obs: np.ndarray | None = None
        self._actions: np.ndarray | None = None

    def reset(self) -> np.ndarray | dict:
        obs = self.venv.reset()
        self._last_obs = flatten_obs(self._space, obs)
        self._pos[:] = 0
        self._start_clips(np.arange(self.num_envs))
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)
        self.venv.step_async(actions)

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        assert self._last_obs is not None, "reset() the collector before stepping it"
        envs = np.arange(self.num_envs)
        pos = self._pos
        self._obs[envs, pos] = self._last_obs
        self._act[envs, pos] = self._actions.reshape(self._act.shape[0], *self._act.shape[2:])
        # float32 as DummyVecEnv hands them on (SubprocVecEnv keeps the env's float64): the
        # same clips whichever way the envs step.
        self._rew[envs, pos] = np.asarray(rewards, dtype=np.float32)
        if "state" in infos[0]:
            states = np.stack([info["state"] for info in infos])
            if self._states is None:
                self._states = np.zeros((self.num_envs, self.clip_length, states.shape[1]))
            self._states[envs, pos] = states
        for i in np.flatnonzero(self._recording):
            if "frame" not in infos[i]:
                raise RuntimeError("recording frames needs envs wrapped in FrameRecorder "
                                   "(env_factory(..., record_frames=True))")
            # Taken out of info: nothing above the collector needs the pixels.
            self._frames[i].append(infos[i].pop("frame"))
        pos += 1
        flat = flatten_obs(self._space, obs)
        for i in np.flatnonzero(pos == self.clip_length):
            self.clips_collected += 1
            frames = None
            if self.frame_sampling is not None:
                if not self._recording[i]:
                    continue  # a person could not be shown it: not a candidate
                frames = np.stack(self._frames[i])
                self.clips_recorded += 1
                self._cap_pool(frames.nbytes)
            if dones[i]:
                terminal = infos[i]["terminal_observation"]
                last = flatten_obs(self._space, batch_of_one(terminal))[0]
            else:
                last = flat[i]
            done_flags = np.zeros(self.clip_length, dtype=bool)
            done_flags[-1] = bool(dones[i])
            self.pool.append(Clip(
                obs=self._obs[i].copy(),
                actions=self._act[i].copy(),
                rewards=self._rew[i].copy(),
                dones=done_flags,
                last_obs=np.asarray(last, dtype=self._obs.dtype).copy(),
                states=None if self._states is None else self._states[i].copy(),
                frames=frames,
                env_step=self.env_steps + self.num_envs,
            ))
        starts = np.flatnonzero((pos == self.clip_length) | dones)
        pos[starts] = 0
        self._start_clips(starts)
        self._last_obs = flat
        self.env_steps += self.num_envs
        return obs, rewards, dones, infos

    def _start_clips(self, envs: np.ndarray) -> None:
        """Envs ``envs`` start a new clip at their next step: draw which are recorded and
        switch their recorders, only where that changes (an ``env_method`` call each)."""
        if self.frame_sampling is None or len(envs) == 0:
            return
        record = self.frame_sampling.rng.random(len(envs)) < self.frame_sampling.fraction
        for i, flag in zip(envs.tolist(), record.tolist(), strict=True):
            self._frames[i] = []
            if flag != self._recording[i]:
                self.venv.env_method("set_recording", flag, indices=[i])
                self._recording[i] = flag

    def _cap_pool(self, clip_frame_bytes: int) -> None:
        """Keep the pool's frames within ``frames.memory_bytes``: fewer, still the most
        recent, clips. Every clip's frames have the same size, so once is enough."""
        if self._pool_capped or self.frame_sampling is None:
            return
        self._pool_capped = True
        limit = max(2, self.frame_sampling.memory_bytes // max(1, clip_frame_bytes))
        if self.pool.maxlen is None or limit < self.pool.maxlen:
            self.pool = collections.deque(self.pool, maxlen=limit)

    def replace(self, index: int, clip: Clip) -> None:
        """Put the stored version of pool clip ``index`` (same data, with its id) back."""
        if self.pool[index] is not clip and self.pool[index].env_step == clip.env_step:
            self.pool[index] = clip


def batch_of_one(obs: np.ndarray | dict) -> np.ndarray | dict:
    """One observation (e.g. a terminal one from ``info``) as a batch of size 1."""
    if isinstance(obs, dict):
        return {k: np.asarray(v)[None] for k, v in obs.items()}
    return np.asarray(obs)[None]


def _sample_batch(space: gym.Space, n: int) -> np.ndarray | dict:
    if isinstance(space, gym.spaces.Dict):
        return {k: np.zeros((n, *s.shape), dtype=s.dtype) for k, s in space.spaces.items()}
    return np.zeros((n, *space.shape), dtype=space.dtype)
