"""Checkpoints: everything needed to resume a run exactly where its last iteration ended.

Each checkpoint is a directory ``checkpoints/it-NNNNN/`` written whole under a temporary
name and renamed into place; then ``checkpoints/LATEST`` (one line, the directory's name)
is replaced atomically. A crash at any moment leaves the previous checkpoint and the
pointer to it intact. The two most recent checkpoints are kept.

Contents: ``policy.zip`` (SB3's format; loaded parameters-only, never unpickled),
``obs_rms.npz``, ``reward_model.safetensors`` + ``.json``, ``trainer.safetensors`` (reward
model optimiser, torch RNG states) and ``state.json`` (iteration, timesteps, NumPy RNG
states, the adaptive L2 coefficient).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from stable_baselines3.common.base_class import BaseAlgorithm

from rlhf.agent import save_obs_rms
from rlhf.faults import failpoint
from rlhf.io import atomic_write_text, fsync_dir, saving
from rlhf.reward.trainer import RewardTrainer
from rlhf.rundir import LATEST, CheckpointError

KEEP = 2


@dataclass(frozen=True)
class CheckpointState:
    path: Path
    iteration: int
    timesteps: int
    rng_states: dict[str, Any]
    trainer: dict[str, Any]


def save(checkpoints: Path, iteration: int, agent: BaseAlgorithm, trainer: RewardTrainer,
         rngs: dict[str, np.random.Generator]) -> Path:
    """Write a checkpoint of the run after ``iteration``; returns its directory."""
    with saving(checkpoints / f"it-{iteration:05d}"):
        return _save(checkpoints, iteration, agent, trainer, rngs)


def _save(checkpoints: Path, iteration: int, agent: BaseAlgorithm, trainer: RewardTrainer,
          rngs: dict[str, np.random.Generator]) -> Path:
    checkpoints.mkdir(parents=True, exist_ok=True)
    tmp = checkpoints / f".tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        with open(tmp / "policy.zip", "wb") as f:
            agent.save(f)
        save_obs_rms(agent.get_env(), tmp / "obs_rms.npz")
        failpoint("checkpoint")
        trainer.model.save(tmp)
        save_file(trainer_tensors(trainer), str(tmp / "trainer.safetensors"))
        state = {"iteration": iteration, "timesteps": int(agent.num_timesteps),
                 "rng_states": {k: g.bit_generator.state for k, g in rngs.items()},
                 "trainer": {"weight_decay": trainer.weight_decay, "fits": trainer.fits}}
        (tmp / "state.json").write_text(json.dumps(state))
        for f in tmp.iterdir():
            with open(f, "rb+") as fh:
                os.fsync(fh.fileno())
        # Named by iteration and timesteps: an interrupted iteration's checkpoint gets a new
        # name, so the one LATEST points to is never replaced in place.
        final = checkpoints / f"it-{iteration:05d}-{int(agent.num_timesteps):010d}"
        if final.exists():  # a redone iteration (after a stop): the new state wins
            aside = checkpoints / f".old-{uuid.uuid4().hex[:8]}"
            final.rename(aside)  # LATEST never names this one (it was never written, or
            shutil.rmtree(aside, ignore_errors=True)  # it names an older checkpoint)
        fsync_dir(tmp)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(checkpoints / LATEST, final.name + "\n")
    for old in [p for p in sorted(checkpoints.glob("it-*")) if p != final][:-(KEEP - 1)]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in [*checkpoints.glob(".tmp-*"), *checkpoints.glob(".old-*")]:  # crash leftovers
        shutil.rmtree(stale, ignore_errors=True)
    return final


def load_state(path: Path) -> CheckpointState:
    try:
        state = json.loads((path / "state.json").read_text())
        return CheckpointState(path, int(state["iteration"]), int(state["timesteps"]),
                               state["rng_states"], state["trainer"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}/state.json is corrupt: {e}") from None


def trainer_tensors(trainer: RewardTrainer) -> dict[str, torch.Tensor]:
    """The reward model optimiser's state and the torch RNG states, as flat tensors."""
    out: dict[str, torch.Tensor] = {
        "rng.torch": torch.get_rng_state(),
        "rng.trainer": trainer.gen.get_state().cpu(),
    }
    for i, s in trainer.optimizer.state_dict()["state"].items():
        for name, value in s.items():
            out[f"adam.{i}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    return out


def restore_trainer(trainer: RewardTrainer, path: Path, info: dict[str, Any]) -> None:
    try:
        tensors = load_file(str(path / "trainer.safetensors"))
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:
        raise CheckpointError(f"{path}/trainer.safetensors is corrupt: {e}") from None
    torch.set_rng_state(tensors["rng.torch"])
    try:
        trainer.gen.set_state(tensors["rng.trainer"])
    except RuntimeError:  # saved on another device kind (a GPU run resumed on a CPU)
        trainer.gen.manual_seed(int(tensors["rng.trainer"].sum()))
    sd = trainer.optimizer.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("adam."):
            _, i, name = key.split(".", 2)
            state.setdefault(int(i), {})[name] = value.to(trainer.device) \
                if name != "step" else value
    sd["state"] = state
    trainer.optimizer.load_state_dict(sd)
    trainer.weight_decay = float(info["weight_decay"])
    trainer.fits = int(info["fits"])
