"""Config errors that teach: every problem is one line naming the dotted key and the fix (issue 18)."""

import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from videor1.cli import app
from videor1.config import ConfigError, MediaConfig, SFTConfig, TrainConfig, load_config, save_config
from videor1.config_errors import ALIASES, suggest_key, trl_alias, valid_keys

CONFIGS = Path(__file__).parent.parent / "configs"
TGRPO, SFT = CONFIGS / "tgrpo_tiny.yaml", CONFIGS / "sft_tiny.yaml"
REQUIRED = ["data.train_file=a.json", "data.media_root=."]


def error(cls=TrainConfig, *overrides, path=None) -> str:
    """The message of the ConfigError that loading raises; it is always one line."""
    with pytest.raises(ConfigError) as caught:
        load_config(cls, path, list(overrides))
    message = str(caught.value)
    assert "\n" not in message and "Extra inputs are not permitted" not in message
    return message


# ------------------------------------------------------------------------------------------------ unknown keys

TRAIN_KEYS = valid_keys(TrainConfig)


@pytest.mark.parametrize(
    "key, expected",
    [
        ("algorithm.kl_coeff", "algorithm.kl_coef"),
        ("kl_coef", "algorithm.kl_coef"),  # a bare leaf
        ("kl_coeff", "algorithm.kl_coef"),  # a bare, misspelt leaf
        ("algoritm.kl_coeff", "algorithm.kl_coef"),  # a misspelt section
        ("generation.num_generations", "algorithm.num_generations"),  # the wrong section
        ("algorithm.temporl", "algorithm.temporal"),
        ("max_step", "max_steps"),
        ("algorithm.overlong.cache", "algorithm.overlong.cache_tokens"),  # a shortened name
        ("rewards.nam", "rewards.name"),  # a list item's key
        ("algorithm.foo", None),  # not the section that holds it
        ("foo", None),
    ],
)
def test_suggest_key(key, expected):
    assert suggest_key(key, TRAIN_KEYS) == expected


def test_valid_keys_are_dotted_and_nested():
    assert {"algorithm", "algorithm.kl_coef", "algorithm.length.min_tokens", "generation.vllm.gpu_memory_utilization",
            "model.lora.r", "rewards.name"} <= set(TRAIN_KEYS)
    assert "eval.file" in valid_keys(SFTConfig) and "eval.file" not in TRAIN_KEYS


def test_an_unknown_key_gets_the_closest_valid_one():
    assert error(TrainConfig, *REQUIRED, "algorithm.kl_coeff=0.1") == \
        "unknown key algorithm.kl_coeff: did you mean algorithm.kl_coef?"
    assert error(TrainConfig, *REQUIRED, "kl_coef=0.1") == "unknown key kl_coef: did you mean algorithm.kl_coef?"
    assert error(TrainConfig, *REQUIRED, "algoritm.kl_coef=0.1") == \
        "unknown key algoritm.kl_coef: did you mean algorithm.kl_coef?"
    assert error(TrainConfig, *REQUIRED, "rewards=[{name: accuracy, wieght: 2}]") == \
        "unknown key rewards.0.wieght: did you mean rewards.0.weight?"


def test_an_unknown_key_without_a_close_one_lists_its_section():
    message = error(TrainConfig, *REQUIRED, "algorithm.foo=1")
    assert message.startswith("unknown key algorithm.foo: algorithm's keys are temporal, preset, alpha")
    assert "the top-level keys are output_dir, seed, max_steps" in error(TrainConfig, *REQUIRED, "foo=1")


def test_every_unknown_key_is_reported():
    message = error(TrainConfig, *REQUIRED, "learning_rate=1e-6", "algorithm.kl_coeff=0.1", "max_step=3")
    assert set(message.split("; ")) == {
        "learning_rate is TRL's name: videor1 calls it optim.lr (optim.lr=1e-6)",
        "unknown key algorithm.kl_coeff: did you mean algorithm.kl_coef?",
        "unknown key max_step: did you mean max_steps?",
    }


def test_the_file_is_named_when_it_set_the_key(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"data": {"train_file": "a.json", "media_root": "."}, "learning_rate": 1e-6}))
    assert error(TrainConfig, path=config).startswith(f"{config}: learning_rate is TRL's name")
    # an override is not the file's doing
    assert error(TrainConfig, "beta=0.1", path=TGRPO).startswith("beta is TRL's name")


# ------------------------------------------------------------------------------------- other projects' names

TRL_NAMES = [
    ("learning_rate=1e-6", "learning_rate is TRL's name: videor1 calls it optim.lr (optim.lr=1e-6)"),
    ("per_device_train_batch_size=4", "videor1 calls it prompts_per_device; prompts per process"),
    ("beta=0.02", "(algorithm.kl_coef=0.02)"),
    ("num_generations=4", "(algorithm.num_generations=4)"),
    ("max_completion_length=512", "(generation.max_new_tokens=512)"),
    ("max_prompt_length=1024", "(generation.max_prompt_tokens=1024); longer prompts are skipped"),
    ("temperature=0.7", "(generation.temperature=0.7)"),
    ("top_p=0.9", "(generation.top_p=0.9)"),
    ("top_k=50", "(generation.top_k=50)"),
    ("epsilon=0.3", "(algorithm.clip_low=0.3); TRL's epsilon also sets the upper bound"),
    ("epsilon_high=0.28", "(algorithm.clip_high=0.28)"),
    ("loss_type=dapo", "(algorithm.loss_type=dapo)"),
    ("num_iterations=2", "(algorithm.num_iterations=2)"),
    ("scale_rewards=false", "(algorithm.scale_rewards=none)"),
    ("scale_rewards=batch", "(algorithm.scale_rewards=batch)"),
    ("warmup_ratio=0.1", "(optim.warmup_ratio=0.1)"),
    ("weight_decay=0.1", "(optim.weight_decay=0.1)"),
    ("max_grad_norm=1.0", "(optim.max_grad_norm=1.0)"),
    ("lr_scheduler_type=linear", "(optim.scheduler=linear)"),
    ("save_steps=50", "(save_every=50)"),
    ("model_name_or_path=Qwen/Qwen2.5-VL-3B-Instruct", "(model.name_or_path=Qwen/Qwen2.5-VL-3B-Instruct)"),
    ("gradient_checkpointing=true", "(model.gradient_checkpointing=true)"),
    ("bf16=true", "bf16 is TRL's name: videor1 calls it mixed_precision (mixed_precision=bf16)"),
    ("use_vllm=true", "(generation.engine=vllm)"),
    ("vllm_gpu_memory_utilization=0.5", "(generation.vllm.gpu_memory_utilization=0.5)"),
    ("use_peft=true", "(model.lora.enabled=true)"),
    ("lora_r=8", "(model.lora.r=8)"),
    ("lora_alpha=16", "(model.lora.alpha=16)"),
    ("lora_dropout=0.1", "(model.lora.dropout=0.1)"),
    ("freeze_vision_modules=true", "freeze_vision_modules is Video-R1's name: videor1 calls it model.freeze_vision"),
    ("logging_steps=10", "logging_steps is TRL's name: videor1 logs every step"),
    ("num_train_epochs=3", "num_train_epochs is TRL's name: videor1 counts steps, not epochs: set max_steps"),
    ("optim.learning_rate=1e-5", "optim.learning_rate is TRL's name: videor1 calls it optim.lr (optim.lr=1e-5)"),
]


@pytest.mark.parametrize("override, expected", TRL_NAMES, ids=[o.partition("=")[0] for o, _ in TRL_NAMES])
def test_trl_names_map_to_videor1_keys(override, expected):
    message = error(TrainConfig, *REQUIRED, override)
    assert expected in message
    # the override it suggests is one videor1 takes
    suggested = re.search(r"\(([a-z_.]+=[^)]+)\)", message)
    if suggested:
        load_config(TrainConfig, None, [*REQUIRED, suggested.group(1)])


def test_sft_maps_the_batch_and_says_whose_keys_it_lacks():
    assert error(SFTConfig, *REQUIRED, "per_device_train_batch_size=4") == \
        "per_device_train_batch_size is TRL's name: videor1 calls it batch_size (batch_size=4)"
    assert error(SFTConfig, *REQUIRED, "beta=0.1") == \
        "beta is TRL's name for algorithm.kl_coef, a key of `videor1 train` only"
    assert error(SFTConfig, *REQUIRED, "algorithm.kl_coef=0") == \
        "algorithm.kl_coef is a key of `videor1 train`, not of `videor1 sft`"
    assert error(TrainConfig, *REQUIRED, "batch_size=4").startswith(
        "batch_size is a key of `videor1 sft`: this config has prompts_per_device")


def test_every_alias_names_a_real_key():
    keys = set(TRAIN_KEYS) | set(valid_keys(SFTConfig))
    for name, alias in ALIASES.items():
        assert alias.targets or alias.note, name
        assert all(target.key in keys for target in alias.targets), name


def test_trl_alias_alone():
    assert trl_alias("learning_rate", "1e-6") == \
        "learning_rate is TRL's name: videor1 calls it optim.lr (optim.lr=1e-6)"
    assert trl_alias("learning_rate") == "learning_rate is TRL's name: videor1 calls it optim.lr"
    assert trl_alias("bf16", False) == "bf16 is TRL's name: videor1 calls it mixed_precision (mixed_precision=no)"
    assert trl_alias("kl_coef") is None


# ------------------------------------------------------------------------------------- the other recipe's file


def test_train_given_an_sft_config_says_run_sft():
    assert error(TrainConfig, path=SFT) == (
        f"{SFT} is an SFT config (batch_size, eval are keys of `videor1 sft`, not of `videor1 train`): "
        f"run `videor1 sft {SFT}`"
    )


def test_sft_given_a_train_config_says_run_train():
    message = error(SFTConfig, "max_steps=3", path=TGRPO)
    assert message.startswith(f"{TGRPO} is a GRPO / T-GRPO config (algorithm, generation, log_rollouts, ")
    assert message.endswith(f"run `videor1 train {TGRPO} max_steps=3`")


def test_the_other_recipe_is_recognised_despite_a_typo(tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text(SFT.read_text() + "batch_sise: 3\n")
    assert "is an SFT config (batch_size, eval are keys of `videor1 sft`" in error(TrainConfig, path=config)


# -------------------------------------------------------------------------- values meaningless for the algorithm


def test_a_group_of_one_is_refused():
    assert error(TrainConfig, *REQUIRED, "algorithm.num_generations=1") == (
        "algorithm.num_generations=1: a group of one has no advantage (each completion is scored against its "
        "group's mean, so every advantage is 0 and nothing is learned); GRPO needs 2 or more, "
        "e.g. algorithm.num_generations=8"
    )
    assert load_config(TrainConfig, None, [*REQUIRED, "algorithm.num_generations=2"]).algorithm.num_shuffled == 1


def test_num_shuffled_without_temporal_is_refused():
    assert error(TrainConfig, *REQUIRED, "algorithm.num_shuffled=2", "algorithm.temporal=false") == (
        "algorithm.num_shuffled=2 has no effect with algorithm.temporal=false (only T-GRPO samples shuffled-frame "
        "completions): drop it, or set algorithm.temporal=true"
    )
    # resolved rather than given, or given with temporal on: fine
    load_config(TrainConfig, None, [*REQUIRED, "algorithm.temporal=false"])
    load_config(TrainConfig, None, [*REQUIRED, "algorithm.num_shuffled=2"])


def test_a_saved_grpo_config_loads_again(tmp_path):
    # a saved config spells out the resolved num_shuffled: the value G resolves to passes
    config = load_config(TrainConfig, None, [*REQUIRED, "algorithm.temporal=false", "algorithm.num_generations=6"])
    save_config(config, tmp_path / "config.yaml")
    assert load_config(TrainConfig, tmp_path / "config.yaml") == config


def test_scale_rewards_outside_grpo_is_refused():
    message = error(TrainConfig, *REQUIRED, "algorithm.advantage=rloo", "algorithm.scale_rewards=batch")
    assert message.startswith("algorithm.scale_rewards=batch has no effect with algorithm.advantage=rloo")
    load_config(TrainConfig, None, [*REQUIRED, "algorithm.advantage=rloo"])


def test_clip_low_past_one_is_refused():
    assert error(TrainConfig, *REQUIRED, "algorithm.clip_low=1.5").startswith(
        "algorithm.clip_low=1.5: the ratio is clipped below at 1 - clip_low")
    assert load_config(TrainConfig, None, [*REQUIRED, "algorithm.loss_type=cispo"]).algorithm.clip_low == 1.0


def test_an_empty_length_window_is_refused_when_enabled():
    assert error(TrainConfig, *REQUIRED, "algorithm.length.min_tokens=600").startswith(
        "algorithm.length.min_tokens (600) exceeds algorithm.length.max_tokens (512): no completion can earn")
    load_config(TrainConfig, None, [*REQUIRED, "algorithm.length.min_tokens=600", "algorithm.length.enabled=false"])


def test_an_invalid_g_is_the_only_error():
    assert error(TrainConfig, *REQUIRED, "algorithm.num_generations=many") == \
        "algorithm.num_generations=many: Input should be a valid integer, unable to parse string as an integer"


# ------------------------------------------------------------------------------------- missing and invalid values


def test_missing_required_keys_say_what_they_are():
    assert error(TrainConfig, "data.media_root=.") == (
        "data.train_file is required: the training rows in the Video-R1 schema, as JSON, JSONL, parquet or a "
        "datasets folder (data.train_file=…)"
    )
    assert error(TrainConfig).startswith("data is required: set data.train_file (the training rows")
    assert error(SFTConfig, *REQUIRED, "eval.max_samples=3").startswith("eval.file is required: a Video-R1-format file")


@pytest.mark.parametrize(
    "override, expected",
    [
        ("max_steps=many", "max_steps=many: Input should be a valid integer, unable to parse string as an integer"),
        ("optim.lr=0", "optim.lr=0: Input should be greater than 0"),
        ("generation.engine=sglang", "generation.engine=sglang: Input should be 'hf', 'hf-generate' or 'vllm'"),
        ("algorithm.preset=nope", "algorithm.preset must be one of paper, video-r1-code, not 'nope'"),
        ("model=Qwen/Qwen2.5-VL-7B-Instruct", "model is a section, not a value: set its keys (name_or_path, dtype"),
        ("model=Qwen/Qwen2.5-VL-7B-Instruct", "e.g. model.name_or_path=Qwen/Qwen2.5-VL-7B-Instruct"),
        ("rewards=[{name: format}]", "algorithm.temporal needs the accuracy reward in rewards: add {name: accuracy}"),
    ],
)
def test_invalid_values_name_key_value_and_what_is_allowed(override, expected):
    assert expected in error(TrainConfig, *REQUIRED, override)


def test_an_override_that_is_not_yaml_is_a_config_error():
    assert error(TrainConfig, *REQUIRED, "rewards=[{name: accuracy").startswith(
        "override 'rewards=[{name: accuracy': the value is not YAML")


def test_an_unreadable_file_is_one_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("seed: 1\nmodel: name_or_path: x\n")
    assert error(TrainConfig, path=tmp_path / "bad.yaml") == \
        f"{tmp_path / 'bad.yaml'}: not valid YAML at line 2, column 20: mapping values are not allowed here"
    assert error(TrainConfig, path=tmp_path / "none.yaml") == f"{tmp_path / 'none.yaml'}: No such file or directory"


def test_a_plain_config_class_gets_the_same_help():
    assert error(MediaConfig, "fpss=2") == "unknown key fpss: did you mean fps?"


# ------------------------------------------------------------------------------------------------ through the CLI

runner = CliRunner()


def cli(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


def test_cli_trl_name_is_one_line_naming_the_key():
    result = cli("train", TGRPO, "learning_rate=1e-6")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "config error: learning_rate is TRL's name: videor1 calls it optim.lr (optim.lr=1e-6)"
    ]


@pytest.mark.parametrize("command, config, fix", [("train", SFT, "videor1 sft"), ("sft", TGRPO, "videor1 train")])
def test_cli_other_recipe_names_the_command(command, config, fix):
    result = cli(command, config)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and f"run `{fix} {config}`" in lines[0]


def test_cli_refuses_a_group_of_one():
    result = cli("train", TGRPO, "algorithm.num_generations=1")
    assert result.exit_code == 2 and "a group of one has no advantage" in result.output
