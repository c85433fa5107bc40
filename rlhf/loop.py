"""The training loop of Christiano et al. (2017), in one function.

Roll out the untrained policy and ask the teacher about pairs of its clips (the initial
batch); fit the reward model. Then, each iteration: the agent trains for a while on the
learned reward; new clips are cut from its rollouts; query selection picks the pairs the
ensemble is least sure about; the teacher labels them; the reward model is refitted on all
labels so far; the policy is evaluated on the true reward and everything is checkpointed.
The number of new queries per iteration falls hyperbolically, ending at the label budget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from tqdm import tqdm

from rlhf.agent import EnvStack, eval_env, make_agent, make_env_stack, rollout, save_obs_rms
from rlhf.clips import Clip
from rlhf.config import Config
from rlhf.evaluate import reward_correlation, true_returns
from rlhf.io import atomic_save
from rlhf.queries import STRATEGIES, QueryStrategy, RandomQueries, select_pairs
from rlhf.reward.model import FeatureSpec, RewardModel
from rlhf.reward.trainer import FitStats, RewardTrainer
from rlhf.rundir import RunDir
from rlhf.store import Store
from rlhf.teachers import ScoreFn, Teacher, make_teacher


def label_schedule(total: int, initial_fraction: float, iterations: int,
                   decay: float) -> list[int]:
    """Labels to ask at the start and at each iteration: [initial, it_1, ..., it_n].

    Iteration i gets a share proportional to 1 / (1 + decay * i) (Christiano's rate falls
    roughly as 1/t); integer counts that sum exactly to ``total``.
    """
    initial = min(total, max(1, round(total * initial_fraction)))
    rest = total - initial
    w = 1.0 / (1.0 + decay * np.arange(iterations))
    share = rest * w / w.sum()
    counts = np.floor(share).astype(int)
    for i in np.argsort(-(share - counts), kind="stable")[: rest - counts.sum()]:
        counts[i] += 1
    return [initial, *counts.tolist()]


@dataclass
class RunResult:
    run_dir: Path
    timesteps: int
    labels: int
    final_return: float
    metrics: list[dict[str, Any]] = field(default_factory=list)


class _Progress(BaseCallback):
    """Advances the run's progress bar as the agent steps."""

    def __init__(self, bar: tqdm):
        super().__init__()
        self.bar = bar

    def _on_step(self) -> bool:
        self.bar.update(self.training_env.num_envs)
        return True


class Run:
    """The components of one run, wired together. ``run(cfg)`` is the usual entry."""

    def __init__(self, cfg: Config, teacher: Teacher | None = None,
                 strategy: QueryStrategy | None = None, score: ScoreFn | None = None,
                 force: bool = False, progress: bool = True):
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.dir = RunDir.create(cfg, force=force)
        self.envs: EnvStack = make_env_stack(cfg, use_next_obs=cfg.reward.use_next_obs)
        self.agent: BaseAlgorithm = make_agent(cfg.agent, self.envs.agent_env, cfg.seed,
                                               str(self.dir.tensorboard))
        spec = FeatureSpec.from_spaces(self.envs.venv.observation_space,
                                       self.envs.venv.action_space, cfg.reward.use_action,
                                       cfg.reward.use_next_obs)
        model = RewardModel(spec, cfg.reward.ensemble, cfg.reward.hidden, seed=cfg.seed,
                            clip_reward=cfg.reward.clip_reward)
        self.trainer = RewardTrainer(model, cfg.reward, cfg.loop.clip_length, seed=cfg.seed)
        self.store = Store(self.dir.store, create=True)
        self.teacher = teacher or make_teacher(
            cfg.teacher, np.random.default_rng([cfg.seed, 1]), score=score)
        self.strategy = strategy or STRATEGIES[cfg.query.strategy]()
        self.clips: dict[int, Clip] = {}  # every stored clip of this run, by id
        self.metrics: list[dict[str, Any]] = []
        self.bar = tqdm(total=cfg.loop.total_timesteps, unit="step", disable=not progress,
                        dynamic_ncols=True)

    # -- the stages ----------------------------------------------------------------------

    def ask(self, n: int, iteration: int) -> None:
        """Select n pairs from the recent clips, store them, and have the teacher label them."""
        pool = list(self.envs.collector.pool)
        if n <= 0 or len(pool) < 2:
            return
        model_ready = bool(self.trainer.model.fitted)
        returns = (self.trainer.clip_member_returns(pool) if model_ready
                   else np.zeros((self.trainer.model.members, len(pool))))
        strategy = self.strategy if model_ready else RandomQueries()
        pairs = select_pairs(strategy, returns, n, self.cfg.query.candidates, self.rng)
        used = np.unique(pairs)
        stored = self.store.add_clips([pool[i] for i in used])
        ids = {int(i): c.id for i, c in zip(used, stored, strict=True)}
        self.clips.update({c.id: c for c in stored})
        queries = self.store.add_queries([(ids[a], ids[b]) for a, b in pairs], iteration)
        self.teacher.ask(self.store, queries, self.clips)
        if not self.teacher.synchronous:
            self.wait_for_labels()

    def wait_for_labels(self, poll: float = 1.0) -> None:
        """Block until no query is pending (a person labels them in the viewer)."""
        while (pending := self.store.counts()["pending"]) > 0:
            self.bar.set_postfix_str(f"waiting for {pending} labels (rlhf label {self.dir.path})")
            time.sleep(poll)

    def fit(self) -> FitStats | None:
        """Refit the reward model on all labels so far; hand the new reward to the agent."""
        pair_ids, mu = self.store.preferences()
        if len(mu) == 0:
            return None
        missing = [int(i) for i in np.unique(pair_ids) if int(i) not in self.clips]
        self.clips.update({c.id: c for c in self.store.get_clips(missing)})
        self.trainer.sync(pair_ids, mu, self.clips)
        stats = self.trainer.fit()
        recent = list(self.envs.collector.pool)[-256:]
        self.trainer.update_output_stats(recent or list(self.clips.values()))
        self.envs.learned.set_reward_fn(self.trainer.model.reward)
        return stats

    def train_agent(self, steps: int) -> None:
        self.agent.learn(steps, reset_num_timesteps=False, callback=_Progress(self.bar))

    def evaluate(self) -> float:
        env = eval_env(self.cfg, self.envs.agent_env)
        try:
            return float(true_returns(self.agent, env, self.cfg.eval.episodes,
                                      self.cfg.eval.deterministic).mean())
        finally:
            env.close()

    def checkpoint(self) -> None:
        def save_policy(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                self.agent.save(f)

        atomic_save(self.dir.policy, save_policy)
        save_obs_rms(self.envs.agent_env, self.dir.obs_rms)
        self.trainer.model.save(self.dir.checkpoints)

    def record(self, iteration: int, stats: FitStats | None, eval_return: float | None,
               seconds: float) -> dict[str, Any]:
        counts = self.store.counts()
        recent = list(self.envs.collector.pool)[-200:]
        row: dict[str, Any] = {
            "iteration": iteration,
            "timesteps": int(self.agent.num_timesteps),
            "labels": counts["labels"],
            "queries": counts["queries"],
            "clips": counts["clips"],
            "eval_return": eval_return if eval_return is not None else math.nan,
            "train_return": _mean_episode_return(self.agent),
            "reward_corr": reward_correlation(self.trainer.model, recent),
            "seconds": round(seconds, 3),
        }
        if stats is not None:
            row.update(rm_train_loss=stats.train_loss, rm_val_loss=stats.val_loss,
                       rm_val_accuracy=stats.val_accuracy,
                       rm_train_accuracy=stats.train_accuracy,
                       rm_weight_decay=stats.weight_decay, rm_fit_seconds=stats.seconds,
                       rm_steps=stats.steps)
        self.metrics.append(row)
        self.dir.write_metrics(self.metrics)
        last_eval = next((m["eval_return"] for m in reversed(self.metrics)
                          if not math.isnan(m["eval_return"])), None)
        self.dir.write_status({**counts, "iteration": iteration,
                               "timesteps": row["timesteps"],
                               "latest_eval_return": last_eval,
                               "reward_model_val_accuracy": row.get("rm_val_accuracy"),
                               "reward_model_train_accuracy": row.get("rm_train_accuracy"),
                               "reward_corr": row["reward_corr"],
                               "total_timesteps": self.cfg.loop.total_timesteps,
                               "total_labels": self.cfg.loop.total_labels,
                               "finished": False})
        if getattr(self.agent, "_logger", None) is not None:  # set by the first learn()
            for key, value in row.items():
                if isinstance(value, (int, float)) and not math.isnan(value):
                    self.agent.logger.record(f"rlhf/{key}", value)
        self.bar.set_postfix(labels=counts["labels"], ret=f"{row['eval_return']:.1f}")
        return row

    def close(self) -> None:
        self.bar.close()
        self.envs.close()
        self.store.close()


def run(cfg: Config, *, teacher: Teacher | None = None, strategy: QueryStrategy | None = None,
        score: ScoreFn | None = None, force: bool = False, progress: bool = True,
        on_iteration: Callable[[dict[str, Any]], None] | None = None) -> RunResult:
    """Train an agent from preferences as ``cfg`` says; returns where the run lives and how
    it did. Swap in a teacher, a query strategy or a scoring function by argument."""
    r = Run(cfg, teacher=teacher, strategy=strategy, score=score, force=force,
            progress=progress)
    lp = cfg.loop
    print(f"rlhf: run directory {r.dir.path}", flush=True)
    schedule = label_schedule(lp.total_labels, lp.initial_label_fraction, lp.iterations,
                              lp.schedule_decay)
    # Whole rollouts per iteration, spread evenly, never past the timestep budget.
    rollout_size = _rollout_size(r.agent)
    rollouts = max(1, lp.total_timesteps // rollout_size)
    ends = [(i * rollouts) // lp.iterations * rollout_size for i in range(lp.iterations + 1)]
    eval_return = math.nan
    try:
        t0 = time.perf_counter()
        rollout(r.agent, r.envs.agent_env, lp.initial_timesteps)  # early behaviour
        r.ask(schedule[0], iteration=0)
        stats = r.fit()
        row = r.record(0, stats, None, time.perf_counter() - t0)
        for it in range(1, lp.iterations + 1):
            t0 = time.perf_counter()
            if ends[it] > r.agent.num_timesteps:
                r.train_agent(ends[it] - r.agent.num_timesteps)
            r.ask(schedule[it], iteration=it)
            stats = r.fit()
            last = it == lp.iterations
            every = cfg.eval.every
            eval_return = (r.evaluate() if last or (every and it % every == 0) else None)
            r.checkpoint()
            row = r.record(it, stats, eval_return, time.perf_counter() - t0)
            if on_iteration is not None:
                on_iteration(row)
        status = r.dir.read_status()
        r.dir.write_status({**status, "finished": True})
        return RunResult(r.dir.path, int(r.agent.num_timesteps), row["labels"],
                         float(eval_return if eval_return is not None else math.nan),
                         r.metrics)
    finally:
        r.close()


def _rollout_size(agent: BaseAlgorithm) -> int:
    return int(getattr(agent, "n_steps", 1)) * agent.get_env().num_envs


def _mean_episode_return(agent: BaseAlgorithm) -> float:
    buf = getattr(agent, "ep_info_buffer", None)
    if not buf:
        return math.nan
    return float(np.mean([e["r"] for e in buf]))
