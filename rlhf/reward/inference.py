"""The reward model applied to whole clips: predicted returns for query selection, and the
output statistics that keep the agent's reward at unit scale. (Per-step rewards for the
agent are ``RewardModel.reward_fn``; the replay buffer's are ``rlhf.replay.relabel``.)"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch

from rlhf.clips import Clip
from rlhf.reward.data import clip_features, image_clip_chunk
from rlhf.reward.model import RewardModel


def _image_chunk(model: RewardModel, clips: list[Clip]) -> int:
    return image_clip_chunk(len(clips[0]), model.spec.in_dim)


@torch.no_grad()
def clip_member_returns(model: RewardModel, clips: list[Clip],
                        autocast: AbstractContextManager | None = None,
                        chunk: int = 1024) -> np.ndarray:
    """(M, K) predicted return of each of K clips under each of M members, ``chunk`` clips
    per batched call (fewer for image clips, which are featurised per chunk)."""
    if not clips:
        return np.zeros((model.members, 0))
    if model.spec.obs_is_image:
        chunk = min(chunk, _image_chunk(model, clips))
    out = []
    for s in range(0, len(clips), chunk):
        f = clip_features(model, clips[s:s + chunk])  # (k, T, D)
        k, t, d = f.shape
        with autocast or nullcontext():
            r = model(f.reshape(k * t, d))
        out.append(r.float().reshape(model.members, k, t).sum(-1))
    return torch.cat(out, dim=1).cpu().numpy()


@torch.no_grad()
def update_output_stats(model: RewardModel, clips: list[Clip]) -> None:
    """Normalise the model's output over the steps of ``clips`` (the agent's recent ones;
    image clips: as many of the latest as fit in one chunk)."""
    if model.spec.obs_is_image:
        clips = clips[-_image_chunk(model, clips):]
    f = clip_features(model, clips)
    model.set_output_stats(f.reshape(-1, f.shape[-1]))
