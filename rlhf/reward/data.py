"""The labelled pairs a reward model is fitted on, resident on its device.

Per-clip features (C, T, D) and the labelled pairs grow in place as labels arrive (capacity
doubles), so nothing is re-uploaded per epoch and minibatches are gathered on the device.
"""

from __future__ import annotations

import numpy as np
import torch

from rlhf.clips import Clip
from rlhf.reward.model import RewardModel


def clip_features(model: RewardModel, clips: list[Clip]) -> torch.Tensor:
    """(K, T, D) unstandardised features of clips (each (T, ...) long), computed on the
    model's device."""
    spec, dev = model.spec, model.device
    obs = torch.as_tensor(np.stack([c.obs for c in clips]), device=dev)
    act = torch.as_tensor(np.stack([c.actions for c in clips]), device=dev)
    nxt = (torch.as_tensor(np.stack([c.next_obs for c in clips]), device=dev)
           if spec.use_next_obs else None)
    return spec.features(obs, act, nxt)


def split_hash(pair_ids: np.ndarray, seed: int) -> np.ndarray:
    """(N, 2) clip-id pairs -> (N,) uniform numbers in [0, 1), a fixed function of the pair.

    The validation split compares these to ``val_fraction``, so a label stays on its side
    of the split however often the data is rebuilt (a resume, an undo in the viewer):
    labels the model trained on never leak into validation.
    """
    x = np.asarray(pair_ids, dtype=np.uint64).reshape(-1, 2)
    with np.errstate(over="ignore"):  # wrap-around is the point of the hash
        h = (x[:, 0] * np.uint64(0x9E3779B97F4A7C15)) ^ (x[:, 1] * np.uint64(0xC2B2AE3D27D4EB4F))
        h ^= np.uint64(seed & 0xFFFFFFFF) * np.uint64(0x165667B19E3779F9)
        h ^= h >> np.uint64(31)  # splitmix64 finaliser: every input bit moves every output bit
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


class _Grow:
    """A device tensor with amortised appends along dim 0."""

    def __init__(self, tail: tuple[int, ...], dtype: torch.dtype, device: torch.device):
        self.data = torch.empty((16, *tail), dtype=dtype, device=device)
        self.n = 0

    def append(self, rows: torch.Tensor) -> None:
        need = self.n + len(rows)
        if need > len(self.data):
            cap = max(need, 2 * len(self.data))
            bigger = torch.empty((cap, *self.data.shape[1:]), dtype=self.data.dtype,
                                 device=self.data.device)
            bigger[: self.n] = self.data[: self.n]
            self.data = bigger
        self.data[self.n:need] = rows.to(self.data.device, self.data.dtype)
        self.n = need

    def view(self) -> torch.Tensor:
        return self.data[: self.n]


# -- image observations ------------------------------------------------------------------
# Float features of every labelled image clip would take 4x the memory of its pixels (a
# 25-step clip of 64x64x3 images: 1.2 MB as float32), so image clips are kept as uint8 and
# turned into float features per minibatch; scoring and statistics run over a few clips at a
# time (IMAGE_FEATURE_BUDGET floats).

IMAGE_FEATURE_BUDGET = 1 << 23
"""Float feature values materialised at once for image clips (32 MB)."""


def image_clip_chunk(clip_length: int, in_dim: int) -> int:
    """Image clips per chunk within ``IMAGE_FEATURE_BUDGET``."""
    return max(1, IMAGE_FEATURE_BUDGET // (clip_length * in_dim))


class _PixelStore:
    """``_Grow``'s interface for image features (C, T, D): the leading ``pixels`` values of
    each step (x/255, unstandardised) are stored as uint8, the rest (actions) as float32;
    ``view()[rows]`` gathers and rebuilds exactly the float features that were appended."""

    def __init__(self, clip_length: int, pixels: int, in_dim: int, device: torch.device):
        self.pixels = pixels
        self.images = _Grow((clip_length, pixels), torch.uint8, device)
        self.extra = _Grow((clip_length, in_dim - pixels), torch.float32, device)

    @property
    def n(self) -> int:
        return self.images.n

    def append(self, rows: torch.Tensor) -> None:
        self.images.append((rows[..., : self.pixels] * 255.0).round_())  # exact: p/255*255
        self.extra.append(rows[..., self.pixels:])

    def view(self) -> _PixelStore:
        return self

    def __getitem__(self, rows: torch.Tensor) -> torch.Tensor:
        pixels = self.images.view()[rows].float().div_(255.0)
        return torch.cat([pixels, self.extra.view()[rows]], dim=-1)


class PreferenceData:
    """Labelled pairs resident on the device: clip features (standardised with the model's
    fixed input statistics), pair rows, targets, validation split."""

    def __init__(self, model: RewardModel, clip_length: int, device: torch.device):
        self.model, self.device = model, device
        self.features: _Grow | _PixelStore = (  # image observations: uint8 (see _PixelStore)
            _PixelStore(clip_length, model.net.pixels, model.spec.in_dim, device)
            if model.spec.obs_is_image
            else _Grow((clip_length, model.spec.in_dim), torch.float32, device))
        self.pairs = _Grow((2,), torch.long, device)  # rows into features
        self.mu = _Grow((), torch.float32, device)
        self.is_val = _Grow((), torch.bool, device)
        self.row_of: dict[int, int] = {}
        self.pair_ids: list[tuple[int, int]] = []
        self.mu_list: list[float] = []

    def __len__(self) -> int:
        return self.pairs.n

    def clip_features(self, clips: list[Clip]) -> torch.Tensor:
        """(K, T, D) features of clips, computed on the device."""
        return clip_features(self.model, clips)

    def add(self, pair_ids: np.ndarray, mu: np.ndarray, clips: dict[int, Clip],
            seed: int, val_fraction: float) -> None:
        """Append pairs (N, 2) of clip ids with targets (N,); clips must hold every id."""
        new_ids = [int(i) for i in np.unique(pair_ids) if int(i) not in self.row_of]
        if new_ids:
            feats = self.clip_features([clips[i] for i in new_ids])
            for j, cid in enumerate(new_ids):
                self.row_of[cid] = self.features.n + j
            self.features.append((feats - self.model.feat_mean) / self.model.feat_std)
        rows = torch.tensor([[self.row_of[int(a)], self.row_of[int(b)]] for a, b in pair_ids],
                            dtype=torch.long).reshape(-1, 2)
        self.pairs.append(rows)
        self.mu.append(torch.as_tensor(mu, dtype=torch.float32))
        self.is_val.append(torch.as_tensor(split_hash(pair_ids, seed) < val_fraction))
        self.pair_ids.extend((int(a), int(b)) for a, b in pair_ids)
        self.mu_list.extend(float(m) for m in mu)
