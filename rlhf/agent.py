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

import inspect
import io
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecNormalize, unwrap_vec_normalize

from rlhf.clips import ClipCollector, FrameSampling
from rlhf.config import AgentConfig, Config, ConfigError
from rlhf.environment import env_factory, needs_recorded_frames
from rlhf.io import atomic_write_bytes
from rlhf.wrappers import LearnedRewardVecEnv

ALGOS: dict[str, type[BaseAlgorithm]] = {"PPO": PPO, "A2C": A2C}
FRAME_RNG_STREAM = 2
"""``default_rng([seed, 2])`` draws which clips record frames (the loop's teacher uses
stream 1), independent of the query and teacher draws."""
FUSED_ADAM = {"eps": 1e-5, "fused": True}
"""The optimiser settings given to an SB3 policy that would get Adam with no settings of
its own: SB3's Adam (``eps`` 1e-5, its default there), with torch's fused kernel, one op
per step instead of a dozen per parameter tensor. Same update; PPO on HalfCheetah's
256x256 networks spends 13-15% less CPU time (BENCHMARKS.md, "Fused Adam")."""
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
    venv = DummyVecEnv([env_factory(cfg.env, record_frames=record_frames)
                        for _ in range(cfg.env.n_envs)])
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


def relabel_per_rollout(cfg: Config) -> bool:
    """``reward.relabel``, with 'auto' resolved: per rollout where the reward model is on a
    GPU (a transfer per vector step would cost more than the env step)."""
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
    kwargs = dict(cfg.kwargs)
    if cfg.lr_schedule == "linear":
        if total_timesteps is None:
            raise ValueError("agent.lr_schedule linear needs the run's total_timesteps")
        lr = kwargs.get("learning_rate", inspect.signature(ALGOS[cfg.algo])
                        .parameters["learning_rate"].default)
        if not isinstance(lr, (int, float)):
            raise ConfigError("agent.lr_schedule: linear needs a number in "
                              f"agent.kwargs.learning_rate, got {lr!r}")
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
        return ALGOS[cfg.algo](cfg.policy, env, seed=seed, verbose=0,
                               tensorboard_log=tensorboard_log, device="cpu", **kwargs)
    except (TypeError, ValueError, KeyError) as e:
        raise ConfigError(f"agent.kwargs: {cfg.algo} rejected its settings: {e}") from None


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
    """
    from rlhf.rundir import CheckpointError

    try:
        agent.set_parameters(str(path), exact_match=True, device="cpu")
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no saved policy here") from None
    except (ValueError, RuntimeError, KeyError, OSError, EOFError, pickle.UnpicklingError,
            zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path}: not a policy this config can load (corrupt, or saved "
                              f"for another env or network): {e}") from None


def load_trained_agent(cfg: Config, env: VecEnv, checkpoint: Path) -> BaseAlgorithm:
    """The policy saved in a run's ``checkpoint`` directory, acting on ``env`` (parameters
    only, see ``load_policy``).

    Random generators are seeded from ``cfg.seed`` as SB3 would, but ``env`` is not
    reseeded: SB3 seeds an agent's env when it builds the agent, which would throw away
    the evaluation seed the caller gave ``env``.
    """
    agent = make_agent(cfg.agent, env, seed=None, total_timesteps=cfg.loop.total_timesteps)
    set_random_seed(cfg.seed)
    load_policy(agent, checkpoint / "policy.zip")
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
    env = unwrap_vec_normalize(env)
    if env is None or not path.exists():
        return
    with np.load(path, allow_pickle=False) as d:
        env.obs_rms.mean, env.obs_rms.var = d["mean"], d["var"]
        env.obs_rms.count = float(d["count"])


EVAL_SEED_OFFSET = 20_000
"""``rlhf eval`` (and its ``--video``) seed their env with the run's seed plus this: initial
states the training envs, seeded with the run's seed, do not start from."""


def eval_env(cfg: Config, train_env: VecEnv | None = None, obs_rms_path: Path | None = None,
             seed: int = 10_000, record_frames: bool = False) -> VecEnv:
    """An env for true-reward evaluation, normalising observations like the agent's (from
    ``train_env``'s statistics, or a checkpoint's ``obs_rms_path``), seeded ``cfg.seed +
    seed``; ``record_frames`` renders frames into ``info`` (``rlhf eval --video``)."""
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
