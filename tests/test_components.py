"""Open registries: a query strategy named ``module:attr``; components a script passes to
``run`` by argument are recorded in the run's config, and a resume without them is refused
instead of silently using the config's defaults."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from rlhf.cli import main as cli_main
from rlhf.config import load_config
from rlhf.loop import run

ROOT = Path(__file__).parent.parent
TINY = ["loop.total_timesteps=512", "loop.total_labels=10", "loop.iterations=1",
        "eval.episodes=1"]


class FirstPairs:
    """A user's own query strategy: prefers the candidate pairs listed first."""

    name = "first"

    def scores(self, returns_a: np.ndarray, returns_b: np.ndarray) -> np.ndarray:
        return -np.arange(returns_a.shape[1], dtype=float)


def test_a_users_strategy_by_module_attr_and_an_unknown_one(tmp_path, capsys):
    assert cli_main(["train", str(ROOT / "configs" / "smoke.yaml"), *TINY,
                     "query.strategy=test_components:FirstPairs", "--run-dir",
                     str(tmp_path / "r"), "--quiet"]) == 0
    capsys.readouterr()
    assert cli_main(["train", str(ROOT / "configs" / "smoke.yaml"), "query.strategy=psychic",
                     "--run-dir", str(tmp_path / "x"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "random, disagreement, entropy" in err[0]
    assert not (tmp_path / "x").exists()


def test_a_strategy_passed_by_argument_is_recorded_and_needed_to_resume(tmp_path, capsys):
    run_dir = tmp_path / "scripted"
    cfg = load_config(ROOT / "configs" / "smoke.yaml", [*TINY, f"run_dir={run_dir}"])
    run(cfg, strategy=FirstPairs(), progress=False)
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["components"] == {"strategy": "test_components:FirstPairs"}
    config = (run_dir / "config.yaml").read_bytes()
    assert cli_main(["train", "--resume", str(run_dir), "--quiet"]) == 2
    line = capsys.readouterr().err.strip()
    assert "strategy test_components:FirstPairs passed by a script" in line
    assert (run_dir / "config.yaml").read_bytes() == config
    # From the script, with the same component, it resumes.
    again = load_config(run_dir / "config.yaml", [f"run_dir={run_dir}"])
    assert run(again, strategy=FirstPairs(), resume=True, progress=False).labels == 10
    # A plain run records nothing, and resumes from the CLI as ever.
    plain = tmp_path / "plain"
    run(load_config(ROOT / "configs" / "smoke.yaml", [*TINY, f"run_dir={plain}"]),
        strategy=None, progress=False)
    assert yaml.safe_load((plain / "config.yaml").read_text())["components"] == {}
    assert cli_main(["train", "--resume", str(plain), "--quiet"]) == 0


class ContrarianTeacher:
    """A user's own teacher (``teacher.kind: test_components:ContrarianTeacher``): always
    prefers the clip with the lower score, so the run learns the opposite of the task."""

    synchronous = True

    def __init__(self, cfg, rng, score):
        from rlhf.teachers import SimulatedTeacher

        self.inner = SimulatedTeacher(score=lambda clip: -score(clip), rng=rng,
                                      name="contrarian")
        self.name, self.rng = "contrarian", rng

    def ask(self, store, queries, clips):
        self.inner.ask(store, queries, clips)


def NotATeacher(cfg, rng, score):  # a factory whose product has no ask()
    return object()


def test_a_users_teacher_by_module_attr_labels_the_run_and_a_bad_one_is_one_line(tmp_path,
                                                                                  capsys):
    from rlhf.store import Store

    run_dir = tmp_path / "contrary"
    assert cli_main(["train", str(ROOT / "configs" / "smoke.yaml"), *TINY,
                     "teacher.kind=test_components:ContrarianTeacher", "--run-dir",
                     str(run_dir), "--quiet"]) == 0
    with Store(run_dir / "store.sqlite", readonly=True) as store:
        labels = store.labels()
        assert len(labels) == 10 and {label.teacher for label in labels} == {"contrarian"}
        pairs, mu = store.preferences()
        clips = {c.id: c for c in store.get_clips(sorted({int(i) for i in pairs.ravel()}))}
    # Every label prefers the clip with the lower true return (ties aside).
    for (a, b), m in zip(pairs, mu, strict=True):
        ra, rb = clips[int(a)].rewards.sum(), clips[int(b)].rewards.sum()
        if ra != rb:
            assert (m == 1.0) == (ra < rb)
    capsys.readouterr()
    for kind, words in (("oracel", "oracle, irrational, crowd, human"),
                        ("test_components:FirstPairs", "takes no arguments"),
                        ("test_components:NotATeacher", "not a Teacher"),
                        ("test_components:nothing", "has no attribute 'nothing'")):
        assert cli_main(["train", str(ROOT / "configs" / "smoke.yaml"), f"teacher.kind={kind}",
                         "--run-dir", str(tmp_path / "x"), "--quiet"]) == 2, kind
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0] and "teacher.kind" in err[0], err
        assert not (tmp_path / "x").exists()


def test_a_scripts_teacher_without_an_rng_gets_the_runs_seed(tmp_path):
    """A SimulatedTeacher built without an rng draws from the run's teacher stream, so a
    noisy teacher's labels follow the run's seed (they once came from seed 0 always)."""
    from rlhf.store import Store
    from rlhf.teachers import SimulatedTeacher

    def answers(name: str, teacher: SimulatedTeacher | None, *extra: str) -> list[str]:
        cfg = load_config(ROOT / "configs" / "smoke.yaml",
                          [*TINY, "seed=3", f"run_dir={tmp_path / name}", *extra])
        run(cfg, teacher=teacher, progress=False)
        with Store(tmp_path / name / "store.sqlite", readonly=True) as store:
            return [label.choice for label in store.labels()]

    # The same noisy teacher, built by the script or from the config: the same answers.
    scripted = answers("script", SimulatedTeacher(beta=0.01))
    assert scripted == answers("config", None, "teacher.beta=0.01")
    assert len(set(scripted)) > 1  # noisy enough that a different stream would differ
