"""The training loop of Christiano et al. (2017), in one function.

Roll out the untrained policy and ask the teacher about pairs of its clips (the initial
batch); fit the reward model. Then, each iteration: the agent trains for a while on the
learned reward; new clips are cut from its rollouts; query selection picks the pairs the
ensemble is least sure about; the teacher labels them; the reward model is refitted on all
labels so far; the policy is evaluated on the true reward and everything is checkpointed.
The number of new queries per iteration falls hyperbolically, ending at the label budget.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import configure as configure_logger
from tqdm import tqdm

from rlhf import agents, checkpoint
from rlhf.agent import EnvStack, eval_env, make_env_stack, relabel_per_rollout
from rlhf.callbacks import ProgressBar, RefitWhenLabelled, mean_episode_return
from rlhf.checkenv import preflight
from rlhf.config import Config, ConfigError
from rlhf.environment import EnvError
from rlhf.evaluate import policy_disagreement, reward_correlation, true_returns
from rlhf.io import saving
from rlhf.preferences import PreferenceLearner, trainable
from rlhf.progress import IterationRecord, Progress
from rlhf.queries import QueryStrategy, make_strategy
from rlhf.resume import record_components
from rlhf.reward.model import FeatureSpec, RewardModel
from rlhf.reward.trainer import FitStats, RewardTrainer
from rlhf.rundir import Interrupted, RunDir, reserve_store, sigterm_raises_interrupt
from rlhf.schedule import eval_iterations, iteration_ends, label_schedule
from rlhf.store import Store, StoreCounts, StoreUnavailable
from rlhf.store_errors import RetryPolicy
from rlhf.teachers import ScoreFn, Teacher, make_teacher
from rlhf.wrappers import RelabelRollout


@dataclass
class RunResult:
    run_dir: Path
    timesteps: int
    labels: int
    final_return: float
    metrics: list[dict[str, Any]] = field(default_factory=list)


class Run:
    """The components of one run, wired together. ``run(cfg)`` is the usual entry."""

    def __init__(self, cfg: Config, teacher: Teacher | None = None,
                 strategy: QueryStrategy | None = None, score: ScoreFn | None = None,
                 force: bool = False, progress: bool = True, resume: bool = False):
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)
        torch.manual_seed(cfg.seed)
        # Everything a bad config can break is built before the run directory exists, so a
        # typo fails in one line and leaves nothing behind.
        record_components(cfg, {"teacher": teacher, "strategy": strategy, "score": score},
                          resume)
        teacher_rng = np.random.default_rng([cfg.seed, 1])
        if teacher is not None and getattr(teacher, "rng", False) is None:
            teacher.rng = teacher_rng  # a script's teacher without its own: the run's stream
        self.teacher = teacher or make_teacher(cfg.teacher, teacher_rng, score=score)
        self.strategy = strategy or make_strategy(cfg.query.strategy)
        self.envs: EnvStack = make_env_stack(cfg, use_next_obs=cfg.reward.use_next_obs,
                                             deferred=relabel_per_rollout(cfg))
        try:
            self.agent: agents.Agent = agents.make(cfg, self.envs, cfg.seed)
            self.sb3: BaseAlgorithm = self.agent.sb3
            spec = FeatureSpec.from_spaces(self.envs.venv.observation_space,
                                           self.envs.venv.action_space, cfg.reward.use_action,
                                           cfg.reward.use_next_obs)
            model = RewardModel(spec, cfg.reward.ensemble, cfg.reward.hidden, seed=cfg.seed,
                                clip_reward=cfg.reward.clip_reward)
            self.trainer = RewardTrainer(model, cfg.reward, cfg.loop.clip_length,
                                         seed=cfg.seed)
            if resume:
                self.dir = RunDir.open(cfg.run_dir)
                self.lock = self.dir.lock()  # one trainer per run; the OS frees it on a crash
            else:
                reserve_store(cfg)  # a server's store: before anything is written here
                self.dir, self.lock = RunDir.create(cfg, force=force)
        except BaseException:
            self.envs.close()
            raise
        try:
            self._open_outputs(resume)
        except BaseException:
            self.lock.release()
            self.envs.close()
            raise
        self.learner = PreferenceLearner(self.trainer, self.store, self.teacher, self.strategy,
                                         self.rng, cfg.query.candidates,
                                         recent_clips=cfg.query.recent_clips,
                                         overlap=cfg.query.overlap,
                                         repeat_fraction=cfg.query.repeat_fraction)
        # A person answers at their own pace: by default the agent keeps training on the
        # current reward model meanwhile (Christiano et al.), refitting as labels land.
        self.asynchronous = not self.teacher.synchronous and cfg.teacher.asynchronous
        self.bar = tqdm(total=cfg.loop.total_timesteps, unit="step", disable=not progress,
                        dynamic_ncols=True)

    def _open_outputs(self, resume: bool) -> None:
        """The store and the TensorBoard logger, once this process holds the run's lock."""
        location = self.dir.store_location(self.cfg)
        if resume and isinstance(location, Path):
            self.dir.check_store()  # a run with checkpoints never gets a new, empty store
        # A kill can precede the store's creation (a new run, or a resume of one that died
        # before its first checkpoint): then it is created here (on a server: it was made by
        # reserve_store, and a resume finds it there or stops).
        self.store = Store(location, create=isinstance(location, Path))
        self.store.retry = RetryPolicy(self.cfg.store.retry_seconds,
                                       lambda line: self.bar.write(line))
        # One logger for the whole run (SB3 would make a new one, and drop what we
        # recorded, at every learn() call): its own curves and ours under rlhf/.
        with saving(self.dir.tensorboard):
            self.sb3.set_logger(configure_logger(str(self.dir.tensorboard), ["tensorboard"]))
        self.progress = Progress(self.dir, self.cfg.loop.total_timesteps,
                                 self.cfg.loop.total_labels, self.sb3.logger,
                                 robust=self.cfg.reward.robust)

    # -- the stages ----------------------------------------------------------------------

    def ask(self, n: int, iteration: int) -> None:
        """Select n pairs from the recent clips, store them, and have the teacher label them.

        A person labelling synchronously (``teacher.asynchronous: false``) is waited for
        until no query is awaited, including queries asked before a resume (n may be 0);
        a team's extra copies and repeats are not waited for (``StoreCounts.awaited``).
        """
        self._ask(n, iteration)
        if not self.teacher.synchronous and not self.asynchronous:
            self.wait_for_labels(lambda c: c.awaited == 0, lambda c: c.awaited)

    def _ask(self, n: int, iteration: int) -> None:
        pool = list(self.envs.collector.pool)
        if n <= 0:
            return
        if len(pool) < 2:
            if self.store.counts().queries == 0:  # nothing to pair, nothing to learn from
                raise ConfigError(f"loop.initial_timesteps: {self.cfg.loop.initial_timesteps} "
                                  f"steps of early behaviour gave {len(pool)} clip(s) of "
                                  f"{self.cfg.loop.clip_length} steps; at least 2 are needed "
                                  "to ask anything: raise loop.initial_timesteps (or lower "
                                  "loop.clip_length)")
            return
        for i, clip in self.learner.ask(pool, n, iteration):
            self.envs.collector.replace(i, clip)  # stored once: asked again, it keeps its id

    def wait_for_labels(self, done: Callable[[StoreCounts], bool],
                        missing: Callable[[StoreCounts], int],
                        poll: float = 1.0) -> None:
        """Block until ``done(store counts)``, while a person labels in the viewer. The
        progress bar and status.json say how many labels (``missing(counts)``) are awaited."""
        counts = self.store.counts()
        if done(counts):
            return
        self.bar.write(f"rlhf: waiting for {missing(counts)} labels; label the pairs with: "
                       f"rlhf label {self.dir.path}")
        timesteps = int(self.sb3.num_timesteps)
        while not done(counts):
            n = missing(counts)
            self.bar.set_postfix_str(f"waiting for {n} labels ({counts.labels} so far)")
            self.progress.waiting(n, timesteps)
            time.sleep(poll)
            counts = self.store.counts()
        self.progress.waiting(0, timesteps)
        self.bar.set_postfix_str(f"labels {counts.labels}")

    def first_fit(self, n: int) -> FitStats | None:
        """The first reward-model fit, before the agent trains on the learned reward at all.

        A person's labels are waited for: all of them (synchronous) or ``min_new_labels``
        trainable ones (asynchronous). Should every answer be a skip, more pairs of early
        behaviour are asked: the agent never trains on an untrained reward model.
        """
        need = self.cfg.teacher.min_new_labels
        for _ in range(5 if self.teacher.synchronous else 10**9):
            if self.asynchronous:
                self.wait_for_labels(
                    lambda c: trainable(c) >= need or c.awaited == 0,
                    lambda c: max(0, min(need - trainable(c), c.awaited)))
            stats = self.fit()
            if stats is not None:
                return stats
            self.bar.write("rlhf: every answer so far was a skip; asking about more pairs")
            self.ask(n, iteration=0)
        raise ConfigError(f"teacher: the simulated teacher skipped all "
                          f"{self.store.counts().skipped} pairs of early behaviour it was "
                          "asked about, so there is nothing to learn a reward from; lower "
                          "teacher.skip_threshold (or leave it unset)")

    def refit_if_due(self) -> FitStats | None:
        """Asynchronous teacher: refit once ``teacher.min_new_labels`` new trainable labels
        have landed since the last fit; otherwise keep the current reward model."""
        counts = self.store.counts()
        new = trainable(counts) - self.learner.fitted_labels
        self.bar.set_postfix_str(f"labels {counts.labels} ({new} new, {counts.pending} "
                                 "pending)")
        if new < self.cfg.teacher.min_new_labels:
            return None
        return self.fit()

    def fit(self) -> FitStats | None:
        """Refit the reward model on all labels so far; hand the new reward to the agent."""
        stats = self.learner.fit(recent=list(self.envs.collector.pool)[-256:])
        if stats is not None:
            self.agent.on_reward_fit(self.trainer.model)
        return stats

    def train_agent(self, steps: int) -> None:
        callbacks: list[BaseCallback] = [ProgressBar(self.bar)]
        if self.envs.learned.deferred:  # before a refit changes the reward
            callbacks.insert(0, RelabelRollout(self.envs.learned))
        if self.asynchronous:
            callbacks.append(RefitWhenLabelled(
                self.refit_if_due, off_policy=isinstance(self.agent, agents.OffPolicyAgent)))
        self.agent.train(steps, callbacks)

    def evaluate(self) -> float:
        env = eval_env(self.cfg, self.envs.agent_env)
        try:
            return float(true_returns(self.sb3, env, self.cfg.eval.episodes,
                                      self.cfg.eval.deterministic).mean())
        finally:
            env.close()

    def rngs(self) -> dict[str, np.random.Generator]:
        rngs = {"query": self.rng}
        teacher_rng = getattr(self.teacher, "rng", None)
        if isinstance(teacher_rng, np.random.Generator):
            rngs["teacher"] = teacher_rng
        if self.envs.collector.frame_sampling is not None:
            rngs["frames"] = self.envs.collector.frame_sampling.rng
        return rngs

    def checkpoint(self, iteration: int) -> None:
        checkpoint.save(self.dir.checkpoints, iteration, self.agent, self.trainer, self.rngs())

    def restore(self) -> int:
        """Load the newest checkpoint of a resumed run; returns the next iteration.

        Labels and queries need no restoring: they are in the store, committed one by one.
        Queries asked but not answered before the stop are answered first (a simulated
        teacher) or stay pending for the viewer (a person) — never asked again.
        """
        path = self.dir.latest_checkpoint()
        if path is not None:
            state = checkpoint.restore(path, self.agent, self.trainer, self.rngs())
            self.bar.update(state.timesteps)
            if bool(self.trainer.model.fitted):
                self.envs.learned.set_reward_fn(self.trainer.model.reward_fn())
        self.progress.restore(None if path is None else state.iteration)
        self.learner.answer_pending()
        return 0 if path is None else state.iteration + 1

    def record(self, iteration: int, stats: FitStats | None, eval_return: float | None,
               seconds: float) -> dict[str, Any]:
        counts = self.store.counts()
        recent = list(self.envs.collector.pool)[-200:]
        relabel = getattr(self.agent, "last_relabel_seconds", None)
        row = self.progress.record(IterationRecord(
            iteration=iteration, timesteps=int(self.sb3.num_timesteps), labels=counts.labels,
            queries=counts.queries, clips=counts.clips,
            eval_return=math.nan if eval_return is None else eval_return,
            train_return=mean_episode_return(self.sb3),
            reward_corr=reward_correlation(self.trainer.model, recent), seconds=seconds,
            fit=stats, relabel_seconds=relabel,
            policy_disagreement=policy_disagreement(self.trainer.model, recent),
            flip_rates=self.learner.flip_rates, distrusted_by=self.learner.distrusted_by),
            counts)
        self.bar.set_postfix(labels=counts.labels, ret=f"{row['eval_return']:.1f}")
        return row

    def save_interrupted(self, done: int, rollout_size: int) -> bool:
        """Checkpoint a run stopped mid-iteration (Ctrl-C, SIGTERM, a failing env) as after
        iteration ``done``; False when there was nothing to save yet (``done`` < 0)."""
        if done < 0:
            return False
        # A rollout cut short never reached the policy: count only whole ones, so the
        # resumed run still ends exactly on its timestep budget.
        self.sb3.num_timesteps -= self.sb3.num_timesteps % rollout_size
        self.checkpoint(done)
        return True

    def adopt_config(self) -> None:
        """A resume's overrides go into config.yaml only once the run has restored with
        them: an override that fails (a device this machine lacks) leaves the file as it
        was, and the next resume works."""
        from rlhf.config import save_config

        on_disk = self.dir.load_config()
        on_disk.run_dir = self.cfg.run_dir
        if on_disk != self.cfg:
            save_config(self.cfg, self.dir.config)

    def close(self) -> None:
        self.bar.close()
        self.sb3.logger.close()
        self.envs.close()
        self.store.close()
        self.lock.release()


def run(cfg: Config, *, teacher: Teacher | None = None, strategy: QueryStrategy | None = None,
        score: ScoreFn | None = None, force: bool = False, progress: bool = True,
        resume: bool = False,
        on_iteration: Callable[[dict[str, Any]], None] | None = None) -> RunResult:
    """Train an agent from preferences as ``cfg`` says; returns where the run lives and how
    it did. Swap in a teacher, a query strategy or a scoring function by argument.

    ``resume=True`` continues the run in ``cfg.run_dir`` from its newest checkpoint (see
    ``rlhf.resume.resume_config``). Ctrl-C or SIGTERM saves a checkpoint and raises ``Interrupted``.
    """
    if cfg.tune is not None:
        raise ConfigError("this config has a tune section: it tunes parameters from "
                          "comparisons rather than training an agent; use rlhf tune "
                          "(rlhf.tune.run_tune)")
    preflight(cfg)  # a broken env fails in one line, before anything is built
    r = Run(cfg, teacher=teacher, strategy=strategy, score=score, force=force,
            progress=progress, resume=resume)
    lp = cfg.loop
    print(f"rlhf: run directory {r.dir.path}", flush=True)
    schedule = label_schedule(lp.total_labels, lp.initial_label_fraction, lp.iterations,
                              lp.schedule_decay)
    rollout_size = r.agent.unit
    warmup = r.agent.warmup  # pre-training steps, counted in the budget
    rollouts = max(1, (lp.total_timesteps - warmup) // rollout_size)
    ends = [warmup + e for e in iteration_ends(lp.total_timesteps - warmup, rollout_size,
                                               lp.iterations)]
    if rollouts < lp.iterations:
        print(f"rlhf: note: loop.iterations ({lp.iterations}) exceeds the agent's rollouts in "
              f"loop.total_timesteps ({rollouts} of {rollout_size} steps); "
              f"{lp.iterations - rollouts} iterations only ask and refit", flush=True)
    evaluated = set(eval_iterations(lp.iterations, cfg.eval.every))
    eval_return, done = math.nan, -1
    previous_sigterm = sigterm_raises_interrupt()
    try:
        start = r.restore() if resume else 0
        if resume:
            r.adopt_config()
        done = start - 1
        if start == 0:
            t0 = time.perf_counter()
            r.agent.explore(lp.initial_timesteps, [ProgressBar(r.bar)])  # or pre-training
            r.ask(schedule[0] - r.store.counts().queries, iteration=0)
            stats = r.first_fit(schedule[0])
            r.record(0, stats, None, time.perf_counter() - t0)
            r.checkpoint(0)
            done = 0
        for it in range(max(start, 1), lp.iterations + 1):
            t0 = time.perf_counter()
            r.learner.last_fit = None
            if ends[it] > r.sb3.num_timesteps:
                r.train_agent(ends[it] - r.sb3.num_timesteps)
            # Ask up to the schedule's running total: a resumed iteration asks only what is
            # missing, and pairs a small pool could not supply earlier are asked now.
            r.ask(sum(schedule[: it + 1]) - r.store.counts().queries, iteration=it)
            if r.asynchronous:
                r.refit_if_due()  # as during training: only once enough new labels landed
            else:
                r.fit()
            stats = r.learner.last_fit  # None: the reward model was not refitted this time
            eval_return = r.evaluate() if it in evaluated else None
            # Metrics first: a kill between the two loses no row (resume drops rows newer
            # than the checkpoint it continues from).
            row = r.record(it, stats, eval_return, time.perf_counter() - t0)
            r.checkpoint(it)
            done = it
            if on_iteration is not None:
                on_iteration(row)
        if eval_return is None or math.isnan(eval_return):  # resumed after the last eval
            eval_return = r.evaluate()
        r.progress.finished()
        return RunResult(r.dir.path, int(r.sb3.num_timesteps), r.store.counts().labels,
                         float(eval_return), r.progress.rows)
    except KeyboardInterrupt:
        # Ctrl-C or SIGTERM: keep what the agent learned since the last iteration; labels
        # are already in the store. Resume continues the interrupted iteration.
        raise Interrupted(r.dir.path, checkpointed=r.save_interrupted(done, rollout_size)) \
            from None
    except EnvError as e:
        # The user's env failed mid-run (an exception in its step, a NaN): saved as on
        # SIGTERM, so once the env is fixed the run resumes where it stopped.
        saved = r.save_interrupted(done, rollout_size)
        raise EnvError(f"{e}; {'checkpoint' if saved else 'labels so far'} saved at "
                       f"{int(r.sb3.num_timesteps)} timesteps. Fix the env, then resume "
                       f"with: rlhf train --resume {r.dir.path}") from None
    except StoreUnavailable as e:
        # The store's server stayed away past store.retry_seconds: saved as on SIGTERM.
        saved = r.save_interrupted(done, rollout_size)
        raise StoreUnavailable(f"{e}; {'checkpoint' if saved else 'labels so far'} saved at "
                               f"{int(r.sb3.num_timesteps)} timesteps. Once the server is "
                               f"back, resume with: rlhf train --resume {r.dir.path}") from None
    finally:
        with contextlib.suppress(ValueError):  # ValueError: not the main thread
            signal.signal(signal.SIGTERM, previous_sigterm)
        r.close()
