"""The agent side: the VecEnv stack and the SB3 algorithm.

The stack, from the environments up::

    DummyVecEnv[Monitor -> StateInInfo]    true reward, env state in info
               (or -> FrameRecorder)        frames in info: no restorable state, a person labels
    ClipCollector                           cuts clips (sees the true reward, raw obs)
    LearnedRewardVecEnv                     reward := reward model
    VecNormalize(obs only, optional)        for the policy only; the reward model sees raw obs
    (SB3 adds its own wrappers, e.g. VecTransposeImage, above this)
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from stable_baselines3 import A2C, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import (
    DummyVecEnv,
    SubprocVecEnv,
    VecEnv,
    VecNormalize,
    unwrap_vec_normalize,
)

from rlhf.clips import ClipCollector, FrameSampling
from rlhf.config import AgentConfig, Config, ConfigError
from rlhf.environment import env_factory, needs_recorded_frames
from rlhf.io import atomic_write_bytes
from rlhf.registry import lookup
from rlhf.rundir import POLICY
from rlhf.sb3_settings import checked_kwargs
from rlhf.seeds import LOOP_EVAL
from rlhf.wrappers import LearnedRewardVecEnv

ALGOS: dict[str, type[BaseAlgorithm]] = {"PPO": PPO, "A2C": A2C, "SAC": SAC, "TD3": TD3}
"""SB3 algorithms by name; ``agent.algo`` may also name any SB3 algorithm class as
``module:Class`` (a user's subclass of PPO or SAC, say)."""
FRAME_RNG_STREAM = 2
"""``default_rng([seed, 2])`` draws which clips record frames (the loop's teacher uses
stream 1), independent of the query and teacher draws."""
FUSED_ADAM = {"eps": 1e-5, "fused": True}
"""The optimiser settings given to an SB3 policy that would get Adam with no settings of
its own: SB3's Adam (``eps`` 1e-5, its default there), with torch's fused kernel, one op
per step instead of a dozen per parameter tensor. Same update, less CPU time
(BENCHMARKS.md, "Fused Adam")."""
ACTIVATIONS = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU, "elu": torch.nn.ELU,
               "leaky_relu": torch.nn.LeakyReLU, "gelu": torch.nn.GELU}


@dataclass
class EnvStack:
    venv: VecEnv
    collector: ClipCollector
    learned: LearnedRewardVecEnv
    agent_env: VecEnv
    """What the agent steps: ``learned``, or VecNormalize over it."""

    def close(self) -> None:
        self.agent_env.close()


def make_env_stack(cfg: Config, use_next_obs: bool = False,
                   deferred: bool = False) -> EnvStack:
    """The agent's VecEnv stack (see the module docstring), seeded from ``cfg.seed``.

    ``deferred``: the learned reward comes per rollout (``LearnedRewardVecEnv``); whoever
    asks for it must pass ``RelabelRollout`` to ``agent.learn`` (the loop does, when
    ``relabel_per_rollout(cfg)``).

    Where a person labels an env whose state cannot be restored, the envs render and the
    collector records frames for ``env.frame_fraction`` of clips, drawn from its own
    generator (seeded from ``cfg.seed``, so which clips are recorded is reproducible).
    """
    record_frames = needs_recorded_frames(cfg)
    thunks = [env_factory(cfg.env, record_frames=record_frames) for _ in range(cfg.env.n_envs)]
    # SubprocVecEnv starts its workers with forkserver (or spawn): they import the env anew,
    # and hold none of the trainer's open files (its store, its trainer lock).
    venv = SubprocVecEnv(thunks) if cfg.env.workers == "subprocess" else DummyVecEnv(thunks)
    venv.seed(cfg.seed)
    sampling = None
    if record_frames:
        sampling = FrameSampling(cfg.env.frame_fraction,
                                 np.random.default_rng([cfg.seed, FRAME_RNG_STREAM]),
                                 int(cfg.env.frame_memory_mb * 2**20))
    collector = ClipCollector(venv, cfg.loop.clip_length, cfg.query.pool_size, sampling)
    learned = LearnedRewardVecEnv(collector, use_next_obs=use_next_obs, deferred=deferred)
    agent_env: VecEnv = learned
    if cfg.agent.normalize_obs:
        agent_env = VecNormalize(learned, norm_obs=True, norm_reward=False)
    return EnvStack(venv, collector, learned, agent_env)


def algo_class(name: str) -> type[BaseAlgorithm]:
    """``agent.algo``: a name in ``ALGOS`` or ``module:Class``; ConfigError otherwise."""
    cls = lookup(name, ALGOS, "agent.algo", "an SB3 algorithm class")
    if not (isinstance(cls, type) and issubclass(cls, BaseAlgorithm)):
        raise ConfigError(f"agent.algo: {name!r} is not an SB3 algorithm class (a subclass of "
                          "stable_baselines3's BaseAlgorithm, e.g. of PPO or SAC)")
    return cls


def is_off_policy(cfg: AgentConfig) -> bool:
    """Whether the agent learns from a replay buffer (SAC, TD3), relabelled at each fit."""
    return issubclass(algo_class(cfg.algo), OffPolicyAlgorithm)


def relabel_per_rollout(cfg: Config) -> bool:
    """``reward.relabel``, with 'auto' resolved: per rollout where the reward model is on a
    GPU (a transfer per vector step would cost more than the env step). Never for an
    off-policy agent: it trains from its buffer at every step, so stored rewards must be
    there at once (and the whole buffer is relabelled at each fit instead)."""
    if is_off_policy(cfg.agent):
        return False
    if cfg.reward.relabel == "auto":
        device = cfg.reward.device
        return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return cfg.reward.relabel == "rollout"


class RunLinearSchedule:
    """A learning rate falling linearly to 0 over a whole run of ``total`` timesteps.

    SB3 calls a schedule with the progress remaining of the current ``learn()`` call, and the
    loop calls ``learn()`` once per iteration (with ``reset_num_timesteps=False``, SB3's
    horizon for a call is the timesteps done before it plus the call's own). The loop sets
    ``horizon`` before each call, so the rate follows the run's progress, not the call's.
    A single ``learn(total)`` (``horizon == total``) is SB3's own linear schedule.
    """

    def __init__(self, initial: float, total: int):
        self.initial, self.total, self.horizon = float(initial), int(total), int(total)

    def __call__(self, progress_remaining: float) -> float:
        done = (1.0 - progress_remaining) * self.horizon
        return self.initial * max(0.0, 1.0 - done / self.total)

    def __repr__(self) -> str:
        return f"RunLinearSchedule({self.initial}, total={self.total})"


def set_learn_horizon(agent: BaseAlgorithm, steps: int) -> None:
    """Before ``agent.learn(steps, reset_num_timesteps=False)``: tell a run-wide schedule
    where this call ends (nothing to do for a constant rate)."""
    if isinstance(agent.learning_rate, RunLinearSchedule):
        agent.learning_rate.horizon = agent.num_timesteps + steps


def make_agent(cfg: AgentConfig, env: VecEnv, seed: int | None,
               tensorboard_log: str | None = None,
               total_timesteps: int | None = None) -> BaseAlgorithm:
    """The SB3 algorithm ``cfg`` names on ``env``. ``total_timesteps``: the run's whole
    budget, which a ``linear`` learning-rate schedule falls over."""
    algo = algo_class(cfg.algo)
    policy_class = algo.policy_aliases.get(cfg.policy)
    if policy_class is None:
        raise ConfigError(f"agent.policy: {cfg.policy!r} is not one of "
                          f"{', '.join(algo.policy_aliases)} (for {cfg.algo})")
    if cfg.pretrain_steps and not issubclass(algo, OffPolicyAlgorithm):
        raise ConfigError(f"agent.pretrain_steps: {cfg.algo} is on-policy; unsupervised "
                          "pre-training is for off-policy agents (SAC, TD3): set it to 0")
    kwargs = dict(cfg.kwargs)
    if cfg.lr_schedule == "linear":
        if total_timesteps is None:
            raise ValueError("agent.lr_schedule linear needs the run's total_timesteps")
        lr = kwargs.get("learning_rate", inspect.signature(algo)
                        .parameters["learning_rate"].default)
        if not isinstance(lr, (int, float)):
            raise ConfigError("agent.lr_schedule: linear needs a number in "
                              f"agent.kwargs.learning_rate, got {lr!r}")
    kwargs = checked_kwargs(cfg.algo, algo, policy_class, kwargs, env.num_envs)
    if cfg.lr_schedule == "linear":
        lr = kwargs.get("learning_rate", inspect.signature(algo)
                        .parameters["learning_rate"].default)
        kwargs["learning_rate"] = RunLinearSchedule(lr, total_timesteps)
    pk = dict(kwargs.get("policy_kwargs") or {})
    act = pk.get("activation_fn")
    if isinstance(act, str):
        if act not in ACTIVATIONS:
            raise ConfigError(f"agent.kwargs.policy_kwargs.activation_fn: {act!r} is not one "
                              f"of {', '.join(ACTIVATIONS)}")
        pk["activation_fn"] = ACTIVATIONS[act]
    if _default_adam(cfg.algo, kwargs, pk):
        pk["optimizer_kwargs"] = dict(FUSED_ADAM)
    if pk:
        kwargs["policy_kwargs"] = pk
    try:
        return algo(cfg.policy, env, seed=seed, verbose=0,
                               tensorboard_log=tensorboard_log, device="cpu", **kwargs)
    except (TypeError, ValueError, KeyError, AssertionError) as e:  # SB3 asserts on values
        message = " ".join(str(e).split()) or type(e).__name__
        raise ConfigError(f"agent.kwargs: {cfg.algo} rejected its settings: {message}") from None


def _default_adam(algo: str, kwargs: dict, policy_kwargs: dict) -> bool:
    """Whether SB3 would give this policy its default Adam (no optimiser settings given;
    A2C uses RMSprop unless ``use_rms_prop`` is false)."""
    if "optimizer_class" in policy_kwargs or "optimizer_kwargs" in policy_kwargs:
        return False
    return algo == "PPO" or (algo == "A2C" and kwargs.get("use_rms_prop") is False)


def rollout(agent: BaseAlgorithm, env: VecEnv, steps: int, deterministic: bool = False) -> None:
    """Step ``env`` with the agent's current policy (no learning), e.g. to collect clips of
    early behaviour."""
    obs = env.reset()
    for _ in range(max(1, steps // env.num_envs)):
        actions, _ = agent.predict(obs, deterministic=deterministic)
        obs, _, _, _ = env.step(actions)


def load_policy(agent: BaseAlgorithm, path: Path) -> None:
    """Load a saved policy's parameters (and optimiser state) into ``agent``.

    Parameters only: SB3 reads the zip's tensors with ``torch.load(weights_only=True)`` and
    never unpickles the zip's ``data`` entry, so a file from someone else cannot run code.
    A damaged file, or one with NaN or infinite weights, is a one-line CheckpointError.
    """
    import zlib

    from rlhf.rundir import CheckpointError

    if not path.is_file():
        what = "is not a file" if path.exists() else "is missing"
        raise CheckpointError(f"{path} {what}: no saved policy here")
    try:
        agent.set_parameters(str(path), exact_match=True, device="cpu")
    except (ValueError, RuntimeError, KeyError, OSError, EOFError, pickle.UnpicklingError,
            zipfile.BadZipFile, zlib.error, TypeError, AttributeError, IndexError) as e:
        detail = " ".join(str(e).split()) or type(e).__name__  # torch's errors span lines
        raise CheckpointError(f"{path}: not a policy this config can load (corrupt, or saved "
                              f"for another env or network): {detail}") from None
    for name, param in agent.policy.named_parameters():
        if not bool(torch.isfinite(param).all()):
            raise CheckpointError(f"{path}: the policy's {name!r} holds NaN or infinite "
                                  "values; resume from an earlier checkpoint (write its name "
                                  "into checkpoints/LATEST)")


def load_trained_agent(cfg: Config, env: VecEnv, checkpoint: Path) -> BaseAlgorithm:
    """The policy saved in a run's ``checkpoint`` directory, acting on ``env`` (parameters
    only, see ``load_policy``).

    Random generators are seeded from ``cfg.seed`` as SB3 would, but ``env`` is not
    reseeded: SB3 seeds an agent's env when it builds the agent, which would throw away
    the evaluation seed the caller gave ``env``.
    """
    agent_cfg = cfg.agent
    if is_off_policy(agent_cfg):  # acting needs no replay buffer: not a million rows of it
        agent_cfg = dataclasses.replace(agent_cfg, kwargs={**agent_cfg.kwargs, "buffer_size": 1})
    agent = make_agent(agent_cfg, env, seed=None, total_timesteps=cfg.loop.total_timesteps)
    set_random_seed(cfg.seed)
    load_policy(agent, checkpoint / POLICY)
    return agent


# -- observation normalisation stats, saved without pickle -------------------------------

def save_obs_rms(env: VecEnv, path: Path) -> None:
    """The VecNormalize statistics anywhere in ``env``'s wrappers (SB3 may have wrapped it,
    e.g. in VecTransposeImage), as a plain .npz; nothing if it does not normalise."""
    env = unwrap_vec_normalize(env)
    if env is None:
        return
    rms = env.obs_rms
    buf = io.BytesIO()
    np.savez(buf, mean=rms.mean, var=rms.var, count=np.array(rms.count))
    atomic_write_bytes(path, buf.getvalue())


def load_obs_rms(env: VecEnv, path: Path) -> None:
    """Restore the VecNormalize statistics saved by ``save_obs_rms`` (nothing to do where
    ``env`` does not normalise). Checked first: statistics of the wrong shape, negative
    variances or NaN would feed the policy garbage observations."""
    import zlib

    from rlhf.rundir import CheckpointError

    env = unwrap_vec_normalize(env)
    if env is None or not path.exists():
        return
    shape = tuple(env.obs_rms.mean.shape)
    try:
        with np.load(path, allow_pickle=False) as d:
            mean, var, count = (np.asarray(d[k]) for k in ("mean", "var", "count"))
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        raise CheckpointError(f"{path} is corrupt ({' '.join(str(e).split())}); resume from "
                              "an earlier checkpoint (write its name into "
                              "checkpoints/LATEST)") from None
    problem = None
    if mean.shape != shape or var.shape != shape or count.size != 1:
        problem = (f"mean {mean.shape}, var {var.shape}, count {count.shape}; this env's "
                   f"observations are {shape}")
    elif not all(np.issubdtype(a.dtype, np.number) for a in (mean, var, count)):
        problem = "non-numeric statistics"
    elif not (np.isfinite(mean).all() and np.isfinite(var).all() and np.isfinite(count).all()):
        problem = "NaN or infinite statistics"
    elif (var < 0).any() or float(count) < 0:
        problem = "negative variances or count"
    if problem:
        raise CheckpointError(f"{path} is corrupt or from another env ({problem}); resume from "
                              "an earlier checkpoint (write its name into checkpoints/LATEST)")
    env.obs_rms.mean, env.obs_rms.var = mean.astype(np.float64), var.astype(np.float64)
    env.obs_rms.count = float(count)


def eval_env(cfg: Config, train_env: VecEnv | None = None, obs_rms_path: Path | None = None,
             seed: int = LOOP_EVAL, record_frames: bool = False) -> VecEnv:
    """An env for true-reward evaluation, normalising observations like the agent's (from
    ``train_env``'s statistics, or a checkpoint's ``obs_rms_path``), seeded ``cfg.seed +
    seed`` (an offset from ``rlhf.seeds``); ``record_frames`` renders frames into ``info``
    (``rlhf eval --video``)."""
    venv: VecEnv = DummyVecEnv([env_factory(cfg.env, record_state=False,
                                            record_frames=record_frames)])
    venv.seed(cfg.seed + seed)
    if cfg.agent.normalize_obs:
        venv = VecNormalize(venv, training=False, norm_obs=True, norm_reward=False)
        if isinstance(train_env, VecNormalize):
            venv.obs_rms = train_env.obs_rms.copy()
        elif obs_rms_path is not None:
            load_obs_rms(venv, obs_rms_path)
    return venv
