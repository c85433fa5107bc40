"""Pure helpers about spaces: what the reward model and SB3 can take, how a space reads.

They read spaces and observations and touch no env; problems come back as ``(level,
message)`` for the checks to report.

>>> box = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
>>> space_str(box), sb3_policy(box), obs_space_problems(box)
('Box(3,) float32 in [-1, 1]', 'MlpPolicy', [])
>>> [level for level, _ in action_space_problems(gym.spaces.MultiBinary(4))]
['error']
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.preprocessing import is_image_space as sb3_is_image_space

from rlhf.checkenv.report import Level


def flat(space: gym.Space, obs: Any) -> np.ndarray:
    """``obs`` as one float64 vector (Dict entries in key order)."""
    if isinstance(space, gym.spaces.Dict):
        return np.concatenate([np.asarray(obs[k], np.float64).ravel() for k in space.spaces])
    return np.asarray(obs, dtype=np.float64).ravel()


def sample(space: gym.Space, rng: np.random.Generator) -> Any:
    """A random action from ``rng`` (the space's own RNG is left alone)."""
    if isinstance(space, gym.spaces.Box):
        low = np.where(np.isfinite(space.low), space.low, -1.0)
        high = np.where(np.isfinite(space.high), space.high, 1.0)
        return rng.uniform(low, high).astype(space.dtype)
    if isinstance(space, gym.spaces.Discrete):
        return int(space.start + rng.integers(space.n))
    if isinstance(space, gym.spaces.MultiDiscrete):
        return (rng.integers(np.asarray(space.nvec)) + space.start).astype(space.dtype)
    return space.sample()


def sb3_policy(space: gym.Space) -> str:
    if isinstance(space, gym.spaces.Dict):
        return "MultiInputPolicy"
    if is_image_space(space):
        return "CnnPolicy"
    return "MlpPolicy"


def is_image_space(space: gym.Space) -> bool:
    """An image as SB3 (and so the reward model) sees one: a 3-D uint8 Box in [0, 255]."""
    return isinstance(space, gym.spaces.Box) and sb3_is_image_space(space, check_channels=False)


def space_str(space: gym.Space) -> str:
    if isinstance(space, gym.spaces.Box):
        shape = "(" + ", ".join(map(str, space.shape)) + ("," if len(space.shape) == 1 else "")
        text = f"Box{shape}) {space.dtype}"
        lo, hi = np.unique(space.low), np.unique(space.high)
        if len(lo) == 1 and len(hi) == 1:
            text += f" in [{lo[0]:g}, {hi[0]:g}]"
        if is_image_space(space):
            first = int(np.argmin(space.shape)) == 0
            text += " image, " + ("CHW" if first else "HWC")
        return text
    if isinstance(space, gym.spaces.Dict):
        return "Dict(" + ", ".join(f"{k}: {space_str(s)}" for k, s in space.spaces.items()) + ")"
    return str(space)


def obs_space_problems(space: gym.Space) -> list[tuple[Level, str]]:
    fix_flat = "wrap the env in gymnasium.wrappers.FlattenObservation, or use a Box"
    if isinstance(space, gym.spaces.Box):
        shape = space.shape
        if space.dtype == np.uint8 and len(shape) == 3:
            out: list[tuple[Level, str]] = []
            if int(np.argmin(shape)) == 1:
                out.append(("warn", f"image observation {shape}: the smallest axis is in the "
                            "middle, so it is read as (H, W, C); use (H, W, C) or (C, H, W)"))
            if not (np.all(space.low == 0) and np.all(space.high == 255)):
                out.append(("warn", "image observation bounds are not [0, 255]: SB3 will not "
                            "treat it as an image (CnnPolicy refuses it); declare "
                            f"Box(0, 255, {shape}, np.uint8)"))
            return out
        if space.dtype == np.uint8 and len(shape) == 2:
            return [("warn", f"2-D uint8 observation {shape} is read as a flat vector, not an "
                     f"image: give it a channel axis, shape {(*shape, 1)}, to get the CNN "
                     "reward network")]
        if len(shape) == 3:
            return [("warn", f"3-D {space.dtype} observation {shape} is flattened into "
                     f"{int(np.prod(shape))} inputs for an MLP reward network: images should "
                     "be uint8 in [0, 255] (H, W, C) or (C, H, W) to get the CNN")]
        if not np.issubdtype(space.dtype, np.number):
            return [("error", f"observation dtype {space.dtype} is not numeric: use a "
                     "float32 or uint8 Box")]
        return []
    if isinstance(space, gym.spaces.Dict):
        out = []
        for key, sub in space.spaces.items():
            if not isinstance(sub, gym.spaces.Box):
                out.append(("error", f"Dict observation entry {key!r} is {sub}: Dict "
                            f"observations are flattened for the reward model, which takes "
                            f"Box entries only; {fix_flat} for {key!r}"))
            elif is_image_space(sub):
                out.append(("warn", f"Dict observation entry {key!r} is an image: Dict "
                            "observations are flattened for an MLP reward network, so it gets "
                            "no CNN; consider a separate pixel env or a feature vector"))
        return out
    if isinstance(space, gym.spaces.Discrete):
        return [("warn", f"{space} observations reach the reward model as one number (the "
                 "index); for categorical states wrap the env in "
                 "gymnasium.wrappers.FlattenObservation (one-hot)")]
    if isinstance(space, (gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)):
        return []
    return [("error", f"observation space {type(space).__name__} is not supported by the "
             f"reward model: {fix_flat} or Dict of Box")]


def action_space_problems(space: gym.Space) -> list[tuple[Level, str]]:
    if isinstance(space, (gym.spaces.Box, gym.spaces.Discrete, gym.spaces.MultiDiscrete)):
        if isinstance(space, gym.spaces.Box) and not np.issubdtype(space.dtype, np.floating):
            return [("error", f"Box action space of dtype {space.dtype}: SB3 needs float "
                     "actions; use a float32 Box, or Discrete/MultiDiscrete for integers")]
        return []
    hint = (f" (MultiBinary({space.n}) is MultiDiscrete([2] * {space.n}))"
            if isinstance(space, gym.spaces.MultiBinary) else "")
    return [("error", f"action space {type(space).__name__} is not supported: use Box, "
             f"Discrete or MultiDiscrete{hint}")]


def obs_mismatch(space: gym.Space, obs: Any) -> tuple[Level, str, str] | None:
    """(level, kind, message) for an observation that does not fit ``space``, or None."""
    if isinstance(space, gym.spaces.Dict):
        if not isinstance(obs, dict):
            return ("error", "type", f"returned a {type(obs).__name__} observation, but "
                    "observation_space is a Dict: return a dict with its keys")
        if set(obs) != set(space.spaces):
            return ("error", "keys", f"returned observation keys {sorted(obs)}, but "
                    f"observation_space has {sorted(space.spaces)}: make them match")
        for key, sub in space.spaces.items():
            problem = obs_mismatch(sub, obs[key])
            if problem is not None:
                level, kind, message = problem
                return level, f"{key}.{kind}", f"(entry {key!r}) {message}"
        return None
    if isinstance(space, gym.spaces.Box):
        arr = np.asarray(obs)
        if arr.shape != space.shape:
            return ("error", "shape", f"returned an observation of shape {arr.shape}, but "
                    f"observation_space has shape {space.shape}: make observation_space match "
                    "what reset() and step() return")
        if arr.dtype != space.dtype:
            level: Level = "error" if space.dtype == np.uint8 else "warn"
            return (level, "dtype", f"returned {arr.dtype} observations, but observation_space "
                    f"is {space.dtype}: return {space.dtype} arrays (clips store them as "
                    f"{space.dtype})")
        if np.issubdtype(arr.dtype, np.number):
            low, high = space.low, space.high
            out = (arr < low) | (arr > high)
            if out.any():
                i = np.unravel_index(int(np.argmax(out)), arr.shape)
                index = "".join(f"[{j}]" for j in i)
                return ("warn", "bounds", f"returned obs{index} = {arr[i]:g}, outside "
                        f"observation_space's bounds [{low[i]:g}, {high[i]:g}]: widen the "
                        "bounds or clip the observation")
        return None
    if not space.contains(obs):
        return ("warn", "contains", f"returned {obs!r}, which observation_space {space} does "
                "not contain")
    return None
