"""Environment workers: the same seed stepped in-process (DummyVecEnv) and one process per
env (SubprocVecEnv) gives the same clips, restorable states and recorded frames."""

from __future__ import annotations

import numpy as np
import pytest

from rlhf.agent import make_env_stack
from rlhf.config import load_config


def _clips(env_id: str, workers: str, *extra: str) -> list:
    cfg = load_config(overrides=[f"env.id={env_id}", "env.n_envs=2", f"env.workers={workers}",
                                 "loop.clip_length=10", "seed=3", *extra])
    envs = make_env_stack(cfg)
    try:
        rng = np.random.default_rng(0)
        envs.agent_env.reset()
        low, high = envs.venv.action_space.low, envs.venv.action_space.high
        for _ in range(80):
            envs.agent_env.step(rng.uniform(low, high, size=(2, *low.shape)).astype(np.float32))
        return list(envs.collector.pool)
    finally:
        envs.close()


@pytest.mark.parametrize("env_id, extra", [
    ("Pendulum-v1", ()),                                   # classic control, restorable
    ("broken_envs:SlideEnv", ()),                          # a user's module:Class env
    ("broken_envs:StatelessEnv", ("teacher.kind=human", "env.frame_fraction=1.0")),  # frames
])
def test_subprocess_workers_give_the_same_clips(env_id, extra):
    here, there = _clips(env_id, "in-process", *extra), _clips(env_id, "subprocess", *extra)
    assert len(here) == len(there) >= 10
    for a, b in zip(here, there, strict=True):
        assert a.env_step == b.env_step
        for name in ("obs", "actions", "rewards", "dones", "states", "frames"):
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None) == (y is None), name
            if x is not None:
                np.testing.assert_array_equal(x, y, err_msg=name)
    if "teacher.kind=human" in extra:
        assert here[0].frames is not None  # the recorded frames came through the pipes
