"""``rlhf plot RUN --calibration``: the reward model's reliability on held-out labels."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from rlhf.calibration import held_out_reliability
from rlhf.cli import main
from rlhf.reward.data import split_hash
from rlhf.reward.inference import clip_member_returns
from rlhf.reward.model import RewardModel
from rlhf.rundir import RunDir
from rlhf.store import Store


def _cli(capsys: pytest.CaptureFixture[str], *args) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_the_diagram_is_the_newest_models_predictions_on_the_held_out_labels(finished_run):
    run = RunDir.open(finished_run)
    cfg = run.load_config()
    d = held_out_reliability(finished_run)
    with Store(finished_run / "store.sqlite", readonly=True) as store:
        pairs, mu = store.preferences()
        clips = {c.id: c for c in store.get_clips(sorted({int(i) for i in pairs.ravel()}))}
    held = (split_hash(pairs, cfg.seed) < cfg.reward.val_fraction) & (mu != 0.5)
    assert d.labels == int(held.sum()) > 0 and d.checkpoint == run.latest_checkpoint().name
    # The same probabilities by hand: the checkpoint's ensemble on each held-out pair.
    model = RewardModel.load(run.latest_checkpoint())
    eps = cfg.reward.random_answer_prob
    p = []
    for a, b in pairs[held]:
        r = clip_member_returns(model, [clips[int(a)], clips[int(b)]])  # (M, 2)
        p.append(float((eps / 2 + (1 - eps) * torch.sigmoid(torch.as_tensor(r[:, 0] - r[:, 1])))
                       .mean()))
    bins = np.minimum((np.array(p) * 10).astype(int), 9)
    np.testing.assert_array_equal(d.counts, np.bincount(bins, minlength=10))
    for k in np.flatnonzero(d.counts):
        np.testing.assert_allclose(d.predicted[k], np.mean(np.array(p)[bins == k]), atol=2e-3)
        assert d.observed[k] == pytest.approx(mu[held][bins == k].mean())
    gap = np.abs(d.predicted - d.observed)[d.counts > 0]
    assert d.ece == pytest.approx(float((d.counts[d.counts > 0] * gap).sum() / d.labels),
                                  abs=1e-6)


def test_cli_writes_the_png_never_over_a_file_and_needs_a_checkpoint(finished_run, tmp_path,
                                                                      capsys):
    out = tmp_path / "rel.png"
    rc, stdout, err = _cli(capsys, "plot", finished_run, finished_run, "--name", "a", "b",
                           "--calibration", "--out", out)
    assert rc == 0, err
    assert Image.open(out).size == (500, 500) and stdout.count("ECE") == 2
    rc, _, err = _cli(capsys, "plot", finished_run, "--calibration", "--out", out)
    assert rc == 2 and "--force" in err
    fresh = tmp_path / "fresh"
    shutil.copytree(finished_run, fresh)
    shutil.rmtree(fresh / "checkpoints")
    rc, _, err = _cli(capsys, "plot", fresh, "--calibration", "--out", tmp_path / "x.png")
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "no checkpoint yet" in lines[0]
    assert not (tmp_path / "x.png").exists()


def test_the_screen_audit_splits_every_label_of_a_robust_run(tmp_path, finished_run):
    """scripts/screen_audit.py: ties, wrong and right answers, and how many of each the
    screen of the newest checkpoint leaves out or flips."""
    import re

    import screen_audit

    run_dir = tmp_path / "robust"
    assert main(["train", "configs/smoke.yaml", "reward.robust=true", "teacher.kind=irrational",
                 "teacher.mistake=0.3", "eval.every=0", "--quiet", "--run-dir",
                 str(run_dir)]) == 0
    report = screen_audit.audit(str(run_dir))
    with Store(run_dir / "store.sqlite", readonly=True) as store:
        pairs, mu = store.preferences()
        clips = {c.id: c for c in store.get_clips(sorted({int(i) for i in pairs.ravel()}))}
    ret = np.array([[clips[int(i)].rewards.sum() for i in pair] for pair in pairs])
    wrong = int(((mu != 0.5) & ((mu == 1) != (ret[:, 0] > ret[:, 1]))).sum())
    head = re.search(r"(\d+) labels: ties (\d+), wrong strict answers (\d+), right strict "
                     r"(\d+)", report)
    n, ties, wrong_seen, right = map(int, head.groups())
    assert (n, ties, wrong_seen) == (len(mu), int((mu == 0.5).sum()), wrong)
    assert ties + wrong_seen + right == n
    for what in ("left out", "flipped"):
        total, *parts = map(int, re.search(what + r" (\d+): ties (\d+), wrong (\d+), right "
                                           r"(\d+)", report).groups())
        assert sum(parts) == total <= n
    with pytest.raises(SystemExit, match="never screened"):
        screen_audit.audit(str(finished_run))
