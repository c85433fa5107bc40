import math

import pytest
import yaml

from rlhf.config import Config, ConfigError, load_config, save_config


def test_defaults_yaml_and_overrides_layer(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("reward:\n  ensemble: 7\n  hidden: [8, 8]\nloop:\n  clip_length: 30\n")
    cfg = load_config(path, ["reward.ensemble=2", "teacher.beta=inf", "env.kwargs.g=9.0"])
    assert cfg.reward.ensemble == 2  # CLI beats YAML
    assert cfg.reward.hidden == [8, 8]  # YAML beats defaults
    assert cfg.loop.clip_length == 30
    assert cfg.loop.total_labels == Config().loop.total_labels  # default kept
    assert math.isinf(cfg.teacher.beta)
    assert cfg.env.kwargs == {"g": 9.0}


@pytest.mark.parametrize("override, message", [
    (["reward.ensembel=3"], "reward.ensembel: unknown key (did you mean 'ensemble'?)"),
    (["reward.ensemble=three"], "reward.ensemble: expected an integer, got 'three'"),
    (["reward.ensemble=0"], "reward.ensemble: must be >= 1 and <= 64"),
    (["loop.total_labels=-5"], "loop.total_labels: must be >= 1 and <= 1_000_000"),
    (["loop.total_timesteps=0"], "loop.total_timesteps: must be >= 1"),
    (["query.strategy=best"], "query.strategy: 'best' is not one of"),
    (["teacher.mistake=1.5"], "teacher.mistake: must be in [0, 1]"),
    (["reward.hidden=64"], "reward.hidden: expected a list"),
    (["agent.normalize_obs=yes please"], "agent.normalize_obs: expected true or false"),
    (["nonsense"], "expected key.path=value"),
    (["reward.ensemble.size=3"], "reward.ensemble: expected an integer, got {'size': 3}"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(overrides=override)
    assert message in str(e.value)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("reward: [1, 2")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(bad)
    bad.write_text("reward:\n  lr: fast\n")
    with pytest.raises(ConfigError, match="reward.lr: expected a number"):
        load_config(bad)


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(overrides=["seed=4", "reward.hidden=[16]", "teacher.beta=2.5"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["seed"] == 4


def test_every_preset_loads():
    from pathlib import Path

    presets = sorted(Path(__file__).parent.parent.joinpath("configs").glob("*.yaml"))
    assert presets
    for preset in presets:
        load_config(preset)


def test_exponent_numbers_without_a_dot_are_numbers(tmp_path):
    # PyYAML (YAML 1.1) reads 3e-4 as a string; a learning rate must be a number.
    cfg = load_config(None, ["agent.kwargs.learning_rate=3e-4"])
    assert cfg.agent.kwargs["learning_rate"] == 3e-4
    path = tmp_path / "c.yaml"
    path.write_text("reward:\n  lr: 1e-3\nagent:\n  kwargs:\n    learning_rate: 2E-5\n")
    cfg = load_config(path)
    assert cfg.reward.lr == 1e-3 and cfg.agent.kwargs["learning_rate"] == 2e-5


def test_overlap_needs_as_many_simulated_annotators():
    import pytest

    from rlhf.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="query.overlap: 2 .*teacher.kind=oracle is one"):
        load_config(overrides=["query.overlap=2"])
    with pytest.raises(ConfigError, match="the crowd has 2"):
        load_config(overrides=["query.overlap=3", "teacher.kind=crowd",
                               "teacher.crowd_mistakes=[0,0.1]"])
    assert load_config(overrides=["query.overlap=3", "teacher.kind=human"]).query.overlap == 3


def test_the_robust_and_label_efficient_options_round_trip(tmp_path):
    overrides = ["reward.robust=true", "reward.robust_trust_prob=0.6",
                 "reward.robust_slack=[2.5,0.5]", "reward.robust_slack_fits=4",
                 "reward.robust_flip_prob=0.01", "reward.pseudo_ratio=3",
                 "reward.pseudo_threshold=0.95", "reward.pseudo_clips=128",
                 "reward.crop_steps=7", "reward.annotator_reliability=true",
                 "query.strategy=disagreement-kcenter", "query.recent_clips=200"]
    cfg = load_config(overrides=overrides)
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert (again.reward.robust_slack, again.reward.pseudo_clips, again.query.recent_clips) == (
        [2.5, 0.5], 128, 200)
