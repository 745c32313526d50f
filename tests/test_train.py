"""The T-GRPO trainer end to end on a tiny Qwen2.5-VL and real synthetic media, on the CPU."""

import json
import shutil

import pytest
import torch

from tests.launch import launch_two_cpu_processes
from videor1.config import TrainConfig, load_config, save_config
from videor1.data.failures import TooManyFailures
from videor1.rl.trainer import GRPOTrainer

TOY_REWARD = "tests.toy_rewards:contains_target"
# what every step must report (issue #3)
REQUIRED = [
    "reward/accuracy", "reward/format", "reward/total", "reward/temporal", "temporal/rate", "temporal/p",
    "temporal/p_shuffled", "rollout/length", "loss/kl", "optim/grad_norm", "optim/lr", "policy/clip_fraction",
    "groups/all_correct", "groups/all_wrong", "data/skipped_media", "data/skipped_prompts", "time/media",
    "time/media_wait",
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


def test_scoring_paths_give_the_same_step_and_hf_generate_still_trains(tmp_path, tiny_models, synth_root):
    """The same seed samples the same completions; shared-prefix and full scoring must then agree on the step."""
    runs = {}
    for name, extra in {"shared": ["algorithm.scoring=shared_prefix"], "full": ["algorithm.scoring=full"],
                        "generate": ["generation.engine=hf-generate", "max_steps=2"]}.items():
        GRPOTrainer(config(tmp_path / name, tiny_models(), synth_root, "max_steps=1", "save_every=100", *extra)).train()
        runs[name] = metrics(tmp_path / name / "run")
    shared, full = runs["shared"][0], runs["full"][0]
    assert shared["rollout/length"] == full["rollout/length"] and shared["reward/total"] == full["reward/total"]
    for key in ("loss/total", "loss/policy", "loss/kl", "optim/grad_norm"):
        assert shared[key] == pytest.approx(full[key], rel=1e-4, abs=1e-7), key
    assert [m["step"] for m in runs["generate"]] == [1, 2]
    assert all(m["rollout/prompt_mismatches"] == 0 for m in runs["generate"])


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


@pytest.mark.slow
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
    shuffled, permutations = trainer._shuffled_media(batch, videos)
    for i, media, permutation in zip(videos, shuffled, permutations, strict=True):
        ordered = batch[i].media.video.frames  # [F, 3, H, W]
        assert not torch.equal(media.video.frames, ordered) and torch.equal(media.video.frames, ordered[permutation])
        matched = sorted(next(j for j in range(len(ordered)) if torch.equal(f, ordered[j])) for f in media.video.frames)
        assert matched == list(range(len(ordered)))  # the same frames, each exactly once
    texts = [prompt_text(trainer.processor, batch[i].sample) for i in videos]
    a = processor_inputs(trainer.processor, texts, [batch[i].media for i in videos])
    b = processor_inputs(trainer.processor, texts, shuffled)
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["video_grid_thw"], b["video_grid_thw"])
    assert not torch.equal(a["pixel_values_videos"], b["pixel_values_videos"])
    if mode == "patch":  # whole temporal patches move: the pixel rows are a permutation of each other
        assert torch.equal(a["pixel_values_videos"].sort(0).values, b["pixel_values_videos"].sort(0).values)


@pytest.mark.parametrize("mode", ["frame", "patch"])
def test_a_frozen_tower_encodes_each_prompts_pixels_once_a_step(tmp_path, tiny_models, synth_root, monkeypatch, mode):
    """Sampling, reference and policy share one tower pass; by patch the shuffled prompts need no other."""
    import videor1.rl.trainer as trainer_module
    from videor1.models.load import unwrap_peft

    calls = []
    processor_inputs = trainer_module.processor_inputs

    def spy(*args, **kwargs):
        calls.append(processor_inputs(*args, **kwargs))
        return calls[-1]

    monkeypatch.setattr(trainer_module, "processor_inputs", spy)
    cfg = config(tmp_path, tiny_models(), synth_root, "model.freeze_vision=true", f"algorithm.shuffle_mode={mode}",
                 "data.shuffle=false", "prompts_per_device=4")
    trainer = GRPOTrainer(cfg)
    encoded = []  # pixel rows through any vision tower (the policy's or the reference's)
    towers = [unwrap_peft(trainer.policy).model.visual]
    if trainer.ref_scorer is not None:
        towers.append(unwrap_peft(trainer.ref_scorer.model).model.visual)
    for tower in towers:
        tower.register_forward_hook(lambda module, args, output: encoded.append(args[0].shape[0]))
    trainer.train_step()
    ordered = calls[0]
    assert ordered["pixel_values_videos"] is not None and trainer.ref_scorer is not None
    rows = ordered["pixel_values_videos"].shape[0] + (
        ordered["pixel_values"].shape[0] if ordered.get("pixel_values") is not None else 0)
    if mode == "patch":  # the shuffled prompts are the ordered ones' pixels and features, permuted
        assert len(calls) == 1 and sum(encoded) == rows
    else:  # single frames make new temporal patches: the shuffled videos go through processor and tower once
        assert len(calls) == 2 and sum(encoded) == rows + calls[1]["pixel_values_videos"].shape[0]


def test_each_draw_of_a_step_shuffles_anew_and_a_replay_draws_the_same(tmp_path, tiny_models, synth_root):
    from videor1.rl.trainer import shuffle_seed

    trainer = GRPOTrainer(config(tmp_path, tiny_models(), synth_root))
    batch = trainer.stream.next_batch(8)
    videos = [i for i, item in enumerate(batch) if item.sample.is_video][:3]

    def draw():  # one micro-batch (or one dynamic-sampling round) of the current step
        return [m.video.frames for m in trainer._shuffled_media(batch, videos)[0]]

    first, second = draw(), draw()
    assert any(not torch.equal(a, b) for a, b in zip(first, second, strict=True))  # not the same permutations
    trainer._shuffle_draws = 0  # what train_step does at the start of every step, and so of a resumed one
    assert all(torch.equal(a, b) for a, b in zip(first, draw(), strict=True))
    seeds = {shuffle_seed(0, step, rank, n) for step in range(3) for rank in range(2) for n in range(4)}
    assert len(seeds) == 24 and shuffle_seed(0, 1, 0, 2) == shuffle_seed(0, 1, 0, 2)


@pytest.mark.parametrize("disable_dropout", [True, False])
def test_first_importance_ratio_is_exactly_one_with_lora_dropout(tmp_path, tiny_models, synth_root, monkeypatch,
                                                                 disable_dropout):
    """μ = 2: the old log-probs and the first update's come from one network only when dropout is off."""
    import videor1.rl.trainer as trainer_module

    log_ratios = []
    loss = trainer_module.grpo_loss

    def spy(logp, old_logp, ref_logp, advantages, mask, **kwargs):
        log_ratios.append((logp.detach() - old_logp)[mask.bool()])  # log of the importance ratio, per token
        return loss(logp, old_logp, ref_logp, advantages, mask, **kwargs)

    monkeypatch.setattr(trainer_module, "grpo_loss", spy)
    cfg = config(tmp_path, tiny_models(), synth_root, "max_steps=1", "save_every=100", "algorithm.num_iterations=2",
                 "model.lora.enabled=true", "model.lora.r=4", "model.lora.dropout=0.05",
                 f"algorithm.disable_dropout={str(disable_dropout).lower()}")
    trainer = GRPOTrainer(cfg)
    with torch.no_grad():  # a trained adapter: with B = 0 (peft's init) LoRA's dropout would change nothing
        generator = torch.Generator().manual_seed(0)
        for name, p in trainer.policy.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
    trainer.train()
    first, second = log_ratios  # one micro-batch, two iterations
    if disable_dropout:
        assert torch.equal(first, torch.zeros_like(first))  # ratio exactly 1 before any update
    else:
        assert first.abs().max() > 1e-3  # what dropout did to the ratio before any update
    assert second.abs().max() > 1e-4  # after the first update the ratio moves, as it should


def expected_lrs(optim, updates_per_step, steps):
    """The per-step learning rate of a 1-process run: the schedule stepped once per optimizer update."""
    from transformers import get_scheduler

    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=optim.lr)
    updates = steps * updates_per_step
    scheduler = get_scheduler(optim.scheduler, optimizer, num_warmup_steps=round(optim.warmup_ratio * updates),
                              num_training_steps=updates)
    lrs = []
    for _ in range(updates):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    # a step logs the mean learning rate of its updates
    return [sum(lrs[k : k + updates_per_step]) / updates_per_step for k in range(0, updates, updates_per_step)]


def optimizer_updates(checkpoint):
    """How many optimizer updates a checkpoint's AdamW state has seen."""
    state = torch.load(checkpoint / "state" / "optimizer.bin", weights_only=False)["state"]
    return {int(s["step"]) for s in state.values()}


def test_one_process_follows_the_schedule(tmp_path, tiny_models, synth_root):
    cfg = config(tmp_path, tiny_models(), synth_root, "max_steps=4", "save_every=4", "optim.scheduler=cosine",
                 "optim.warmup_ratio=0.25", "gradient_accumulation_steps=2", "algorithm.num_iterations=2",
                 "algorithm.temporal=false", "prompts_per_device=1")
    GRPOTrainer(cfg).train()
    lrs = [m["optim/lr"] for m in metrics(tmp_path / "run")]
    assert lrs == pytest.approx(expected_lrs(cfg.optim, 2, 4), rel=1e-9)
    assert optimizer_updates(tmp_path / "run" / "checkpoint-4") == {8}


@pytest.mark.slow
def test_two_cpu_processes_train_together_and_stay_identical(tmp_path, tiny_models, synth_root):
    """accelerate launch --num_processes 2 on the CPU (gloo): both ranks train, metrics gather, weights agree,
    the schedule is the 1-process one, and each step is exactly num_iterations optimizer updates."""
    cfg = config(tmp_path, tiny_models(), synth_root, "max_steps=3", f'rewards=[{{name: "{TOY_REWARD}"}}]',
                 "algorithm.temporal=false", "algorithm.kl_coef=0", "generation.max_new_tokens=24",
                 "optim.scheduler=cosine", "optim.warmup_ratio=0.2", "gradient_accumulation_steps=2",
                 "algorithm.num_iterations=2", "prompts_per_device=1", "algorithm.scale_rewards=batch")
    save_config(cfg, tmp_path / "config.yaml")
    report = tmp_path / "report.json"
    launch_two_cpu_processes("dist_check.py", "rl", report, tmp_path / "config.yaml")
    ranks = json.loads(report.read_text())
    assert len(ranks) == 2 and all(r["changed"] for r in ranks)
    assert ranks[0]["checksum"] == ranks[1]["checksum"]
    # 3 steps x 2 micro-batches x 1 prompt on each rank, from disjoint halves of the data
    assert [r["stream"]["cursor"] for r in ranks] == [6, 6]
    lines = metrics(tmp_path / "run")
    assert [m["data/prompts"] for m in lines] == [4, 4, 4]
    assert [m["optim/lr"] for m in lines] == pytest.approx(expected_lrs(cfg.optim, 2, 3), rel=1e-9)
    assert optimizer_updates(tmp_path / "run" / "checkpoint-3") == {6}
    # each process's place in the data stream is in the checkpoint: resuming on one process says so and stops
    with pytest.raises(ValueError, match="checkpoint-3 was written by 2 processes and this run has 1"):
        GRPOTrainer(load_config(TrainConfig, tmp_path / "config.yaml", ["max_steps=4"]), resume=True)


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


def test_dynamic_sampling_replaces_groups_without_signal(tmp_path, tiny_models, synth_root):
    """DAPO dynamic sampling: image groups (constant toy reward) are replaced by video groups sampled in extra
    rounds, so every trained group carries a signal; the micro-batch size never changes."""
    cfg = config(tmp_path, tiny_models(), synth_root, "max_steps=4", "save_every=100", "algorithm.temporal=false",
                 'rewards=[{name: "tests.toy_rewards:varies_on_video_only"}]', "log_rollouts=8", "algorithm.kl_coef=0",
                 "algorithm.dynamic_sampling.enabled=true", "algorithm.dynamic_sampling.max_rounds=3")
    trainer = GRPOTrainer(cfg)
    trainer.train()
    lines = metrics(tmp_path / "run")
    assert all(m["data/prompts"] == 2 for m in lines)
    assert sum(m["rollout/extra_rounds"] for m in lines) > 0
    assert any(m["groups/informative"] < 1 for m in lines)  # some sampled groups were dropped ...
    rollouts = [json.loads(line) for line in (tmp_path / "run" / "rollouts.jsonl").read_text().splitlines()]
    assert len(rollouts) == 4 * 8 and {r["data_type"] for r in rollouts} == {"video"}  # ... and none was trained on
    assert trainer.stream.state_dict()["cursor"] > 4 * 2  # more prompts were drawn than trained on


def test_overlong_penalty_reaches_the_rewards(tmp_path, tiny_models, synth_root):
    """DAPO's soft overlong punishment: 0 up to max_new_tokens - cache_tokens, then down to -1 at the limit."""
    from videor1.rl.advantages import overlong_penalty

    cfg = config(tmp_path, tiny_models(), synth_root, "max_steps=2", "save_every=100", "algorithm.temporal=false",
                 'rewards=[{name: "tests.toy_rewards:prefers_short"}]', "algorithm.overlong.enabled=true",
                 "algorithm.overlong.cache_tokens=4", "log_rollouts=8", "generation.max_new_tokens=8")
    trainer = GRPOTrainer(cfg)
    lengths = []
    real = trainer._score

    def spy(batch, texts, completions, *args):
        lengths.append(completions.lengths.clone())
        return real(batch, texts, completions, *args)

    trainer._score = spy
    trainer.train()
    lines = metrics(tmp_path / "run")
    expected = [float(overlong_penalty(n, max_tokens=8, cache_tokens=4).mean()) for n in lengths]
    assert [m["reward/overlong"] for m in lines] == pytest.approx(expected)
    assert any(value < 0 for value in expected)  # the tiny model runs into the limit
