"""The T-GRPO trainer end to end on a tiny Qwen2.5-VL and real synthetic media, on the CPU."""

import json
import shutil

import pytest
import torch

from videor1.config import TrainConfig, load_config, save_config
from videor1.rl.data import TooManyFailures
from videor1.rl.trainer import GRPOTrainer

TOY_REWARD = "tests.toy_rewards:contains_target"
# what every step must report (issue #3)
REQUIRED = [
    "reward/accuracy", "reward/format", "reward/total", "reward/temporal", "temporal/rate", "temporal/p",
    "temporal/p_shuffled", "rollout/length", "loss/kl", "optim/grad_norm", "optim/lr", "policy/clip_fraction",
    "groups/all_correct", "groups/all_wrong", "data/skipped_media", "data/skipped_prompts", "time/media",
    "time/generation", "time/logprobs", "time/backward", "perf/tokens_per_s", "data/prompts",
]
TIMING = ("time/", "perf/")


def config(tmp_path, model, data_root, *overrides):
    base = [
        f"output_dir={tmp_path / 'run'}", f"model.name_or_path={model}", "model.dtype=float32",
        f"data.train_file={data_root / 'train.json'}", f"data.media_root={data_root}",
        "max_steps=3", "prompts_per_device=2", "algorithm.num_generations=4", "generation.max_new_tokens=8",
        "generation.top_p=1.0", "media.max_frames=4", "media.video_min_pixels=3136", "media.video_max_pixels=3136",
        "media.image_min_pixels=3136", "media.image_max_pixels=3136", "algorithm.length.enabled=false",
        "optim.lr=0.001", "optim.scheduler=constant", "save_every=3", "tensorboard=false", "model.freeze_vision=false",
    ]
    return load_config(TrainConfig, None, base + list(overrides))


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_tgrpo_steps_write_every_metric_and_a_loadable_checkpoint(tmp_path, tiny_models, synth_root):
    cfg = config(tmp_path, tiny_models(), synth_root, "data.shuffle=false")
    final = GRPOTrainer(cfg).train()
    lines = metrics(tmp_path / "run")
    assert [m["step"] for m in lines] == [1, 2, 3]
    for line in lines:
        assert not [k for k in REQUIRED if k not in line], line
        assert line["data/prompts"] == 2 and line["rollout/prompt_mismatches"] == 0
    # T-GRPO really ran: some step held a video question, so p and p-tilde were measured
    assert any(m["temporal/p"] is not None for m in lines)
    assert (tmp_path / "run" / "config.yaml").exists() and (tmp_path / "run" / "rollouts.jsonl").exists()

    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(final)
    processor = AutoProcessor.from_pretrained(final)
    ids = processor.tokenizer(["<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"], return_tensors="pt")
    assert model.generate(**ids, max_new_tokens=3, do_sample=False).shape[1] > ids["input_ids"].shape[1]
    # training changed the weights
    start = AutoModelForImageTextToText.from_pretrained(tiny_models())
    assert not torch.equal(model.lm_head.weight, start.lm_head.weight)


def test_resume_is_exact(tmp_path, tiny_models, synth_root):
    toy = [f'rewards=[{{name: "{TOY_REWARD}"}}, {{name: accuracy}}]']
    straight = config(tmp_path / "a", tiny_models(), synth_root, "max_steps=6", *toy)
    GRPOTrainer(straight).train()
    first = config(tmp_path / "b", tiny_models(), synth_root, "max_steps=3", *toy)
    GRPOTrainer(first).train()
    second = config(tmp_path / "b", tiny_models(), synth_root, "max_steps=6", *toy)
    GRPOTrainer(second, resume=True).train()
    a, b = metrics(tmp_path / "a" / "run"), metrics(tmp_path / "b" / "run")
    assert [m["step"] for m in b] == list(range(1, 7))

    def untimed(m):
        return {k: v for k, v in m.items() if not k.startswith(TIMING)}

    assert [untimed(m) for m in a] == [untimed(m) for m in b]
    # the toy reward varies, so the comparison covers non-trivial losses and gradients
    assert any(m["optim/grad_norm"] > 0 for m in a)


def test_learning_check_reward_rises(tmp_path, tiny_models, synth_root):
    """A toy reward that pays for emitting <answer>: mean reward goes from below 0.3 to above 0.8."""
    cfg = config(
        tmp_path, tiny_models(), synth_root, f'rewards=[{{name: "{TOY_REWARD}"}}]', "algorithm.temporal=false",
        "algorithm.kl_coef=0", "algorithm.num_generations=8", "generation.max_new_tokens=24", "max_steps=60",
        "save_every=1000",
    )
    GRPOTrainer(cfg).train()
    rewards = [m[f"reward/{TOY_REWARD}"] for m in metrics(tmp_path / "run")]
    assert sum(rewards[:5]) / 5 < 0.3
    assert sum(rewards[-5:]) / 5 > 0.8, rewards


def damaged_copy(root, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(root, copy)
    rows = json.loads((copy / "train.json").read_text())
    videos = [r for r in rows if r["data_type"] == "video"]
    return copy, rows, videos


def test_truncated_video_is_skipped_and_counted(tmp_path, tiny_models, synth_root):
    data, rows, videos = damaged_copy(synth_root, tmp_path)
    bad = data / videos[0]["path"]
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    # 12 steps x 2 prompts consume every one of the 24 rows, the damaged one included
    cfg = config(tmp_path, tiny_models(), data, "max_steps=12", "save_every=100", "data.max_failure_fraction=0.2",
                 "algorithm.kl_coef=0", "algorithm.temporal=false")
    GRPOTrainer(cfg).train()
    lines = metrics(tmp_path / "run")
    assert len(lines) == 12 and all(m["data/prompts"] == 2 for m in lines)
    assert sum(m["data/skipped_media"] for m in lines) == 1 and lines[-1]["data/skipped_media_total"] == 1
    failures = [json.loads(line) for line in (tmp_path / "run" / "failures.jsonl").read_text().splitlines()]
    assert [f["path"] for f in failures] == [str(bad)] and "unreadable" in failures[0]["error"]


def test_run_stops_past_the_failure_fraction(tmp_path, tiny_models, synth_root):
    data, rows, videos = damaged_copy(synth_root, tmp_path)
    for row in videos:
        (data / row["path"]).unlink()
    cfg = config(tmp_path, tiny_models(), data, "max_steps=20", "data.max_failure_fraction=0.1")
    with pytest.raises(TooManyFailures, match="above data.max_failure_fraction=0.1"):
        GRPOTrainer(cfg).train()


@pytest.mark.parametrize("mode", ["frame", "patch"])
def test_shuffled_group_gets_the_same_frames_in_another_order(tmp_path, tiny_models, synth_root, mode):
    from videor1.models.inputs import processor_inputs, prompt_text

    cfg = config(tmp_path, tiny_models(), synth_root, f"algorithm.shuffle_mode={mode}")
    trainer = GRPOTrainer(cfg)
    batch = trainer.stream.next_batch(8)
    videos = [i for i, item in enumerate(batch) if item.sample.is_video][:2]
    shuffled = trainer._shuffled_media(batch, videos)
    for i, media in zip(videos, shuffled, strict=True):
        ordered = batch[i].media.video.frames  # [F, 3, H, W]
        assert not torch.equal(media.video.frames, ordered)
        matched = sorted(next(j for j in range(len(ordered)) if torch.equal(f, ordered[j])) for f in media.video.frames)
        assert matched == list(range(len(ordered)))  # the same frames, each exactly once
    texts = [prompt_text(trainer.processor, batch[i].sample) for i in videos]
    a = processor_inputs(trainer.processor, texts, [batch[i].media for i in videos])
    b = processor_inputs(trainer.processor, texts, shuffled)
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["video_grid_thw"], b["video_grid_thw"])
    assert not torch.equal(a["pixel_values_videos"], b["pixel_values_videos"])
    if mode == "patch":  # whole temporal patches move: the pixel rows are a permutation of each other
        assert torch.equal(a["pixel_values_videos"].sort(0).values, b["pixel_values_videos"].sort(0).values)


def test_two_cpu_processes_train_together_and_stay_identical(tmp_path, tiny_models, synth_root):
    """accelerate launch --num_processes 2 on the CPU (gloo): both ranks train, metrics gather, weights agree."""
    cfg = config(tmp_path, tiny_models(), synth_root, "max_steps=2", f'rewards=[{{name: "{TOY_REWARD}"}}]',
                 "algorithm.temporal=false", "algorithm.kl_coef=0", "generation.max_new_tokens=24")
    save_config(cfg, tmp_path / "config.yaml")
    report = tmp_path / "report.json"
    launch_two_cpu_processes("rl", report, tmp_path / "config.yaml")
    ranks = json.loads(report.read_text())
    assert len(ranks) == 2 and all(r["changed"] for r in ranks)
    assert ranks[0]["checksum"] == ranks[1]["checksum"]
    # 2 steps x 2 prompts on each rank, from disjoint halves of the data
    assert [r["stream"]["cursor"] for r in ranks] == [4, 4]
    lines = metrics(tmp_path / "run")
    assert [m["data/prompts"] for m in lines] == [4, 4]



def launch_two_cpu_processes(kind, report, config_path):
    """`accelerate launch` two gloo processes on the CPU running tests/dist_check.py."""
    import os
    import socket
    import subprocess
    import sys

    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    for attempt in range(2):
        with socket.socket() as sock:  # a free rendezvous port, so back-to-back launches never collide
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        # accelerate's --cpu launcher starts one process; torchrun-style launching with ACCELERATE_USE_CPU gives gloo
        command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                   "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "--main_process_port", str(port), "tests/dist_check.py", kind, str(report), str(config_path)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
        # the port can be taken between our probe and torchrun's bind: that one race is retried, nothing else
        if result.returncode == 0 or "address already in use" not in result.stderr.lower() or attempt:
            break
    assert result.returncode == 0, result.stderr[-3000:]


def test_lora_with_frozen_vision_and_checkpointing(tmp_path, tiny_models, synth_root):
    """LoRA on the language model only, frozen vision tower (features shared with the reference), grad ckpt."""
    from transformers import AutoModelForImageTextToText

    cfg = config(tmp_path, tiny_models(), synth_root, "max_steps=2", "save_every=2", "model.freeze_vision=true",
                 "model.lora.enabled=true", "model.lora.r=4", "model.gradient_checkpointing=true",
                 "algorithm.kl_coef=0.04", "optim.lr=0.01",
                 'rewards=[{name: "tests.toy_rewards:prefers_short"}, {name: accuracy}]')
    trainer = GRPOTrainer(cfg)
    assert trainer.ref_scorer is None  # with LoRA the reference is the base model, adapter disabled
    trainable = {n for n, p in trainer.policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n and "language_model" in n for n in trainable)
    final = trainer.train()
    lines = metrics(tmp_path / "run")
    assert all(m["loss/kl"] is not None for m in lines) and all(m["optim/grad_norm"] > 0 for m in lines)
    merged = AutoModelForImageTextToText.from_pretrained(final)  # adapters merged into a plain checkpoint
    start = AutoModelForImageTextToText.from_pretrained(tiny_models())
    assert torch.equal(merged.model.visual.patch_embed.proj.weight, start.model.visual.patch_embed.proj.weight)
    assert any(not torch.equal(a, b) for (name, a), b in
               zip(merged.model.language_model.named_parameters(), start.model.language_model.parameters(),
                   strict=True) if "proj" in name)


def test_prompts_over_the_token_limit_are_skipped_and_logged(tmp_path, tiny_models, synth_root):
    cfg = config(tmp_path, tiny_models(), synth_root, "generation.max_prompt_tokens=10")
    with pytest.raises(ValueError, match="no prompt fits generation.max_prompt_tokens=10"):
        GRPOTrainer(cfg).train()
    failures = [json.loads(line) for line in (tmp_path / "run" / "failures.jsonl").read_text().splitlines()]
    assert failures and all(f["kind"] == "prompt" and "exceeds" in f["error"] for f in failures)
