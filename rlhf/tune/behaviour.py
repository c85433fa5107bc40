"""From parameters to behaviour: the user's ``behaviour(params) -> policy`` callable, rolled
out in the run's env from a given start state into a clip the store, the viewer and the
teacher already understand.

Both sides of a pair are rolled out from the same reset seed, so a person compares what the
parameters do, not the luck of the start.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from rlhf.clips import Clip, batch_of_one, flatten_obs
from rlhf.config import EnvConfig
from rlhf.env_wrappers import downscale_frame
from rlhf.environment import make_env, state_adapter
from rlhf.errors import ConfigError
from rlhf.registry import describe_exception, lookup

Policy = Callable[[Any], Any]
"""``policy(obs) -> action`` for one env; one fresh policy per episode (it may keep state)."""
Behaviour = Callable[[dict[str, Any]], Policy]
"""``behaviour(params) -> policy``: what ``tune.behaviour`` names."""


def load_behaviour(spec: str, key: str = "tune.behaviour") -> Behaviour:
    """Import the ``module:attr`` a tuning config names; one ConfigError line otherwise."""
    fn = lookup(spec, {}, key, "a callable params -> policy")
    if not callable(fn):
        raise ConfigError(f"{key}: {spec!r} is a {type(fn).__name__}, not a callable "
                          "params -> policy")
    return fn


def make_policy(behaviour: Behaviour, params: dict[str, Any],
                key: str = "tune.behaviour") -> Policy:
    """``behaviour(params)``, with the user's exceptions as one ConfigError line."""
    try:
        policy = behaviour(dict(params))
    except Exception as e:
        raise ConfigError(f"{key}: making the policy for {params} raised "
                          f"{describe_exception(e)}") from None
    if not callable(policy):
        raise ConfigError(f"{key}: returned a {type(policy).__name__}, not a policy "
                          "(a callable obs -> action)")
    return policy


class Rollouts:
    """Clips of behaviours in one private env (``env_cfg``), ``steps`` long at most (None:
    the env's own episode). An env without restorable state has its frames recorded (at
    most ``frame_size`` pixels a side) so that a person can still be shown the clip."""

    def __init__(self, env_cfg: EnvConfig, behaviour: Behaviour, steps: int | None = None,
                 frames: bool = False):
        self.behaviour = behaviour
        self.steps = steps
        self.env_cfg = env_cfg
        self.env: gym.Env = make_env(env_cfg)
        self.env.reset(seed=0)
        self._record = frames and state_adapter(self.env) is None
        if self._record:
            self.env.close()
            self.env = make_env(env_cfg, render_mode="rgb_array")

    def clip(self, params: dict[str, Any], seed: int) -> Clip:
        """The behaviour of ``params`` for one episode from ``reset(seed=seed)``.

        Returns a Clip with obs (T, *obs) (Dict observations flattened), actions (T, *act),
        the env's rewards (T,), dones (T,), states (T, S) where restorable, else frames
        (T, H, W, 3) when recording.
        """
        env = self.env
        obs, _ = env.reset(seed=int(seed))
        adapter = state_adapter(env)
        policy = make_policy(self.behaviour, params)
        space = env.observation_space
        rows: dict[str, list[Any]] = {"obs": [], "actions": [], "rewards": [], "dones": [],
                                      "states": [], "frames": []}
        done, t = False, 0
        while not done and (self.steps is None or t < self.steps):
            if adapter is not None:
                rows["states"].append(np.asarray(adapter.get(env), dtype=np.float64))
            if self._record:
                rows["frames"].append(downscale_frame(np.asarray(env.render()),
                                                      self.env_cfg.frame_size))
            try:
                action = np.asarray(policy(obs))
            except Exception as e:
                raise ConfigError(f"tune.behaviour: the policy for {params} raised "
                                  f"{describe_exception(e)} at step {t}") from None
            rows["obs"].append(flatten_obs(space, batch_of_one(obs))[0])
            try:
                obs, reward, terminated, truncated, _ = env.step(action)
            except Exception as e:
                raise ConfigError(f"tune.behaviour: the env refused the action the policy "
                                  f"for {params} gave at step {t} ({describe_exception(e)}); "
                                  f"the action space is {env.action_space}") from None
            rows["actions"].append(action)
            rows["rewards"].append(float(reward))
            done = bool(terminated or truncated)
            rows["dones"].append(done)
            t += 1
        if t == 0:
            raise ConfigError("tune.episode_steps: a clip needs at least one step")
        return Clip(obs=np.stack(rows["obs"]), actions=np.stack(rows["actions"]),
                    rewards=np.array(rows["rewards"], dtype=np.float64),
                    dones=np.array(rows["dones"], dtype=bool),
                    last_obs=flatten_obs(space, batch_of_one(obs))[0],
                    states=np.stack(rows["states"]) if rows["states"] else None,
                    frames=np.stack(rows["frames"]) if rows["frames"] else None)

    def episodes(self, params: dict[str, Any], seeds: Sequence[int]) -> Clip:
        """The behaviour of ``params`` from each of ``seeds`` in turn, as one clip: the
        episodes one after another (T = their lengths summed), ``dones`` True at each
        episode's last step. At an inner end ``next_obs`` is the next episode's first
        observation: such a clip is for a teacher and the viewer, not for a reward model."""
        clips = [self.clip(params, s) for s in seeds]
        for c in clips:
            c.dones[-1] = True  # an episode cut at episode_steps ends here too
        if len(clips) == 1:
            return clips[0]

        def joined(name: str) -> np.ndarray | None:
            parts = [getattr(c, name) for c in clips]
            return None if parts[0] is None else np.concatenate(parts)

        return Clip(obs=joined("obs"), actions=joined("actions"), rewards=joined("rewards"),
                    dones=joined("dones"), last_obs=clips[-1].last_obs,
                    states=joined("states"), frames=joined("frames"))

    def close(self) -> None:
        self.env.close()
