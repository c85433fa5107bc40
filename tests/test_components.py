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
