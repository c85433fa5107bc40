"""Typed run configuration: defaults in code, YAML presets override them, the CLI overrides both.

>>> cfg = load_config(overrides=["reward.ensemble=5", "seed=3"])
>>> cfg.reward.ensemble, cfg.seed
(5, 3)

Every error names the offending key's dotted path, e.g. ``reward.ensembel: unknown key
(did you mean 'ensemble'?)``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

# The YAML reading, the typing of plain data and the bounds live in their own modules; their
# names stay importable from here (``from rlhf.config import BOUNDS``), as does ConfigError
# (in rlhf.errors).
from rlhf.config_bounds import BOUNDS as BOUNDS
from rlhf.config_bounds import LENGTHS as LENGTHS
from rlhf.config_bounds import MAX_LAYERS as MAX_LAYERS
from rlhf.config_bounds import SEED_MAX as SEED_MAX
from rlhf.config_bounds import WIDTH as WIDTH
from rlhf.config_bounds import Bound as Bound
from rlhf.config_bounds import numeric_fields as numeric_fields
from rlhf.config_bounds import validate
from rlhf.config_types import from_dict as from_dict
from rlhf.config_yaml import MAX_CONFIG_BYTES as MAX_CONFIG_BYTES
from rlhf.config_yaml import MAX_YAML_NODES as MAX_YAML_NODES
from rlhf.config_yaml import _load_yaml, _one_line, _parse_value, _read_config_text
from rlhf.errors import ConfigError


@dataclass
class EnvConfig:
    id: str = "Pendulum-v1"
    """A registered gymnasium id, or an entry point ``module.path:ClassName`` / ``module:Id-v0``."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments passed to ``gymnasium.make`` (or the class)."""
    imports: list[str] = field(default_factory=list)
    """Extra modules to import before making the env (they register the user's envs)."""
    n_envs: int = 4
    """Parallel environments in the agent's VecEnv."""
    workers: Literal["in-process", "subprocess"] = "in-process"
    """'in-process': the envs step in turn in the trainer (SB3's DummyVecEnv, best for fast
    simulators); 'subprocess': one process per env (SB3's SubprocVecEnv), for a simulator
    slow enough that stepping envs in parallel pays for the transfers. Clips, restorable
    state and recorded frames are the same either way."""
    max_episode_steps: int | None = None
    """Override the env's time limit (fixed-horizon episodes keep length from leaking reward)."""
    frame_fraction: float = 0.1
    """Envs without restorable state, labelled by a person: share of clips whose frames are
    recorded during rollouts (each env decides at the start of each clip). Only recorded
    clips can be shown, so only they become query candidates; rendering costs a frame per
    recorded step. Envs with restorable state never record (their clips are replayed)."""
    frame_size: int = 128
    """Recorded frames are downscaled (area average) to at most this many pixels on their
    long side: a 25-step clip of 128x128 RGB frames is 1.2 MB."""
    frame_memory_mb: float = 512.0
    """Recorded frames kept in memory for query candidates: the candidate pool holds at most
    this many megabytes of frames (fewer clips than ``query.pool_size`` if need be)."""


@dataclass
class AgentConfig:
    algo: str = "PPO"
    """PPO, A2C (on-policy), SAC, TD3 (off-policy: the replay buffer is relabelled at each
    reward-model fit), or any SB3 algorithm class as ``module:Class``."""
    policy: str = "MlpPolicy"
    normalize_obs: bool = False
    """VecNormalize on observations, for the policy only (the reward model sees raw ones)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for the SB3 algorithm (n_steps, learning_rate, policy_kwargs, ...)."""
    pretrain_steps: int = 0
    """Off-policy agents: steps of unsupervised pre-training (PEBBLE) before the first
    queries, maximising a k-nearest-neighbour state-entropy bonus instead of any reward, so
    the first clips show varied behaviour. Counted in ``loop.total_timesteps``; replaces
    ``loop.initial_timesteps`` of untrained behaviour when > 0."""
    relabel_buffer: bool = True
    """Off-policy agents: relabel the whole replay buffer with each newly fitted reward model
    (PEBBLE); false keeps each transition's reward as it was stored (an ablation)."""
    lr_schedule: Literal["constant", "linear"] = "constant"
    """``linear``: the learning rate falls from ``kwargs.learning_rate`` to 0 over the whole
    run's ``loop.total_timesteps`` (RL Zoo's ``lin_`` schedules), across the loop's many
    ``learn()`` calls; the final policy then changes little in its last iterations."""


@dataclass
class RewardConfig:
    ensemble: int = 3
    """Ensemble members; each has its own initialisation and bootstrap of the labels."""
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    use_action: bool = True
    use_next_obs: bool = False
    lr: float = 1e-3
    weight_decay: float = 1e-4
    """Initial L2 coefficient; adapted so validation loss stays near 1.1-1.5x training loss."""
    adapt_weight_decay: bool = True
    batch_size: int = 64
    """Pairs per member per gradient step."""
    epochs: int = 10
    """Passes over the labels at each fit (gradient steps = epochs * labels / batch_size)."""
    min_steps: int = 50
    """At least this many gradient steps per fit (few labels early on)."""
    val_fraction: float = 0.2
    random_answer_prob: float = 0.1
    """Probability of a uniformly random answer in the preference model (Christiano: 10%)."""
    bootstrap: bool = True
    normalize: bool = True
    """Rescale the ensemble-mean reward to zero mean, unit variance over recent rollouts."""
    clip_reward: float = 10.0
    """Clip the normalised reward to [-clip_reward, clip_reward]; 0 disables."""
    device: str = "auto"
    """'auto' (CUDA when present), 'cpu' or 'cuda[:N]'."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """'auto' = bf16 autocast on CUDA and on CPUs that multiply bf16 natively (AVX512-BF16,
    AMX), float32 elsewhere; master weights and the loss stay float32."""
    compile: bool = False
    """torch.compile the ensemble forward."""
    threads: int = 0
    """torch CPU threads for the reward model; 0 = leave torch's default."""
    annotator_reliability: bool = False
    """Weigh each annotator by an estimated reliability: before each fit after the first,
    every annotator's flip rate is estimated against the model (EM with a prior,
    ``rlhf.reward.reliability``) and their labels train as soft targets, so one careless
    person cannot drag the model down."""
    robust: bool = False
    """Defend the fit against wrong answers (RIME-style, Cheng et al. 2024): before each
    fit after the first, a label whose answer the ensemble finds implausible (the KL
    divergence of the ensemble-mean prediction from its answer above a threshold that
    tightens over the fits) is left out of that fit, and one the ensemble is confidently against
    is trained on flipped. The store keeps every label as given; the counts are in
    metrics.csv (``rm_distrusted``, ``rm_flipped``)."""
    robust_trust_prob: float = 0.5
    """A label the ensemble gives its answer at least this probability is always trusted
    (a tie: whose divergence is below that of such a strict answer)."""
    robust_slack: list[float] = field(default_factory=lambda: [3.0, 1.0])
    """A label is distrusted when its divergence exceeds the mean of the labels trusted
    at the previous fit by this many of their stds: [first, last], lenient while the model
    is young, tightening linearly over ``robust_slack_fits``."""
    robust_slack_fits: int = 10
    robust_flip_prob: float = 0.001
    """Train a label flipped when the ensemble gives its answer less than this."""
    pseudo_ratio: int = 0
    """Semi-supervision (SURF): each training step also draws this many random pairs of the
    agent's recent unlabelled clips per labelled pair, and each member trains on its own
    confident answers to them; 0 = off."""
    pseudo_threshold: float = 0.99
    """A member's P(a > b) (or P(b > a)) above which its answer becomes a pseudo-label."""
    pseudo_clips: int = 256
    """Recent clips pseudo-labelled pairs are drawn from (the newest of the pool)."""
    crop_steps: int = 0
    """Temporal-crop augmentation (SURF): each training step scores a pair on windows up to
    this many steps shorter than its clips (same length on both sides, independent
    starts); 0 = whole clips."""
    relabel: Literal["auto", "step", "rollout"] = "auto"
    """When the agent's learned reward is computed: 'step' = every vector step, all envs in
    one call; 'rollout' = the whole rollout in one call when it ends (one transfer each way
    per rollout); 'auto' = 'rollout' when the reward model is on a GPU, else 'step'."""


@dataclass
class TeacherConfig:
    kind: str = "oracle"
    """'oracle' or 'irrational' (simulated, B-Pref: the settings below), 'crowd' (several
    simulated annotators, ``crowd_mistakes``), 'human' (a person in the viewer), or
    'module:attr' naming your own (``rlhf.teachers.TeacherFactory``)."""
    crowd_mistakes: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0, 0.4])
    """``kind: crowd``: one simulated annotator per entry (``sim-0``, ``sim-1``, ...), each
    flipping this fraction of their answers; each query goes to one of them at random.
    The other settings (beta, thresholds) are shared."""
    beta: float = math.inf
    """Boltzmann rationality: P(prefer a) = sigmoid(beta * (R_a - R_b)); inf = deterministic."""
    gamma: float = 1.0
    """Myopic discount: step t of a clip of length T weighs gamma ** (T - 1 - t)."""
    mistake: float = 0.0
    """Probability of flipping the answer."""
    skip_threshold: float | None = None
    """Skip a pair when neither clip's return exceeds this (None: never skip)."""
    equal_threshold: float = 0.0
    """Answer 'equal' when the returns differ by less than this."""
    relative_thresholds: bool = False
    """B-Pref's scaling: ``skip_threshold`` and ``equal_threshold`` are fractions of the
    mean clip return of the batch being asked (so they follow the agent as its returns
    grow), not absolute returns. B-Pref's 'equal' teacher: equal_threshold 0.1."""
    score: str | None = None
    """Scoring function ``module:function`` mapping a clip to per-step scores (T,);
    None = the env's own reward."""
    instructions: str = "Which clip shows the better behaviour?"
    """Task instructions shown to a person."""
    asynchronous: bool = True
    """Human teacher only: the agent keeps training on the current reward model while labels
    arrive (Christiano et al.); false = wait for every query of a batch before going on."""
    min_new_labels: int = 10
    """Human teacher, asynchronous: refit the reward model once this many new (non-skip)
    labels have landed; also the labels the agent waits for before it first trains."""


@dataclass
class QueryConfig:
    strategy: str = "disagreement"
    """random, disagreement, entropy, kcenter, disagreement-kcenter, entropy-kcenter (a
    diverse batch), or your own as ``module:attr`` (``rlhf.queries``)."""
    candidates: int = 10
    """Candidate pairs considered per query selected (pool = candidates * n)."""
    pool_size: int = 2000
    """Most recent clips kept in memory to draw candidate pairs from."""
    recent_clips: int = 0
    """Policy-aligned queries (QPA): candidates only from this many newest clips of the
    pool, the current policy's behaviour; 0 = the whole pool."""
    overlap: int = 1
    """How many different annotators answer each chosen pair (a team: their agreement, and
    what ``reward.annotator_reliability`` learns from). Every answer counts against
    ``loop.total_labels``; with fewer people than this, the extra copies stay pending (the
    trainer never waits for them). A simulated crowd needs this many members."""
    repeat_fraction: float = 0.0
    """Share of each batch that asks a person again about a pair they answered earlier
    (shown after the rest of their queue, never back to back): their self-consistency in
    ``rlhf annotators``. Counts against ``loop.total_labels``."""


@dataclass
class LoopConfig:
    total_timesteps: int = 50_000
    total_labels: int = 200
    initial_label_fraction: float = 0.25
    """Share of the label budget asked up front about early (untrained-policy) behaviour."""
    initial_timesteps: int = 2_000
    """Env steps of the untrained policy collected for the initial queries."""
    clip_length: int = 25
    iterations: int = 10
    """Agent-train / query / fit rounds after the initial batch."""
    schedule_decay: float = 1.0
    """Hyperbolic label schedule: iteration i gets labels proportional to 1 / (1 + decay * i)."""


@dataclass
class ViewerConfig:
    """The labeling window (``rlhf label RUN_DIR``)."""

    width: int = 1280
    height: int = 720
    fps: float | None = None
    """Playback frames per second at 1x; None = the env's ``render_fps``."""
    speed: float = 1.0
    """Initial playback speed (+ and - change it)."""
    loop_pause_frames: int = 10
    """Frames the clips hold (highlighted) at the loop point before replaying."""
    require_full_view: bool = False
    """Ignore answers until both clips have played through once."""
    prefetch: int = 1
    """Pairs prepared (rendered) in the background ahead of the one on screen."""
    claim_seconds: float = 60.0
    """A viewer's claim on a query lasts this long without renewal (it renews while open);
    a crashed viewer's queries go back to the others after this."""
    poll_seconds: float = 1.0
    """How often to look for new queries while none is waiting."""


@dataclass
class EvalConfig:
    episodes: int = 10
    every: int = 1
    """Evaluate the policy on the true reward every this many iterations (0 = only at the end)."""
    deterministic: bool = True


@dataclass
class StoreConfig:
    """Where the run's clips, queries and labels live."""

    url: str | None = None
    """None: an SQLite file in the run directory. ``postgresql://USER@HOST:PORT/DATABASE``:
    a PostgreSQL server that people label from on other machines (``rlhf label URL --run
    NAME``). No password here (config.yaml is saved with the run): PGPASSWORD or
    ~/.pgpass."""
    run: str | None = None
    """The run's name on the server (default: the run directory's name)."""
    retry_seconds: float = 300.0
    """How long the trainer keeps trying while the server cannot be reached (a restart, a
    network drop) before it saves a checkpoint and stops; 0: stop at once."""


@dataclass
class ParamConfig:
    """One parameter a tuning run searches over (``tune.params``)."""

    name: str
    low: float
    high: float
    log: bool = False
    """Search on a log scale (``low`` > 0): for gains and rates that matter by ratio."""
    integer: bool = False
    """Round to whole numbers (``low`` and ``high`` are then whole numbers too)."""


@dataclass
class TuneConfig:
    """Preferential Bayesian optimisation (``rlhf tune``): a handful of parameters tuned
    from pairwise choices, instead of an RL agent."""

    params: list[ParamConfig] = field(default_factory=list)
    behaviour: str = ""
    """``module:attr`` of a callable ``behaviour(params: dict[str, float]) -> policy``,
    where ``policy(obs) -> action`` (one fresh policy per episode, so it may keep state)."""
    comparisons: int = 30
    """Comparisons to ask (skips count: a person spent the time)."""
    strategy: str = "eubo"
    """How the next pair is chosen: 'eubo' (the incumbent against the candidate of highest
    expected utility of the best option), 'incumbent-random' (the incumbent against a
    random candidate), 'random' (two random candidates), or ``module:attr``
    (``rlhf.tune.pairs.PairStrategy``)."""
    candidates: int = 1024
    """Points scored by the acquisition per pair (a Sobol set plus points near the
    incumbent)."""
    fit_every: int = 5
    """Refit the GP's hyperparameters every this many comparisons; between refits only the
    posterior is updated with the new comparison (milliseconds, not a second)."""
    episode_steps: int | None = None
    """Steps per episode of a behaviour; None = the env's own episode length."""
    starts: int = 1
    """Episodes each side of a pair plays, one after another, from as many start states
    (both sides from the same ones): a setting judged on several situations rather than
    on one start's luck."""
    same_starts: bool = True
    """Every pair from the same ``starts`` start states (answers stay comparable across
    pairs: a setting that won on these scenes once wins on them again), or False: new
    start states for every pair (more situations seen; the GP has to average out how
    much the verdict depends on the start)."""


@dataclass
class Config:
    name: str = "run"
    seed: int = 0
    run_dir: str | None = None
    """Default: runs/<name>-<seed>-<timestamp>."""
    env: EnvConfig = field(default_factory=EnvConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    query: QueryConfig = field(default_factory=QueryConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    viewer: ViewerConfig = field(default_factory=ViewerConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    tune: TuneConfig | None = None
    """Set in a tuning config (``rlhf tune``); an RL run (``rlhf train``) has none."""
    components: dict[str, str] = field(default_factory=dict)
    """Set by ``rlhf.loop.run``, not by hand: the teacher, query strategy or scoring function
    a script passed by argument (role -> import path), so that a resume without the same
    ones is refused instead of silently using the config's."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- loading -----------------------------------------------------------------------------


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Build a Config from defaults, an optional YAML file, then ``key.path=value`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        text = _read_config_text(path)
        try:
            loaded = _load_yaml(text, str(path))
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {_one_line(str(e))}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of config keys")
        data = loaded
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r}: expected key.path=value, e.g. reward.ensemble=5")
        _set_dotted(data, key.strip(), _parse_value(raw, key.strip()))
    cfg = from_dict(Config, data)
    validate(cfg)
    return cfg


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(parts[: i + 1])}: is a value, not a section")
        node = child
    node[parts[-1]] = value


def config_yaml(cfg: Config) -> str:
    """The resolved config as YAML text (what config.yaml holds)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def save_config(cfg: Config, path: Path) -> None:
    """Write the resolved config as YAML, atomically."""
    from rlhf.io import atomic_write_text

    atomic_write_text(path, config_yaml(cfg))
