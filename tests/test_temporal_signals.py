"""algorithm.temporal_signal in the trainer: what reaches the advantages, and an exact resume of the running stds."""

import json

import pytest
import torch

from tests.test_train import TIMING, TOY_REWARD, config, metrics
from videor1.rl import trainer as trainer_module
from videor1.rl.trainer import GRPOTrainer

TOY = [f'rewards=[{{name: "{TOY_REWARD}"}}, {{name: accuracy}}, {{name: format}}]']


def test_joint_signal_gets_the_shuffled_rewards_of_video_rows_and_no_bonus(tmp_path, tiny_models, synth_root,
                                                                          monkeypatch):
    seen = []
    original = trainer_module.joint_group_advantages

    def recording(rewards, group_size, **kwargs):
        seen.append(rewards.clone())
        return original(rewards, group_size, **kwargs)

    monkeypatch.setattr(trainer_module, "joint_group_advantages", recording)
    cfg = config(tmp_path, tiny_models(), synth_root, "max_steps=3", "algorithm.temporal_signal=joint",
                 "prompts_per_device=4", *TOY)
    trainer = GRPOTrainer(cfg)
    trainer.train()
    G, G_shuffled = cfg.algorithm.num_generations, cfg.algorithm.num_shuffled
    assert len(seen) == 3 and all(step.shape == (4, G + G_shuffled) for step in seen)
    lines = metrics(tmp_path / "run")
    for step, line in zip(seen, lines, strict=True):
        shuffled = step[:, G:]
        videos = ~shuffled.isnan().any(dim=1)
        assert videos.any(), "a step without videos tests nothing"
        assert torch.isfinite(step[:, :G]).all() and shuffled[~videos].isnan().all()
        assert line["reward/temporal"] == 0  # the comparison is in the baseline, not a bonus
        assert line["temporal/p"] is not None
    assert any(line["advantage/abs_mean"] > 0 for line in lines)


def test_ema_std_resume_is_exact_and_its_stds_are_saved(tmp_path, tiny_models, synth_root):
    signal = ["algorithm.temporal_signal=ema_std", "algorithm.ema_decay=0.5", *TOY]
    GRPOTrainer(config(tmp_path / "a", tiny_models(), synth_root, "max_steps=4", "save_every=2", *signal)).train()
    GRPOTrainer(config(tmp_path / "b", tiny_models(), synth_root, "max_steps=2", "save_every=2", *signal)).train()
    GRPOTrainer(config(tmp_path / "b", tiny_models(), synth_root, "max_steps=4", "save_every=2", *signal),
                resume=True).train()

    def untimed(m):
        return {k: v for k, v in m.items() if not k.startswith(TIMING)}

    a, b = metrics(tmp_path / "a" / "run"), metrics(tmp_path / "b" / "run")
    assert [untimed(m) for m in a] == [untimed(m) for m in b]
    saved = json.loads((tmp_path / "b" / "run" / "checkpoint-2" / "trainer_state.json").read_text())["task_stds"]
    assert saved and set(saved) <= {"video/multiple choice", "video/numerical", "video/OCR", "video/free-form",
                                     "video/regression", "image/multiple choice", "image/numerical", "image/OCR",
                                     "image/free-form", "image/regression"}
    assert all(value >= 0 for value in saved.values())
    assert any(m["optim/grad_norm"] > 0 for m in a)


@pytest.mark.parametrize("overrides", [["algorithm.temporal=false"], ["algorithm.scale_rewards=batch"]])
def test_signals_other_than_the_bonus_need_grpo_group_scaling_and_shuffled_groups(overrides):
    from videor1.config import ConfigError, TrainConfig, load_config

    with pytest.raises(ConfigError, match="algorithm.temporal_signal=joint reshapes GRPO's per-group"):
        load_config(TrainConfig, "configs/tgrpo_tiny.yaml", ["algorithm.temporal_signal=joint", *overrides])
