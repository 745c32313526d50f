"""Typed configs: YAML + dotted overrides; unknown keys and wrong types fail naming the key."""

from pathlib import Path

import pytest
import yaml

from videor1.config import (
    ConfigError,
    MediaConfig,
    SFTConfig,
    TrainConfig,
    apply_overrides,
    load_config,
    save_config,
)

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
        ("algorithm.temporl=false", "unknown key algorithm.temporl: did you mean algorithm.temporal?"),
        ("max_steps=many", "max_steps=many: Input should be a valid integer"),
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


# ------------------------------------------------------------------------------ algorithm defaults resolved

REQUIRED = ["data.train_file=a.json", "data.media_root=."]


def _algorithm(*overrides):
    return load_config(TrainConfig, None, [*REQUIRED, *(f"algorithm.{o}" for o in overrides)]).algorithm


def _nones(value, key="algorithm"):
    """Dotted keys of every None under a dumped section."""
    if value is None:
        return [key]
    if isinstance(value, dict):
        return [k for name, child in value.items() for k in _nones(child, f"{key}.{name}")]
    if isinstance(value, list):
        return [k for i, child in enumerate(value) for k in _nones(child, f"{key}.{i}")]
    return []


def test_algorithm_dumps_concrete_values():
    # only the required keys given: every algorithm knob resolves (paper preset, G = 8, grpo loss)
    dumped = load_config(TrainConfig, None, REQUIRED).model_dump()["algorithm"]
    assert _nones(dumped) == []
    assert dumped["alpha"] == 0.3 and dumped["mu"] == 1.0 and dumped["threshold"] == 0.5
    assert dumped["num_shuffled"] == 4 and dumped["scale_rewards"] == "group"
    assert (dumped["clip_low"], dumped["clip_high"]) == (0.2, 0.2)
    assert dumped["dynamic_sampling"] == {"enabled": False, "max_rounds": 3}
    assert dumped["overlong"] == {"enabled": False, "cache_tokens": 128}


def test_preset_resolves_temporal_knobs():
    algorithm = _algorithm("preset=video-r1-code")
    assert (algorithm.alpha, algorithm.mu, algorithm.threshold) == (0.3, 0.8, 0.1)


def test_explicit_knob_overrides_the_preset():
    algorithm = _algorithm("preset=video-r1-code", "alpha=0.5")
    assert (algorithm.alpha, algorithm.mu, algorithm.threshold) == (0.5, 0.8, 0.1)


def test_null_knob_resolves_to_the_preset():
    # `algorithm.alpha=` and `algorithm.alpha=null` both give None, which means "the preset's"
    assert _algorithm("alpha=null").alpha == 0.3
    assert _algorithm("preset=video-r1-code", "mu=").mu == 0.8


def test_dr_grpo_drops_std_scaling_unless_told():
    assert _algorithm("loss_type=dr_grpo").scale_rewards == "none"
    assert _algorithm("loss_type=dr_grpo", "scale_rewards=group").scale_rewards == "group"
    assert _algorithm("loss_type=dapo").scale_rewards == "group"


@pytest.mark.parametrize(
    "loss_type, clips",
    [
        ("grpo", (0.2, 0.2)),
        ("dapo", (0.2, 0.28)),
        ("dr_grpo", (0.2, 0.2)),
        ("gspo", (3e-4, 4e-4)),
        ("cispo", (1.0, 0.28)),  # 1 − 1.0 = 0: no lower bound on a positive ratio
    ],
)
def test_clips_resolve_from_the_loss_type(loss_type, clips):
    algorithm = _algorithm(f"loss_type={loss_type}")
    assert (algorithm.clip_low, algorithm.clip_high) == clips
    assert _algorithm(f"loss_type={loss_type}", "clip_high=0.5").clip_high == 0.5


@pytest.mark.parametrize("num_generations, num_shuffled", [(8, 4), (6, 3), (3, 1), (2, 1)])
def test_num_shuffled_is_half_of_g(num_generations, num_shuffled):
    assert _algorithm(f"num_generations={num_generations}").num_shuffled == num_shuffled
    assert _algorithm(f"num_generations={num_generations}", "num_shuffled=5").num_shuffled == 5


def test_saved_config_reloads_identical(tmp_path):
    overrides = [*REQUIRED, "algorithm.preset=video-r1-code", "algorithm.loss_type=dr_grpo"]
    config = load_config(TrainConfig, None, overrides)
    path = tmp_path / "config.yaml"
    save_config(config, path)
    assert load_config(TrainConfig, path) == config
    # the file records the values used, not nulls
    saved = yaml.safe_load(path.read_text(encoding="utf-8"))["algorithm"]
    assert _nones(saved) == []
    assert (saved["mu"], saved["scale_rewards"], saved["num_shuffled"]) == (0.8, "none", 4)


def test_unknown_preset_names_the_key():
    with pytest.raises(ConfigError, match="preset must be one of paper, video-r1-code, not 'nope'"):
        _algorithm("preset=nope")


def test_overlong_cache_must_fit_max_new_tokens():
    overlong = [*REQUIRED, "algorithm.overlong.enabled=true", "generation.max_new_tokens=64"]
    message = r"algorithm\.overlong\.cache_tokens \(128\) exceeds generation\.max_new_tokens \(64\)"
    with pytest.raises(ConfigError, match=message):
        load_config(TrainConfig, None, overlong)
    # the interval may span the whole budget: penalty from the first token to −1 at max_new_tokens
    fitted = load_config(TrainConfig, None, [*overlong, "algorithm.overlong.cache_tokens=64"])
    assert fitted.algorithm.overlong.cache_tokens == 64
    # disabled, the interval is not checked
    load_config(TrainConfig, None, [*REQUIRED, "generation.max_new_tokens=64"])
