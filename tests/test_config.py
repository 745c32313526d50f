"""Typed configs: YAML + dotted overrides; unknown keys and wrong types fail naming the key."""

from pathlib import Path

import pytest

from videor1.config import ConfigError, MediaConfig, SFTConfig, TrainConfig, apply_overrides, load_config

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load(path):
    kind = SFTConfig if "sft" in path.name else TrainConfig
    assert load_config(kind, path).max_steps > 0


def test_a_tiny_config_ships():
    assert any("tiny" in p.name for p in CONFIGS)


def test_overrides_merge_dotted_keys_with_yaml_values():
    data = apply_overrides({"a": {"b": 1}}, ["a.b=2", "a.c=[1, 2]", "d=false", "e.f=text", "g="])
    assert data == {"a": {"b": 2, "c": [1, 2]}, "d": False, "e": {"f": "text"}, "g": None}


@pytest.mark.parametrize(
    "override, message",
    [
        ("algorithm.temporl=false", "algorithm.temporl: Extra inputs are not permitted"),
        ("max_steps=many", "max_steps: Input should be a valid integer"),
        ("algorithm.loss_type=ppo", "loss_type must be one of grpo, dapo, dr_grpo, gspo, cispo"),
        ("no_equals_sign", "is not key=value"),
        ("max_steps.x=1", "max_steps is not a section"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    base = ["data.train_file=a.json", "data.media_root=.", "max_steps=3"]
    with pytest.raises(ConfigError, match=message):
        load_config(TrainConfig, None, [*base, override])


def test_temporal_needs_the_accuracy_reward():
    with pytest.raises(ConfigError, match="needs the accuracy reward"):
        load_config(TrainConfig, None, ["data.train_file=a", "data.media_root=.", "rewards=[{name: format}]"])


def test_media_budgets_are_validated():
    with pytest.raises(ConfigError, match="min_frames"):
        load_config(MediaConfig, None, ["min_frames=8", "max_frames=4"])
