"""Checkpoints: everything needed to resume a run exactly where its last iteration ended.

Each checkpoint is a directory ``checkpoints/it-NNNNN/`` written whole under a temporary
name and renamed into place; then ``checkpoints/LATEST`` (one line, the directory's name)
is replaced atomically. A crash at any moment leaves the previous checkpoint and the
pointer to it intact. The two most recent checkpoints are kept.

Contents: the agent's files (``rlhf.agents``: ``policy.zip``, SB3's format, loaded
parameters-only, never unpickled; ``obs_rms.npz``; an off-policy agent's replay buffer
``replay.zip``, arrays only), ``reward_model.safetensors`` + ``.json``,
``trainer.safetensors`` (reward model optimiser, torch RNG states) and ``state.json``
(iteration, timesteps, NumPy RNG states, the adaptive L2 coefficient).
"""

from __future__ import annotations

import json
import math
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

from rlhf.agents import Agent
from rlhf.faults import failpoint
from rlhf.io import SaveError, atomic_write_text, fix_for, fsync_dir, save_error, saving
from rlhf.reward.trainer import RewardTrainer
from rlhf.rundir import LATEST, STATE, TRAINER, CheckpointError

KEEP = 2


@dataclass(frozen=True)
class CheckpointState:
    path: Path
    iteration: int
    timesteps: int
    rng_states: dict[str, Any]
    trainer: dict[str, Any]


def save(checkpoints: Path, iteration: int, agent: Agent, trainer: RewardTrainer,
         rngs: dict[str, np.random.Generator]) -> Path:
    """Write a checkpoint of the run after ``iteration``; returns its directory.

    A failure of the disk (full, read-only) is a SaveError saying so: the checkpoint
    ``LATEST`` names is untouched by a failed save.
    """
    target = checkpoints / f"it-{iteration:05d}"
    try:
        with saving(target):
            return _save(checkpoints, iteration, agent, trainer, rngs)
    except SaveError as e:
        raise SaveError(f"cannot write the checkpoint {target}: {e.reason}; the previous "
                        f"checkpoint is intact ({LATEST} still names it). {fix_for(e.reason)}",
                        e.reason) from None


def _save(checkpoints: Path, iteration: int, agent: Agent, trainer: RewardTrainer,
          rngs: dict[str, np.random.Generator]) -> Path:
    checkpoints.mkdir(parents=True, exist_ok=True)
    tmp = checkpoints / f".tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        agent.save(tmp)  # the policy (and a replay buffer, for an off-policy agent)
        failpoint("checkpoint")
        trainer.model.save(tmp)
        save_file(trainer_tensors(trainer), str(tmp / TRAINER))
        state = {"iteration": iteration, "timesteps": int(agent.sb3.num_timesteps),
                 "rng_states": {k: g.bit_generator.state for k, g in rngs.items()},
                 "trainer": {"weight_decay": trainer.weight_decay, "fits": trainer.fits,
                             "trusted_kl": trainer.trusted_kl,
                             "fitted_labels": trainer.fitted_labels}}
        (tmp / STATE).write_text(json.dumps(state))
        for f in tmp.iterdir():
            with open(f, "rb+") as fh:
                os.fsync(fh.fileno())
        # Named by iteration and timesteps: an interrupted iteration's checkpoint gets a new
        # name, so the one LATEST points to is never replaced in place.
        final = checkpoints / f"it-{iteration:05d}-{int(agent.sb3.num_timesteps):010d}"
        if final.exists():  # a redone iteration (after a stop): the new state wins
            aside = checkpoints / f".old-{uuid.uuid4().hex[:8]}"
            final.rename(aside)  # LATEST never names this one (it was never written, or
            shutil.rmtree(aside, ignore_errors=True)  # it names an older checkpoint)
        fsync_dir(tmp)
        tmp.rename(final)
    except BaseException as e:
        # Classify before the cleanup: it frees the space a full disk's error is judged by.
        error = save_error(e, tmp) if isinstance(e, Exception) else None
        shutil.rmtree(tmp, ignore_errors=True)
        if error is None or error is e:
            raise
        raise error from None
    atomic_write_text(checkpoints / LATEST, final.name + "\n")
    for old in [p for p in sorted(checkpoints.glob("it-*")) if p != final][:-(KEEP - 1)]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in [*checkpoints.glob(".tmp-*"), *checkpoints.glob(".old-*")]:  # crash leftovers
        shutil.rmtree(stale, ignore_errors=True)
    return final


def restore(path: Path, agent: Agent, trainer: RewardTrainer,
            rngs: dict[str, np.random.Generator]) -> CheckpointState:
    """Load the checkpoint ``save`` wrote at ``path`` into the run's agent (policy, optimiser,
    timestep count, replay buffer), reward model and trainer, and NumPy RNG streams (by
    name, as ``save`` was given them); returns its state. Damage is a CheckpointError."""
    state = load_state(path)
    agent.load(path, state.timesteps)
    trainer.model.load_weights(path)
    restore_trainer(trainer, path, state.trainer)
    for name, gen in rngs.items():
        if name in state.rng_states:
            gen.bit_generator.state = state.rng_states[name]
    return state


def load_state(path: Path) -> CheckpointState:
    """Read and check ``state.json``; anything damaged is a CheckpointError naming it."""
    file = path / STATE
    try:
        state = json.loads(file.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{file} is missing; {_earlier(path)}") from None
    except OSError as e:
        raise CheckpointError(f"{file}: cannot read it ({e.strerror or e})") from None
    except ValueError as e:  # invalid JSON, or not UTF-8 (UnicodeDecodeError)
        raise CheckpointError(f"{file} is corrupt (not valid JSON: {_one_line(e)}); "
                              f"{_earlier(path)}") from None
    problem = _state_problem(state)
    if problem:
        raise CheckpointError(f"{file} is corrupt ({problem}); {_earlier(path)}")
    return CheckpointState(path, state["iteration"], state["timesteps"], state["rng_states"],
                           state["trainer"])


_BIT_GENERATORS = {"PCG64": np.random.PCG64, "PCG64DXSM": np.random.PCG64DXSM,
                   "MT19937": np.random.MT19937, "Philox": np.random.Philox,
                   "SFC64": np.random.SFC64}


def _state_problem(state: Any) -> str | None:
    """What is wrong with a parsed state.json, or None."""
    if not isinstance(state, dict):
        return f"a JSON {type(state).__name__}, not an object"
    for key in ("iteration", "timesteps"):
        value = state.get(key)
        if not _is_int(value) or value < 0:
            return f"{key!r} is {value!r}, not a whole number >= 0"
    rngs, info = state.get("rng_states"), state.get("trainer")
    if not isinstance(rngs, dict):
        return f"'rng_states' is {_kind(rngs)}, not a mapping"
    for name, rng in rngs.items():
        kind = rng.get("bit_generator") if isinstance(rng, dict) else None
        if kind not in _BIT_GENERATORS:
            return f"rng_states[{name!r}] is not a NumPy generator state"
        try:  # a state NumPy would refuse at resume is refused now, naming the file
            _BIT_GENERATORS[kind]().state = rng
        except (TypeError, ValueError, KeyError, OverflowError):
            return f"rng_states[{name!r}] is not a valid {kind} state"
    if not isinstance(info, dict):
        return f"'trainer' is {_kind(info)}, not a mapping"
    decay, fits = info.get("weight_decay"), info.get("fits")
    if not isinstance(decay, (int, float)) or isinstance(decay, bool) or not math.isfinite(decay):
        return f"trainer.weight_decay is {decay!r}, not a finite number"
    if not _is_int(fits) or fits < 0:
        return f"trainer.fits is {fits!r}, not a whole number >= 0"
    kl = info.get("trusted_kl")  # absent in checkpoints from before reward.robust
    if kl is not None and not (isinstance(kl, list) and len(kl) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            and v >= 0 for v in kl)):
        return f"trainer.trusted_kl is {kl!r}, not [mean, std] (finite, >= 0) or null"
    fitted = info.get("fitted_labels", 0)  # absent before 2026-12-03: screen nothing next
    if not _is_int(fitted) or fitted < 0:
        return f"trainer.fitted_labels is {fitted!r}, not a whole number >= 0"
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    return "missing" if value is None else f"a {type(value).__name__}"


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _earlier(path: Path) -> str:
    """The way out of a damaged checkpoint: resume from an earlier, complete one."""
    others = sorted(p.name for p in path.parent.glob("it-*")
                    if p != path and (p / STATE).is_file())
    if others:
        return (f"the checkpoint cannot be resumed: to resume from the previous one, write "
                f"{others[-1]} into {path.parent / LATEST}")
    return "the checkpoint cannot be resumed (there is no earlier one): start a new run"


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
    """Load ``trainer.safetensors`` into ``trainer``, after checking every entry: a wrongly
    shaped optimiser state would only fail (or silently mistrain) at the next fit."""
    file = path / TRAINER
    try:
        tensors = load_file(str(file))
    except FileNotFoundError:
        raise CheckpointError(f"{file} is missing; {_earlier(path)}") from None
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:
        raise CheckpointError(f"{file} is corrupt ({_one_line(e)}); {_earlier(path)}") from None
    problem = _trainer_problem(trainer, tensors)
    if problem:
        raise CheckpointError(f"{file} is corrupt or from another reward model ({problem}); "
                              f"{_earlier(path)}")
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
    restore_trainer_info(trainer, info)


def restore_trainer_info(trainer: RewardTrainer, info: dict[str, Any]) -> None:
    """The trainer's scalars from ``state.json``'s ``trainer`` entry: the adaptive weight
    decay, the fit count and the robust screen's threshold state."""
    trainer.weight_decay = float(info["weight_decay"])
    trainer.fits = int(info["fits"])
    kl = info.get("trusted_kl")
    trainer.trusted_kl = None if kl is None else (float(kl[0]), float(kl[1]))
    trainer.fitted_labels = int(info.get("fitted_labels", 0))


_ADAM = ("step", "exp_avg", "exp_avg_sq")


def _trainer_problem(trainer: RewardTrainer, tensors: dict[str, torch.Tensor]) -> str | None:
    """What in trainer.safetensors does not fit ``trainer``, or None."""
    cpu_state = torch.get_rng_state()
    for key in ("rng.torch", "rng.trainer"):
        t = tensors.get(key)
        if t is None:
            return f"no {key!r} entry"
        if t.dtype != torch.uint8 or t.dim() != 1:
            return f"{key!r} is {_describe(t)}, not a uint8 vector (a generator state)"
    if tensors["rng.torch"].shape != cpu_state.shape:
        return (f"'rng.torch' is {_describe(tensors['rng.torch'])}, not uint8 "
                f"{tuple(cpu_state.shape)}")
    params = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    seen: dict[int, set[str]] = {}
    for key, value in tensors.items():
        if key in ("rng.torch", "rng.trainer"):
            continue
        parts = key.split(".", 2)
        if len(parts) != 3 or parts[0] != "adam" or not parts[1].isdigit() \
                or parts[2] not in (*_ADAM, "max_exp_avg_sq"):
            return f"an unexpected entry {key!r}"
        i, name = int(parts[1]), parts[2]
        if i >= len(params):
            return f"{key!r}: the reward model has only {len(params)} parameter tensors"
        seen.setdefault(i, set()).add(name)
        if name == "step":
            ok = value.numel() == 1 and value.is_floating_point()
            want = "a float scalar"
        else:
            ok = value.shape == params[i].shape and value.dtype == params[i].dtype
            want = f"{str(params[i].dtype).removeprefix('torch.')} {tuple(params[i].shape)}"
        if not ok:
            return f"{key!r} is {_describe(value)}, expected {want}"
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return f"{key!r} holds NaN or infinite values"
    if seen and sorted(seen) != list(range(len(params))):  # the optimiser state is all or none
        missing = next(i for i in range(len(params)) if i not in seen)
        return f"no optimiser state for parameter {missing}"
    for i, names in seen.items():
        if not set(_ADAM) <= names:
            return f"no 'adam.{i}.{sorted(set(_ADAM) - names)[0]}' entry"
    return None


def _describe(t: torch.Tensor) -> str:
    return f"{str(t.dtype).removeprefix('torch.')} {tuple(t.shape)}"
