"""Fitting the reward model to preferences (Bradley-Terry), the whole ensemble at once.

The preference model (Christiano et al. 2017) for a pair (a, b) and member m:

    P_m(a > b) = eps / 2 + (1 - eps) * sigmoid(R_m(a) - R_m(b)),   R_m(c) = sum_t r_m(o_t, a_t)

trained with cross-entropy against the label's target mu (1: a better, 0: b better,
0.5: equal; skips are not trained on). Each member draws its minibatches from its own
bootstrap resample of the training labels. A held-out validation split steers the L2
coefficient so that validation loss stays near 1.1-1.5x the training loss.

Data lives on the model's device: per-clip features (C, T, D) and the labelled pairs grow
in place as labels arrive (capacity doubles), so nothing is re-uploaded per epoch and
minibatches are gathered on the device.
"""

from __future__ import annotations

import functools
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rlhf.clips import Clip
from rlhf.config import ConfigError, RewardConfig
from rlhf.faults import failpoint
from rlhf.reward.model import RewardModel
from rlhf.reward.network import EnsembleMLP

CPU_ACTIVATION_BUDGET = 16 * 2**20
"""Bytes of one hidden layer's activations (members x rows x width, in the compute dtype)
the CPU trainer processes at once. Larger ensembles are fitted in member groups (each
group's forward and backward, then one Adam step), which keeps a 10-member 256x256 step
out of main memory; see BENCHMARKS.md."""


@dataclass(frozen=True)
class FitStats:
    steps: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    """Share of held-out strict preferences the ensemble mean ranks the same way (NaN: none)."""
    train_accuracy: float
    weight_decay: float
    seconds: float
    n_train: int
    n_val: int


def pick_device(name: str) -> torch.device:
    """``reward.device`` as a torch device; a GPU this machine lacks is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"reward.device: {name!r} is not a device torch knows ({e}); use "
                          "'auto', 'cpu' or 'cuda[:N]'") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"reward.device: {name!r}, but this machine has no CUDA GPU "
                              f"that torch {torch.__version__} can use; use reward.device=cpu "
                              "(or auto)")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"reward.device: {name!r}, but this machine has {count} CUDA "
                              f"GPU(s) (cuda:0..cuda:{count - 1})")
    return device


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when the CPU multiplies bf16 in hardware (AVX512-BF16 or AMX): there bf16
    matmuls run at about twice the fp32 rate; elsewhere they are emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def use_bf16(precision: str, device: torch.device) -> bool:
    """'auto': bf16 autocast on CUDA and on CPUs with native bf16; fp32 elsewhere."""
    if precision == "auto":
        return device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())
    return precision == "bf16"


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
        spec = self.model.spec
        dev = self.device
        obs = torch.as_tensor(np.stack([c.obs for c in clips]), device=dev)
        act = torch.as_tensor(np.stack([c.actions for c in clips]), device=dev)
        nxt = (torch.as_tensor(np.stack([c.next_obs for c in clips]), device=dev)
               if spec.use_next_obs else None)
        return spec.features(obs, act, nxt)

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


class RewardTrainer:
    """Fits a RewardModel's whole ensemble to the labels, batched over members."""

    def __init__(self, model: RewardModel, cfg: RewardConfig, clip_length: int, seed: int = 0):
        self.cfg = cfg
        self.device = pick_device(cfg.device)
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        self.model = model.to(self.device)
        self.clip_length = clip_length
        self.seed = seed
        self.gen = torch.Generator(device=self.device).manual_seed(seed)
        self.weight_decay = cfg.weight_decay
        self.optimizer = torch.optim.Adam(self.model.net.parameters(), lr=cfg.lr)
        self.data = PreferenceData(self.model, clip_length, self.device)
        self.bf16 = use_bf16(cfg.precision, self.device)
        self.autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16)
                         if self.bf16 else nullcontext())
        self.net = torch.compile(self.model.net) if cfg.compile else self.model.net
        self.activation_budget = CPU_ACTIVATION_BUDGET
        self.fits = 0

    # -- data ----------------------------------------------------------------------------

    def sync(self, pair_ids: np.ndarray, mu: np.ndarray, clips: dict[int, Clip]) -> None:
        """Bring the device data up to date with the store's labels (pairs (N, 2), mu (N,)).

        Labels only arrive at the end, except when one is retracted or changed: then the
        data is rebuilt (rare; a person pressing undo).
        """
        n = len(self.data)
        if (n > len(mu) or self.data.pair_ids != [tuple(map(int, p)) for p in pair_ids[:n]]
                or self.data.mu_list != [float(m) for m in mu[:n]]):
            self.data = PreferenceData(self.model, self.clip_length, self.device)
            n = 0
        if len(mu) > n:
            if not bool(self.model.fitted):
                stats_clips = list(clips.values())
                if self.model.spec.obs_is_image:  # only the action inputs are standardised
                    stats_clips = stats_clips[: self._image_chunk()]
                feats = self.data.clip_features(stats_clips)
                self.model.set_feature_stats(feats)
            self.data.add(pair_ids[n:], mu[n:], clips, self.seed, self.cfg.val_fraction)

    # -- the loss ------------------------------------------------------------------------

    def _returns(self, rows: torch.Tensor, members: slice = slice(None)) -> torch.Tensor:
        """rows (M, B, 2) clip rows of ``members`` -> their returns (M, B, 2) in float32."""
        m, b, _ = rows.shape
        x = self.data.features.view()[rows]  # (M, B, 2, T, D)
        x = x.reshape(m, b * 2 * self.clip_length, -1)
        with self.autocast:
            r = self.net(x) if members == slice(None) else self.net(x, members)  # (M, B*2*T)
        return r.float().reshape(m, b, 2, self.clip_length).sum(-1)

    def member_groups(self, rows_per_member: int) -> list[slice]:
        """Slices of the ensemble to fit one after another in a step: all members at once,
        except for an MLP on the CPU whose activations would exceed the cache budget."""
        members, net = self.model.members, self.model.net
        if self.device.type != "cpu" or not isinstance(net, EnsembleMLP) or not net.hidden:
            return [slice(None)]
        itemsize = 2 if self.bf16 else 4
        size = max(1, self.activation_budget // (rows_per_member * max(net.hidden) * itemsize))
        if size >= members:
            return [slice(None)]
        return [slice(s, min(s + size, members)) for s in range(0, members, size)]

    def _loss(self, returns: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        """returns (M, B, 2), mu (M, B) -> per-member mean cross-entropy (M,)."""
        eps = self.cfg.random_answer_prob
        d = returns[..., 0] - returns[..., 1]
        if eps > 0:
            log_eps = math.log(eps / 2)
            log_p = torch.logaddexp(torch.full_like(d, log_eps),
                                    math.log(1 - eps) + torch.nn.functional.logsigmoid(d))
            log_q = torch.logaddexp(torch.full_like(d, log_eps),
                                    math.log(1 - eps) + torch.nn.functional.logsigmoid(-d))
        else:
            log_p = torch.nn.functional.logsigmoid(d)
            log_q = torch.nn.functional.logsigmoid(-d)
        return -(mu * log_p + (1 - mu) * log_q).mean(-1)

    # -- fitting -------------------------------------------------------------------------

    def fit(self, steps: int | None = None) -> FitStats:
        """Gradient steps on all labels so far; adapts the L2 coefficient afterwards."""
        t0 = time.perf_counter()
        cfg, members = self.cfg, self.model.members
        is_val = self.data.is_val.view()
        train_idx = torch.nonzero(~is_val).squeeze(1)
        val_idx = torch.nonzero(is_val).squeeze(1)
        if len(train_idx) == 0:  # too few labels to hold any out
            train_idx, val_idx = torch.arange(len(self.data), device=self.device), val_idx[:0]
        n_train = len(train_idx)
        if n_train == 0:
            raise ValueError("no labels to fit the reward model on")
        if steps is None:
            steps = max(cfg.min_steps, math.ceil(cfg.epochs * n_train / cfg.batch_size))
        if cfg.bootstrap:
            boot = torch.randint(n_train, (members, n_train), generator=self.gen,
                                 device=self.device)
        else:
            boot = torch.arange(n_train, device=self.device).expand(members, n_train)
        self.train_steps(steps // 2, train_idx[boot])
        failpoint("fit")
        self.train_steps(steps - steps // 2, train_idx[boot])
        self.model.eval()
        train_loss, train_acc = self.evaluate(train_idx)
        val_loss, val_acc = self.evaluate(val_idx)
        if cfg.adapt_weight_decay and len(val_idx) >= 10 and train_loss > 0:
            ratio = val_loss / train_loss
            if ratio > 1.5:
                self.weight_decay = min(self.weight_decay * 2, 1.0)
            elif ratio < 1.1:
                self.weight_decay = max(self.weight_decay / 2, 1e-6)
        self.model.fitted.fill_(True)
        self.fits += 1
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return FitStats(steps, train_loss, val_loss, val_acc, train_acc, self.weight_decay,
                        time.perf_counter() - t0, n_train, len(val_idx))

    def train_steps(self, steps: int, member_idx: torch.Tensor) -> None:
        """``steps`` Adam steps of the whole ensemble; member m draws its minibatches from
        pair indices ``member_idx[m]`` (M, n): its bootstrap resample of the training set."""
        members, n = member_idx.shape
        pairs, mu = self.data.pairs.view(), self.data.mu.view()
        batch = min(self.cfg.batch_size, n)
        groups = self.member_groups(batch * 2 * self.clip_length)
        self.model.train()
        for _ in range(steps):
            pos = torch.randint(n, (members, batch), generator=self.gen, device=self.device)
            idx = member_idx.gather(1, pos)  # (M, B) pair indices
            self.optimizer.zero_grad(set_to_none=True)
            for g in groups:  # members are independent: each group's gradient is exact
                loss = self._loss(self._returns(pairs[idx[g]], g), mu[idx[g]])
                loss = loss.sum() + self.weight_decay * self.model.net.l2()[g].sum()
                loss.backward()
            self.optimizer.step()

    @torch.no_grad()
    def evaluate(self, idx: torch.Tensor, chunk: int = 4096) -> tuple[float, float]:
        """Mean member loss and ensemble-mean accuracy on strict preferences over pairs idx."""
        if len(idx) == 0:
            return math.nan, math.nan
        pairs, mu = self.data.pairs.view(), self.data.mu.view()
        losses, correct, strict = [], 0, 0
        for s in range(0, len(idx), chunk):
            i = idx[s:s + chunk]
            rows = pairs[i].unsqueeze(0).expand(self.model.members, -1, -1)
            ret = self._returns(rows)
            losses.append(self._loss(ret, mu[i].expand(self.model.members, -1)).mean()
                          * len(i))
            d = (ret[..., 0] - ret[..., 1]).mean(0)
            m = mu[i]
            decided = m != 0.5
            correct += int(((d > 0) == (m > 0.5))[decided].sum())
            strict += int(decided.sum())
        loss = float(torch.stack(losses).sum() / len(idx))
        return loss, (correct / strict if strict else math.nan)

    @torch.no_grad()
    def clip_member_returns(self, clips: list[Clip], chunk: int = 1024) -> np.ndarray:
        """(M, K) predicted return of each clip under each member."""
        if self.model.spec.obs_is_image:
            chunk = min(chunk, self._image_chunk())
        out = []
        for s in range(0, len(clips), chunk):
            f = self.data.clip_features(clips[s:s + chunk])  # (k, T, D)
            k, t, d = f.shape
            with self.autocast:
                r = self.model(f.reshape(k * t, d))
            out.append(r.float().reshape(self.model.members, k, t).sum(-1))
        return torch.cat(out, dim=1).cpu().numpy()

    @torch.no_grad()
    def update_output_stats(self, clips: list[Clip]) -> None:
        """Normalise the agent's reward over the steps of recent clips."""
        if self.model.spec.obs_is_image:
            clips = clips[-self._image_chunk():]
        f = self.data.clip_features(clips)
        self.model.set_output_stats(f.reshape(-1, f.shape[-1]))

    def _image_chunk(self) -> int:
        return image_clip_chunk(self.clip_length, self.model.spec.in_dim)
