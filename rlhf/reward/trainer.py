"""Fitting the reward model to preferences (Bradley-Terry), the whole ensemble at once.

The preference model (Christiano et al. 2017) for a pair (a, b) and member m:

    P_m(a > b) = eps / 2 + (1 - eps) * sigmoid(R_m(a) - R_m(b)),   R_m(c) = sum_t r_m(o_t, a_t)

trained with cross-entropy against the label's target mu (1: a better, 0: b better,
0.5: equal; skips are not trained on). Each member draws its minibatches from its own
bootstrap resample of the training labels. A held-out validation split steers the L2
coefficient so that validation loss stays near 1.1-1.5x the training loss.

With ``reward.robust`` (RIME, Cheng et al. 2024), each fit after the first starts by
scoring every label by the KL divergence of the ensemble-mean preference (sigmoid of the
mean return difference, without the random-answer floor, which would cap it at
-ln(eps/2)) from its answer: a strict answer's -log probability, a tie's cross-entropy
against 1/2 less ln 2 (a tie is distrusted only where the model is about 93% sure of
either clip). Labels above ``-ln(trust_prob) + slack * std`` are left out of this fit
(train and validation alike, so the L2 steering compares like with like), those above
``-ln(flip_prob)`` are trained on flipped. The slack starts lenient and tightens
linearly; the std is that of the labels trusted at the previous fit. Labels that arrived
since the last fit are trained on as given: a label is judged only once the model has
been fitted on it. RIME derives its base
threshold from a running maximum of the trusted labels' divergence; here it is a
probability a user can read (``robust_trust_prob``).

The labelled data lives on the model's device (``rlhf.reward.data``); the device and
precision are chosen in ``rlhf.reward.device``; inference on whole clips is
``rlhf.reward.inference``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from rlhf.clips import Clip
from rlhf.config import RewardConfig
from rlhf.errors import ConfigError
from rlhf.faults import failpoint
from rlhf.reward.augment import crop_mask
from rlhf.reward.data import PreferenceData, image_clip_chunk
from rlhf.reward.device import pick_device, use_bf16
from rlhf.reward.inference import clip_member_returns, update_output_stats
from rlhf.reward.model import RewardModel
from rlhf.reward.network import EnsembleMLP
from rlhf.reward.reliability import flip_rates

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
    distrusted: int = 0
    """Labels left out of this fit (``reward.robust``); the store still has them."""
    flipped: int = 0
    """Labels trained on with the opposite answer in this fit (``reward.robust``)."""
    val_ece: float = math.nan
    """Expected calibration error on held-out strict labels: the ensemble's P(a > b) in
    ten bins against how often a was chosen, weighted by the bins' sizes (NaN: none)."""


class RewardTrainer:
    """Fits a RewardModel's whole ensemble to the labels, batched over members."""

    def __init__(self, model: RewardModel, cfg: RewardConfig, clip_length: int, seed: int = 0):
        self.cfg = cfg
        if cfg.pseudo_ratio and model.spec.obs_is_image:
            # Float features of hundreds of image clips would not fit beside the labelled
            # ones (see rlhf.reward.data).
            raise ConfigError("reward.pseudo_ratio: pseudo-labels need vector observations; "
                              "this env's are images: set reward.pseudo_ratio=0")
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
        self.unlabelled: torch.Tensor | None = None
        """(U, T, D) standardised features of the clips pseudo-labels are drawn from."""
        self.trusted_kl: tuple[float, float] | None = None
        """Mean and std of the divergence of the labels the last screening trusted."""
        self.distrusted = np.zeros(0, dtype=bool)
        """(N,) labels (in ``data`` order) the last fit left out."""
        self.flipped = np.zeros(0, dtype=bool)
        """(N,) labels the last fit trained on flipped."""
        self.label_noise: np.ndarray | None = None
        """(N,) each synced label's annotator's flip rate, softening its target in the next
        fits (``estimate_label_noise``); None: every label as given."""
        self.fitted_labels = 0
        """The first this many labels (in ``data`` order) were in the data of an earlier
        fit; only they are screened (``reward.robust``)."""

    # -- data ----------------------------------------------------------------------------

    def sync(self, pair_ids: np.ndarray, mu: np.ndarray, clips: dict[int, Clip]) -> None:
        """Bring the device data up to date with the store's labels (pairs (N, 2), mu (N,)).

        Labels only arrive at the end, except when one is retracted or changed: then the
        data is rebuilt (rare; a person pressing undo).
        """
        n = len(self.data)
        same = _common_prefix(self.data.pair_ids, self.data.mu_list, pair_ids, mu)
        if same < n:  # a label retracted or changed: rebuild, those before it keep standing
            self.fitted_labels = min(self.fitted_labels, same)
            self.data = PreferenceData(self.model, self.clip_length, self.device)
            n = 0
        if len(mu) > n:
            if not bool(self.model.fitted):
                stats_clips = list(clips.values())
                if self.model.spec.obs_is_image:  # only the action inputs are standardised
                    chunk = image_clip_chunk(self.clip_length, self.model.spec.in_dim)
                    stats_clips = stats_clips[:chunk]
                feats = self.data.clip_features(stats_clips)
                self.model.set_feature_stats(feats)
            self.data.add(pair_ids[n:], mu[n:], clips, self.seed, self.cfg.val_fraction)

    # -- the loss ------------------------------------------------------------------------

    def _returns(self, rows: torch.Tensor, members: slice = slice(None),
                 mask: torch.Tensor | None = None) -> torch.Tensor:
        """rows (M, B, 2) clip rows of ``members`` -> their returns (M, B, 2) in float32,
        summed over the steps ``mask`` (M, B, 2, T) keeps (default: all)."""
        return self._returns_of(self.data.features.view()[rows], members, mask)

    def _returns_of(self, x: torch.Tensor, members: slice = slice(None),
                    mask: torch.Tensor | None = None) -> torch.Tensor:
        """Features (M, B, 2, T, D) of pairs of clips -> their returns (M, B, 2)."""
        m, b = x.shape[:2]
        x = x.reshape(m, b * 2 * self.clip_length, -1)
        with self.autocast:
            r = self.net(x) if members == slice(None) else self.net(x, members)  # (M, B*2*T)
        r = r.float().reshape(m, b, 2, self.clip_length)
        return (r if mask is None else r * mask).sum(-1)

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

    def _loss(self, returns: torch.Tensor, mu: torch.Tensor, reduce: bool = True
              ) -> torch.Tensor:
        """returns (M, B, 2), mu (M, B) -> per-member mean cross-entropy (M,), or (M, B)
        per pair without ``reduce``."""
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
        loss = -(mu * log_p + (1 - mu) * log_q)
        return loss.mean(-1) if reduce else loss

    # -- fitting -------------------------------------------------------------------------

    def estimate_label_noise(self, annotators: Sequence[str | None]) -> dict[str | None, float]:
        """Each annotator's flip rate against the current model (``rlhf.reward.reliability``),
        and the next fits' per-label noise from it; {} (and no noise) before the first fit.
        ``annotators``: (N,) who gave each synced label, in the synced order."""
        if not bool(self.model.fitted) or len(annotators) != len(self.data):
            self.label_noise = None
            return {}
        mu = self.data.mu.view().cpu().numpy()
        # exp(-KL) is the answer's probability for strict labels, the only ones read.
        prob = np.exp(-self.label_divergence().cpu().numpy())
        rates = flip_rates(prob, annotators, mu != 0.5)
        self.label_noise = np.array([rates[a] for a in annotators], dtype=np.float32)
        return rates

    def fit(self, steps: int | None = None) -> FitStats:
        """Gradient steps on all labels so far; adapts the L2 coefficient afterwards."""
        t0 = time.perf_counter()
        cfg, members = self.cfg, self.model.members
        is_val = self.data.is_val.view()
        train_idx = torch.nonzero(~is_val).squeeze(1)
        val_idx = torch.nonzero(is_val).squeeze(1)
        if len(train_idx) == 0:  # too few labels to hold any out
            train_idx, val_idx = torch.arange(len(self.data), device=self.device), val_idx[:0]
        mu = self.data.mu.view()
        n_all = len(self.data)
        self.distrusted = np.zeros(n_all, dtype=bool)
        self.flipped = np.zeros(n_all, dtype=bool)
        if cfg.robust and bool(self.model.fitted):
            keep, flip = self.screen_labels()
            if not bool(keep[train_idx].any()):  # a screen that leaves nothing is no screen
                keep, flip = torch.ones_like(keep), torch.zeros_like(flip)
            mu = torch.where(flip, 1 - mu, mu)
            train_idx, val_idx = train_idx[keep[train_idx]], val_idx[keep[val_idx]]
            self.distrusted, self.flipped = (~keep).cpu().numpy(), flip.cpu().numpy()
        if self.label_noise is not None and len(self.label_noise) == n_all:
            noise = torch.as_tensor(self.label_noise, dtype=mu.dtype, device=mu.device)
            mu = (1 - noise) * mu + noise * (1 - mu)  # reliability.soft_targets, on device
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
        self.train_steps(steps // 2, train_idx[boot], mu)
        failpoint("fit")
        self.train_steps(steps - steps // 2, train_idx[boot], mu)
        self.model.eval()
        train_loss, train_acc = self.evaluate(train_idx, mu=mu)
        val_loss, val_acc = self.evaluate(val_idx, mu=mu)
        if cfg.adapt_weight_decay and len(val_idx) >= 10 and train_loss > 0:
            ratio = val_loss / train_loss
            if ratio > 1.5:
                self.weight_decay = min(self.weight_decay * 2, 1.0)
            elif ratio < 1.1:
                self.weight_decay = max(self.weight_decay / 2, 1e-6)
        self.model.fitted.fill_(True)
        self.fits += 1
        self.fitted_labels = n_all
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return FitStats(steps, train_loss, val_loss, val_acc, train_acc, self.weight_decay,
                        time.perf_counter() - t0, n_train, len(val_idx),
                        distrusted=int(self.distrusted.sum()),
                        flipped=int(self.flipped.sum()), val_ece=self.calibration(val_idx)[0])

    # -- pseudo-labels (SURF) -------------------------------------------------------------

    def set_unlabelled(self, clips: list[Clip]) -> None:
        """Clips (the agent's recent ones) whose random pairs get pseudo-labels in training
        steps, with ``reward.pseudo_ratio``; their features replace the previous set's."""
        if not self.cfg.pseudo_ratio or len(clips) < 2:
            self.unlabelled = None
            return
        clips = [c for c in clips if len(c) == self.clip_length][-self.cfg.pseudo_clips:]
        feats = self.data.clip_features(clips) if len(clips) >= 2 else None
        self.unlabelled = (None if feats is None
                           else (feats - self.model.feat_mean) / self.model.feat_std)

    def _unlabelled_pairs(self, members: int, batch: int) -> torch.Tensor | None:
        """(M, B * pseudo_ratio, 2) random pairs of distinct unlabelled clips, or None."""
        if self.unlabelled is None or not self.cfg.pseudo_ratio:
            return None
        u, k = len(self.unlabelled), batch * self.cfg.pseudo_ratio
        a = torch.randint(u, (members, k), generator=self.gen, device=self.device)
        b = (a + torch.randint(1, u, (members, k), generator=self.gen, device=self.device)) % u
        return torch.stack([a, b], dim=-1)

    def _pseudo_loss(self, returns: torch.Tensor) -> torch.Tensor:
        """returns (M, K, 2) of unlabelled pairs -> (M,): each member's cross-entropy against
        its own confident answers (P above ``pseudo_threshold`` either way); pairs it is
        unsure of add nothing. The targets carry no gradient."""
        d = returns[..., 0] - returns[..., 1]
        p = torch.sigmoid(d.detach())
        confident = (torch.maximum(p, 1 - p) > self.cfg.pseudo_threshold).float()
        loss = self._loss(returns, (p > 0.5).float(), reduce=False)
        return (loss * confident).mean(-1)

    @torch.no_grad()
    def calibration(self, idx: torch.Tensor, bins: int = 10
                    ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
        """Reliability of the ensemble's P(a > b) on the strict labels among ``idx``:
        (ECE, per-bin mean predicted probability (bins,), per-bin share of 'a' answers
        (bins,), per-bin counts (bins,)); NaN entries for empty bins and an ECE of NaN
        without strict labels."""
        pairs, mu = self.data.pairs.view(), self.data.mu.view()
        strict = idx[mu[idx] != 0.5] if len(idx) else idx
        empty = np.full(bins, np.nan)
        if len(strict) == 0:
            return math.nan, empty, empty.copy(), np.zeros(bins, dtype=np.int64)
        rows = pairs[strict].unsqueeze(0).expand(self.model.members, -1, -1)
        d = self._returns(rows)
        d = d[..., 0] - d[..., 1]
        eps = self.cfg.random_answer_prob
        p = (eps / 2 + (1 - eps) * torch.sigmoid(d)).mean(0).cpu().numpy()
        y = mu[strict].cpu().numpy()
        which = np.minimum((p * bins).astype(np.int64), bins - 1)
        counts = np.bincount(which, minlength=bins)
        conf = np.bincount(which, weights=p, minlength=bins)
        hits = np.bincount(which, weights=y, minlength=bins)
        with np.errstate(invalid="ignore", divide="ignore"):
            conf, hits = conf / counts, hits / counts
        ece = float(np.nansum(counts * np.abs(conf - hits)) / counts.sum())
        return ece, conf, hits, counts

    @torch.no_grad()
    def label_divergence(self, chunk: int = 4096) -> torch.Tensor:
        """(N,) KL divergence of the ensemble-mean preference sigmoid(mean_m R_m(a) -
        R_m(b)) from each label's answer (RIME's per-label divergence). A strict answer's
        is its -log probability under the model; a tie's is its cross-entropy against 1/2
        less the answer's own entropy ln 2, so 0 where the model says 1/2. (The plain
        cross-entropy put every tie at ln 2 or more: with a confident model, above almost
        every right strict answer, and the screen left out nearly all ties of a noisy
        HalfCheetah run, though this teacher's ties are never wrong.)"""
        pairs, mu = self.data.pairs.view(), self.data.mu.view()
        out = []
        self.model.eval()
        for s in range(0, len(self.data), chunk):
            rows = pairs[s:s + chunk].unsqueeze(0).expand(self.model.members, -1, -1)
            ret = self._returns(rows)
            d = (ret[..., 0] - ret[..., 1]).mean(0)
            m = mu[s:s + chunk]
            out.append(-(m * torch.nn.functional.logsigmoid(d)
                         + (1 - m) * torch.nn.functional.logsigmoid(-d)) - _entropy(m))
        return torch.cat(out) if out else torch.zeros(0, device=self.device)

    def screen_labels(self) -> tuple[torch.Tensor, torch.Tensor]:
        """RIME's screening of the labels before a fit: (keep (N,) bool, flip (N,) bool);
        flipped labels are kept (with the other answer)."""
        cfg = self.cfg
        kl = self.label_divergence()
        first, last = cfg.robust_slack
        slack = max(last, first - (first - last) * self.fits / cfg.robust_slack_fits)
        # A label the model has never been fitted on is not judged by it: the newest
        # answers are about the newest policy's clips, where a model the policy exploits is
        # confidently wrong, and screening them could lock its error in (the suspected
        # cause of a noisy HalfCheetah run whose reward correlation fell to -0.2). From the
        # next fit on, a label is distrusted only if it still disagrees once seen.
        new = torch.arange(len(kl), device=kl.device) >= self.fitted_labels
        if self.trusted_kl is None:  # the first screening: every fitted label's divergence
            seen = kl[~new]
            self.trusted_kl = (float(seen.mean()), float(seen.std())) if len(seen) > 1 \
                else (0, 0)
        mean, std = self.trusted_kl
        trusted = (kl < max(-math.log(cfg.robust_trust_prob), mean + slack * std)) & ~new
        flip = (kl > -math.log(cfg.robust_flip_prob)) & ~new
        if int(trusted.sum()) > 1:
            self.trusted_kl = (float(kl[trusted].mean()), float(kl[trusted].std()))
        return trusted | flip | new, flip

    def train_steps(self, steps: int, member_idx: torch.Tensor,
                    mu: torch.Tensor | None = None) -> None:
        """``steps`` Adam steps of the whole ensemble; member m draws its minibatches from
        pair indices ``member_idx[m]`` (M, n): its bootstrap resample of the training set.
        ``mu`` (N,): the targets (default: the labels as given)."""
        members, n = member_idx.shape
        pairs = self.data.pairs.view()
        mu = self.data.mu.view() if mu is None else mu
        batch = min(self.cfg.batch_size, n)
        # The pseudo-labelled pairs go through the same forward and backward: the cache
        # budget counts their rows too (counted without them, SURF's ratio 4 ran 1.5x
        # slower on a 3x256 ensemble on the CPU).
        pseudo = self.cfg.pseudo_ratio if self.unlabelled is not None else 0
        groups = self.member_groups(batch * 2 * self.clip_length * (1 + pseudo))
        self.model.train()
        for _ in range(steps):
            pos = torch.randint(n, (members, batch), generator=self.gen, device=self.device)
            idx = member_idx.gather(1, pos)  # (M, B) pair indices
            mask = (crop_mask((members, batch), self.clip_length, self.cfg.crop_steps,
                              self.gen, self.device) if self.cfg.crop_steps else None)
            unlabelled = self._unlabelled_pairs(members, batch)
            self.optimizer.zero_grad(set_to_none=True)
            for g in groups:  # members are independent: each group's gradient is exact
                loss = self._loss(self._returns(pairs[idx[g]], g,
                                                None if mask is None else mask[g]), mu[idx[g]])
                if unlabelled is not None:
                    loss = loss + self._pseudo_loss(self._returns_of(
                        self.unlabelled[unlabelled[g]], g))
                loss = loss.sum() + self.weight_decay * self.model.net.l2()[g].sum()
                loss.backward()
            self.optimizer.step()

    @torch.no_grad()
    def evaluate(self, idx: torch.Tensor, chunk: int = 4096,
                 mu: torch.Tensor | None = None) -> tuple[float, float]:
        """Mean member loss and ensemble-mean accuracy on strict preferences over pairs idx
        (targets ``mu`` (N,), default the labels as given)."""
        if len(idx) == 0:
            return math.nan, math.nan
        pairs = self.data.pairs.view()
        mu = self.data.mu.view() if mu is None else mu
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

    def clip_member_returns(self, clips: list[Clip], chunk: int = 1024) -> np.ndarray:
        """(M, K) predicted return of each clip under each member (``rlhf.reward.inference``)."""
        return clip_member_returns(self.model, clips, self.autocast, chunk)

    def update_output_stats(self, clips: list[Clip]) -> None:
        """Normalise the agent's reward over the steps of recent clips."""
        update_output_stats(self.model, clips)


def _common_prefix(pairs_a: list[tuple[int, int]], mu_a: list[float], pair_ids: np.ndarray,
                   mu: np.ndarray) -> int:
    """How many leading labels two label lists share (same pair, same answer)."""
    k, n = 0, min(len(pairs_a), len(mu))
    while k < n and pairs_a[k] == tuple(map(int, pair_ids[k])) and mu_a[k] == float(mu[k]):
        k += 1
    return k


def _entropy(mu: torch.Tensor) -> torch.Tensor:
    """(N,) the entropy of answers ``mu`` (N,) as Bernoulli targets: 0 for a strict answer,
    ln 2 for a tie."""
    return -(torch.special.xlogy(mu, mu) + torch.special.xlogy(1 - mu, 1 - mu))
