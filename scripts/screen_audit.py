"""Whom did ``reward.robust`` distrust? The screen of a finished run's newest checkpoint,
applied to every label of its store, against what the simulated teacher should have said.

    python scripts/screen_audit.py RUN_DIR [RUN_DIR ...]

For each run, the reward model of its newest checkpoint and the trainer's screening state
there (``trusted_kl``, fits, fitted labels, from ``state.json``) screen the run's labels as
the next fit would have. Each label is a tie ('equal'), a wrong strict answer (against the
order of the two clips' true returns: the teacher's mistakes and its Boltzmann noise) or a
right one; the script prints how many of each the screen left out and flipped. A run of a
person (no true reward in the clips) has nothing to audit against.
"""

from __future__ import annotations

import argparse

import numpy as np

from rlhf.calibration import newest_trainer
from rlhf.checkpoint import CheckpointError, load_state, restore_trainer_info
from rlhf.rundir import RunDir, RunDirError


def audit(run_dir: str) -> str:
    run = RunDir.open(run_dir)
    latest, trainer, clips = newest_trainer(run)  # as rlhf plot --calibration judges it
    info = load_state(latest).trainer
    if info.get("trusted_kl") is None:
        raise SystemExit(f"screen_audit: {run_dir}: the run never screened (reward.robust off?)")
    pairs = np.asarray(trainer.data.pair_ids)  # (n, 2) clip ids
    mu = trainer.data.mu.view().cpu().numpy()
    restore_trainer_info(trainer, info)  # the screen's threshold as the run left it
    keep, flip = (x.cpu().numpy() for x in trainer.screen_labels())
    true_return = {i: float(c.rewards.sum()) for i, c in clips.items()}
    ra, rb = (np.array([true_return[int(p)] for p in pairs[:, k]]) for k in (0, 1))
    tie = mu == 0.5
    wrong = ~tie & ((mu == 1) != (ra > rb))
    right = ~tie & ~wrong
    out = ~keep

    def split(mask: np.ndarray) -> str:
        return (f"{mask.sum()}: ties {(mask & tie).sum()}, wrong {(mask & wrong).sum()}, "
                f"right {(mask & right).sum()}")

    return (f"{run.path} ({latest.name}): {len(mu)} labels: ties {tie.sum()}, wrong strict "
            f"answers {wrong.sum()}, right strict {right.sum()}\n"
            f"  left out {split(out)}\n  flipped {split(flip)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    for run_dir in p.parse_args().run_dirs:
        try:
            print(audit(run_dir), flush=True)
        except (RunDirError, CheckpointError) as e:
            raise SystemExit(f"screen_audit: {e}") from None


if __name__ == "__main__":
    main()
