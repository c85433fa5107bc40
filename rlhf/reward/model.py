"""The reward model: per-step features of (observation, action[, next observation]), an
ensemble of reward networks, and the normalisation of its output for the agent.

Saved as safetensors (weights and buffers) plus a JSON config; never pickle.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
from torch import nn

from rlhf.io import atomic_save, atomic_write_text
from rlhf.reward.cnn import EnsembleCNN
from rlhf.reward.network import LEAKY_SLOPE, EnsembleMLP

WEIGHTS, CONFIG = "reward_model.safetensors", "reward_model.json"


@dataclass(frozen=True)
class FeatureSpec:
    """How raw observations and actions become the reward network's input vector (D,).

    Observations are flattened (Dict observations arrive already flattened; images are
    scaled by 1/255); Discrete and MultiDiscrete actions are one-hot encoded. Images (what
    SB3's ``is_image_space`` calls one: a 3-D uint8 Box in [0, 255], HWC or CHW) get a
    convolutional network (``make_network``), which reshapes the flat pixels back into
    images; everything else gets an MLP.
    """

    obs_shape: tuple[int, ...]
    obs_is_image: bool
    action_kind: str  # 'box', 'discrete' or 'multidiscrete'
    action_shape: tuple[int, ...]
    action_nvec: tuple[int, ...]
    use_action: bool = True
    use_next_obs: bool = False

    @classmethod
    def from_spaces(cls, obs_space: gym.Space, action_space: gym.Space, use_action: bool = True,
                    use_next_obs: bool = False) -> FeatureSpec:
        if isinstance(obs_space, gym.spaces.Dict):
            obs_shape = (int(gym.spaces.flatdim(obs_space)),)
        else:
            obs_shape = tuple(obs_space.shape)
        is_image = is_image_space(obs_space)  # SB3's rule: the reward model and SB3 agree
        if isinstance(action_space, gym.spaces.Discrete):
            kind, nvec = "discrete", (int(action_space.n),)
        elif isinstance(action_space, gym.spaces.MultiDiscrete):
            kind, nvec = "multidiscrete", tuple(int(n) for n in np.ravel(action_space.nvec))
        elif isinstance(action_space, gym.spaces.Box):
            kind, nvec = "box", ()
        else:
            raise ValueError(f"unsupported action space {action_space}: use Box, Discrete or "
                             "MultiDiscrete")
        return cls(obs_shape, is_image, kind, tuple(action_space.shape or ()), nvec, use_action,
                   use_next_obs)

    @cached_property
    def channels_first(self) -> bool:
        """Images only: (C, H, W) when the smallest axis comes first, else (H, W, C) (SB3's
        ``is_image_space_channels_first``; its warning for a smallest middle axis is left to
        SB3's policy and ``rlhf check-env``)."""
        if not self.obs_is_image:
            return False
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Treating image space as channels-last")
            return is_image_space_channels_first(gym.spaces.Box(0, 255, self.obs_shape, np.uint8))

    @property
    def obs_dim(self) -> int:
        return int(np.prod(self.obs_shape))

    @property
    def action_dim(self) -> int:
        if self.action_kind == "box":
            return int(np.prod(self.action_shape))
        return int(sum(self.action_nvec))

    @property
    def in_dim(self) -> int:
        d = self.obs_dim * (2 if self.use_next_obs else 1)
        return d + (self.action_dim if self.use_action else 0)

    def features(self, obs: torch.Tensor, actions: torch.Tensor,
                 next_obs: torch.Tensor | None = None) -> torch.Tensor:
        """obs (*B, *obs_shape), actions (*B, *action_shape) -> features (*B, D) float32."""
        batch = obs.shape[: obs.dim() - len(self.obs_shape)]
        parts = [self._obs(obs, batch)]
        if self.use_next_obs:
            if next_obs is None:
                raise ValueError("this reward model needs next observations")
            parts.append(self._obs(next_obs, batch))
        if self.use_action:
            if self.action_kind == "box":
                parts.append(actions.reshape(*batch, -1).float())
            else:
                a = actions.reshape(*batch, len(self.action_nvec)).long()
                parts.extend(nn.functional.one_hot(a[..., i], n).float()
                             for i, n in enumerate(self.action_nvec))
        return torch.cat(parts, dim=-1)

    def _obs(self, obs: torch.Tensor, batch: torch.Size) -> torch.Tensor:
        x = obs.reshape(*batch, -1).float()
        return x / 255.0 if self.obs_is_image else x


class RewardModel(nn.Module):
    """An ensemble reward model r_m(o, a) for members m = 1..M.

    Inputs are standardised with feature statistics fixed at the first fit; the agent's
    reward is the ensemble mean, shifted and scaled to zero mean and unit variance over
    recent rollouts (``set_output_stats``) and clipped.
    """

    def __init__(self, spec: FeatureSpec, members: int, hidden: list[int], seed: int = 0,
                 clip_reward: float = 10.0):
        super().__init__()
        self.spec, self.members, self.hidden = spec, members, list(hidden)
        self.seed, self.clip_reward = seed, clip_reward
        gen = torch.Generator().manual_seed(seed)
        self.net = make_network(spec, members, hidden, generator=gen)
        self.register_buffer("feat_mean", torch.zeros(spec.in_dim))
        self.register_buffer("feat_std", torch.ones(spec.in_dim))
        self.register_buffer("out_mean", torch.zeros(()))
        self.register_buffer("out_std", torch.ones(()))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @property
    def device(self) -> torch.device:
        return self.feat_mean.device

    # -- the computation -----------------------------------------------------------------

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features (N, D) shared, or (M, N, D) per member -> raw member rewards (M, N)."""
        return self.net((features - self.feat_mean) / self.feat_std)

    def set_feature_stats(self, features: torch.Tensor) -> None:
        """Fix the input standardisation from a sample of features (N, D)."""
        f = features.reshape(-1, features.shape[-1]).float()
        self.feat_mean.copy_(f.mean(0))
        std = f.std(0) if len(f) > 1 else torch.ones_like(f[0])
        # A feature (nearly) constant in early behaviour — a flag, an action never taken —
        # keeps unit scale: dividing by its tiny spread would blow it up ~1000x once it moves.
        self.feat_std.copy_(torch.where(std < 1e-2, torch.ones_like(std), std))
        if self.spec.obs_is_image:
            # Pixels keep the usual x/255 scaling: per-pixel standardisation would blow up
            # every pixel that happened to be constant in the sample (std clamped to 1e-3).
            pixels = self.net.pixels
            self.feat_mean[:pixels] = 0.0
            self.feat_std[:pixels] = 1.0

    @torch.no_grad()
    def set_output_stats(self, features: torch.Tensor) -> None:
        """Normalise the ensemble-mean reward over a sample of features (N, D)."""
        r = self(features).mean(0).float()
        self.out_mean.copy_(r.mean())
        self.out_std.copy_(r.std().clamp_min(1e-6) if len(r) > 1 else torch.ones(()))

    def normalise(self, member_rewards: torch.Tensor) -> torch.Tensor:
        """(M, N) raw member rewards -> (N,) the agent's reward."""
        r = (member_rewards.mean(0).float() - self.out_mean) / self.out_std
        return r.clamp(-self.clip_reward, self.clip_reward) if self.clip_reward > 0 else r

    # -- numpy conveniences --------------------------------------------------------------

    def _tensor(self, x: np.ndarray | None) -> torch.Tensor | None:
        return None if x is None else torch.as_tensor(np.asarray(x), device=self.device)

    @torch.no_grad()
    def member_rewards(self, obs: np.ndarray, actions: np.ndarray,
                       next_obs: np.ndarray | None = None) -> np.ndarray:
        """(N, *obs_shape), (N, *action_shape) -> raw member rewards (M, N)."""
        if self.spec.obs_is_image and len(obs) > IMAGE_CHUNK:  # float pixels of all N at once
            return np.concatenate([self.member_rewards(*_rows(s, obs, actions, next_obs))
                                   for s in range(0, len(obs), IMAGE_CHUNK)], axis=1)
        f = self.spec.features(self._tensor(obs), self._tensor(actions), self._tensor(next_obs))
        return self(f).float().cpu().numpy()

    @torch.no_grad()
    def reward(self, obs: np.ndarray, actions: np.ndarray,
               next_obs: np.ndarray | None = None) -> np.ndarray:
        """(N, *obs_shape), (N, *action_shape) -> the agent's reward (N,) float32."""
        if self.spec.obs_is_image and len(obs) > IMAGE_CHUNK:
            return self.normalise(torch.as_tensor(self.member_rewards(obs, actions, next_obs),
                                                  device=self.device)).cpu().numpy()
        f = self.spec.features(self._tensor(obs), self._tensor(actions), self._tensor(next_obs))
        return self.normalise(self(f)).cpu().numpy()

    def reward_fn(self) -> Callable[[np.ndarray, np.ndarray, np.ndarray | None], np.ndarray]:
        """The agent's reward as a function of the current weights, for the env loop.

        On the CPU an MLP model is evaluated in NumPy from a copy of the weights (refreshed
        by calling this again after each fit): one small batch per vector step then costs a
        few microseconds of dispatch instead of torch's ~100 µs, which matters next to an env
        step. Elsewhere (GPU, CNN), ``reward`` itself.
        """
        if self.device.type == "cpu" and isinstance(self.net, EnsembleMLP):
            return _NumpyReward(self)
        return self.reward

    # -- saving --------------------------------------------------------------------------

    def config(self) -> dict:
        return {"format": "rlhf.reward_model/1", "spec": asdict(self.spec),
                "members": self.members, "hidden": self.hidden, "seed": self.seed,
                "clip_reward": self.clip_reward}

    def save(self, directory: str | Path) -> None:
        """Write ``reward_model.safetensors`` and ``reward_model.json`` atomically."""
        directory = Path(directory)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        atomic_save(directory / WEIGHTS, lambda p: save_file(tensors, str(p)))
        atomic_write_text(directory / CONFIG, json.dumps(self.config(), indent=2))

    def load_weights(self, directory: str | Path) -> None:
        """Load weights and buffers saved by ``save`` into this (same-shaped) model.

        Every entry is checked before any is used: names, dtypes and shapes must be this
        model's exactly (``load_state_dict`` would cast a float16 or int tensor silently),
        and the values finite (NaN weights would give the agent NaN rewards).
        """
        directory = Path(directory)
        weights = directory / WEIGHTS
        way_out = ("restore it from a copy, or resume from an earlier checkpoint (write its name "
                   "into checkpoints/LATEST)")
        try:
            saved = json.loads((directory / CONFIG).read_bytes().decode("utf-8"))
            if not isinstance(saved, dict):
                raise ValueError(f"a JSON {type(saved).__name__}, not an object")
            if saved.get("members") != self.members or saved.get("hidden") != self.hidden:
                raise ValueError(f"saved ensemble {saved.get('members')}x{saved.get('hidden')} "
                                 f"does not match the config's {self.members}x{self.hidden}")
        except FileNotFoundError as e:
            raise RewardModelError(f"{directory}: no reward model here ({e.filename} missing)") \
                from None
        except (ValueError, OSError) as e:
            raise RewardModelError(f"{directory / CONFIG} is corrupt or does not fit this run "
                                   f"({_one_line(e)}); {way_out}") from None
        try:
            state = load_file(str(weights), device=str(self.device))
        except FileNotFoundError as e:
            raise RewardModelError(f"{directory}: no reward model here ({e.filename} missing)") \
                from None
        except (KeyError, TypeError, ValueError, RuntimeError, OSError, SafetensorError) as e:
            raise RewardModelError(f"{weights} is corrupt ({_one_line(e)}); {way_out}") from None
        problem = _state_problem(self.state_dict(), state)
        if problem:
            raise RewardModelError(f"{weights} is corrupt or does not fit this run ({problem}); "
                                   f"{way_out}")
        self.load_state_dict(state)

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu") -> RewardModel:
        """Load from safetensors + JSON; nothing in the files is executed."""
        directory = Path(directory)
        try:
            cfg = json.loads((directory / CONFIG).read_bytes().decode("utf-8"))
            spec = FeatureSpec(**{k: tuple(v) if isinstance(v, list) else v
                                  for k, v in cfg["spec"].items()})
            model = cls(spec, cfg["members"], cfg["hidden"], cfg["seed"], cfg["clip_reward"])
        except FileNotFoundError as e:
            raise RewardModelError(f"{directory}: no reward model here ({e.filename} missing)") \
                from None
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError, OSError) as e:
            # A wrongly typed field (a negative width, a string) fails in torch, not here.
            raise RewardModelError(f"{directory}/{CONFIG} is corrupt or from an incompatible "
                                   f"version: {_one_line(e)}") from None
        model.load_weights(directory)
        return model.to(device)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())  # torch's load errors span lines


def _state_problem(expected: dict[str, torch.Tensor],
                   saved: dict[str, torch.Tensor]) -> str | None:
    """What in saved reward-model tensors does not match ``expected`` exactly, or None."""
    missing = sorted(set(expected) - set(saved))
    extra = sorted(set(saved) - set(expected))
    if missing:
        return f"no {missing[0]!r} entry" + (f" (and {len(missing) - 1} more)" * (len(missing) > 1))
    if extra:
        return f"an unexpected entry {extra[0]!r}"
    for key, want in expected.items():
        got = saved[key]
        if got.dtype != want.dtype or got.shape != want.shape:
            return (f"{key!r} is {_describe(got)}, expected {_describe(want)}")
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            return (f"{key!r} holds NaN or infinite values: this model would give the agent "
                    "NaN rewards")
    return None


def _describe(t: torch.Tensor) -> str:
    return f"{str(t.dtype).removeprefix('torch.')} {tuple(t.shape)}"


def make_network(spec: FeatureSpec, members: int, hidden: list[int],
                 generator: torch.Generator | None = None) -> EnsembleMLP | EnsembleCNN:
    """The ensemble network for ``spec``'s inputs: a CNN for image observations (``hidden``
    is its head after the conv trunk), an MLP for everything else."""
    if spec.obs_is_image:
        return EnsembleCNN(members, spec.obs_shape, spec.channels_first,  # type: ignore[arg-type]
                           n_images=2 if spec.use_next_obs else 1,
                           extra_dim=spec.action_dim if spec.use_action else 0, hidden=hidden,
                           generator=generator)
    return EnsembleMLP(members, spec.in_dim, hidden, generator=generator)


IMAGE_CHUNK = 1024
"""Image inputs per forward pass in the numpy conveniences (bounds the float copy of the
pixels: 50 MB for 64x64x3 images)."""


def _rows(start: int, *arrays: np.ndarray | None) -> list[np.ndarray | None]:
    return [None if a is None else a[start:start + IMAGE_CHUNK] for a in arrays]


class _NumpyReward:
    """``RewardModel.reward`` for an MLP, in NumPy float32, from a snapshot of the weights.

    Used for batches of up to ``SMALL`` rows (one row per env: the vector-step case), where
    torch's per-op dispatch dominates; larger batches go to the model itself, whose batched
    matmuls are faster there (BENCHMARKS.md, inference).
    """

    SMALL = 8

    def __init__(self, model: RewardModel):
        self.model = model
        def arr(t: torch.Tensor) -> np.ndarray:
            return t.detach().cpu().float().numpy().copy()

        self.spec = model.spec
        self.weights = [arr(w) for w in model.net.weights]  # (M, in, out)
        self.biases = [arr(b) for b in model.net.biases]  # (M, 1, out)
        self.mean, self.std = arr(model.feat_mean), arr(model.feat_std)
        self.out_mean, self.out_std = float(model.out_mean), float(model.out_std)
        self.clip = model.clip_reward
        self.eye = [np.eye(n, dtype=np.float32) for n in self.spec.action_nvec]

    def __call__(self, obs: np.ndarray, actions: np.ndarray,
                 next_obs: np.ndarray | None = None) -> np.ndarray:
        """(N, *obs_shape), (N, *action_shape) -> the agent's reward (N,) float32."""
        n = len(obs)
        if n > self.SMALL:
            return self.model.reward(obs, actions, next_obs)
        parts = [np.asarray(obs, np.float32).reshape(n, -1)]
        if self.spec.use_next_obs:
            if next_obs is None:
                raise ValueError("this reward model needs next observations")
            parts.append(np.asarray(next_obs, np.float32).reshape(n, -1))
        if self.spec.use_action:
            if self.spec.action_kind == "box":
                parts.append(np.asarray(actions, np.float32).reshape(n, -1))
            else:
                a = np.asarray(actions).reshape(n, len(self.eye)).astype(np.int64)
                parts.extend(eye[a[:, i]] for i, eye in enumerate(self.eye))
        x = (np.concatenate(parts, axis=1) - self.mean) / self.std  # (N, D)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = np.matmul(x, w) + b  # (N, D) @ (M, D, H) broadcasts to (M, N, H)
            if i < last:
                x = np.maximum(x, LEAKY_SLOPE * x)  # leaky ReLU, as EnsembleMLP
        r = (x[..., 0].mean(0) - self.out_mean) / self.out_std
        if self.clip > 0:
            r = np.clip(r, -self.clip, self.clip)
        return r.astype(np.float32)


class RewardModelError(RuntimeError):
    """A reward model checkpoint cannot be loaded."""
