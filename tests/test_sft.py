"""SFT cold start: assistant-only labels on real processor output, a falling loss, resume, and hand-off to RL."""

import json
import shutil

import pytest
import torch

from videor1.config import MediaConfig, SFTConfig, TrainConfig, load_config
from videor1.data.dataset import load_dataset
from videor1.models.inputs import load_sample_media, vision_factor
from videor1.models.load import load_processor
from videor1.models.tiny import FAMILIES
from videor1.rl.trainer import GRPOTrainer
from videor1.sft.data import IGNORE_INDEX, BatchPlan, assistant_text, sft_batch
from videor1.sft.trainer import SFTTrainer

SMALL = MediaConfig(video_min_pixels=32 * 32, video_max_pixels=64 * 64, image_min_pixels=32 * 32,
                    image_max_pixels=64 * 64, max_frames=4)


@pytest.mark.parametrize("family", FAMILIES)
def test_exactly_the_assistant_tokens_carry_labels(family, tiny_models, synth_root):
    processor = load_processor(tiny_models(family))
    tokenizer = processor.tokenizer
    samples = load_dataset(synth_root / "train.json", synth_root).samples
    batch_samples = [next(s for s in samples if s.is_video), next(s for s in samples if not s.is_video)]
    media = [load_sample_media(s, SMALL, vision_factor(processor)) for s in batch_samples]
    batch = sft_batch(processor, batch_samples, media)
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    vision = [tokenizer.convert_tokens_to_ids(t) for t in ("<|video_pad|>", "<|image_pad|>", "<|vision_start|>")]
    assert torch.isin(ids, torch.tensor(vision)).any()  # the prompt really holds media tokens
    for row, sample in enumerate(batch_samples):
        expected = tokenizer(assistant_text(sample) + "<|im_end|>", add_special_tokens=False)["input_ids"]
        labelled = (labels[row] != IGNORE_INDEX).nonzero().squeeze(1)
        # one contiguous run, equal to the assistant turn and its end-of-turn token, and nothing else
        assert labelled.tolist() == list(range(int(labelled[0]), int(labelled[0]) + len(expected)))
        assert labels[row, labelled].tolist() == expected == ids[row, labelled].tolist()
        assert not torch.isin(labels[row, labelled], torch.tensor(vision)).any()
        # what precedes is the prompt, ending with the assistant header; padding is never labelled
        header = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
        assert ids[row, int(labelled[0]) - len(header) : int(labelled[0])].tolist() == header
        assert (labels[row][mask[row] == 0] == IGNORE_INDEX).all()


def test_batch_plan_splits_ranks_and_epochs():
    plans = [BatchPlan(10, 2, seed=0, shuffle=True, rank=r, world_size=2) for r in range(2)]
    assert plans[0].batches_per_epoch == 2  # 10 samples, 4 per step: the tail of 2 is dropped
    epoch0 = [i for g in range(2) for p in plans for i in p.indices(g)]
    assert len(set(epoch0)) == 8
    assert plans[0].indices(2) != plans[0].indices(0)  # the next epoch is a new permutation
    assert BatchPlan(10, 2, seed=0, shuffle=False).indices(1) == [2, 3]


def sft_config(tmp_path, model, data, *overrides):
    base = [
        f"output_dir={tmp_path / 'sft'}", f"model.name_or_path={model}", "model.dtype=float32",
        f"data.train_file={data / 'train.json'}", f"data.media_root={data}", "batch_size=4", "max_steps=40",
        "media.max_frames=4", "media.video_min_pixels=3136", "media.video_max_pixels=3136",
        "media.image_min_pixels=3136", "media.image_max_pixels=3136", "optim.lr=0.001", "optim.scheduler=constant",
        "save_every=20", "tensorboard=false", "model.freeze_vision=false",
    ]
    return load_config(SFTConfig, None, base + list(overrides))


def losses(run):
    return [json.loads(line)["loss/sft"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_sft_loss_falls_and_the_checkpoint_starts_rl(tmp_path, tiny_models, synth_root):
    final = SFTTrainer(sft_config(tmp_path, tiny_models(), synth_root, "data.num_workers=1")).train()
    curve = losses(tmp_path / "sft")
    assert len(curve) == 40 and sum(curve[-5:]) / 5 < 0.5 * sum(curve[:5]) / 5
    rl = load_config(TrainConfig, None, [
        f"output_dir={tmp_path / 'rl'}", f"model.name_or_path={final}", "model.dtype=float32",
        f"data.train_file={synth_root / 'train.json'}", f"data.media_root={synth_root}", "max_steps=1",
        "prompts_per_device=2", "algorithm.num_generations=2", "generation.max_new_tokens=8", "media.max_frames=4",
        "media.video_max_pixels=3136", "media.image_max_pixels=3136", "tensorboard=false",
    ])
    GRPOTrainer(rl).train()
    assert (tmp_path / "rl" / "checkpoint-1" / "model.safetensors").exists()


def test_sft_resume_is_exact(tmp_path, tiny_models, synth_root):
    SFTTrainer(sft_config(tmp_path / "a", tiny_models(), synth_root, "max_steps=6", "save_every=3")).train()
    SFTTrainer(sft_config(tmp_path / "b", tiny_models(), synth_root, "max_steps=3", "save_every=3")).train()
    SFTTrainer(sft_config(tmp_path / "b", tiny_models(), synth_root, "max_steps=6", "save_every=3"),
               resume=True).train()
    assert losses(tmp_path / "a" / "sft") == losses(tmp_path / "b" / "sft")


def test_sft_skips_and_counts_a_truncated_video(tmp_path, tiny_models, synth_root):
    data = tmp_path / "data"
    shutil.copytree(synth_root, data)
    rows = json.loads((data / "train.json").read_text())
    bad = data / next(r for r in rows if r["data_type"] == "video")["path"]
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    # 6 steps x 4 samples = one pass over the 24 rows
    SFTTrainer(sft_config(tmp_path, tiny_models(), data, "max_steps=6", "data.max_failure_fraction=0.2")).train()
    lines = [json.loads(line) for line in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert sum(m["data/skipped_media"] for m in lines) == 1 and sum(m["data/samples"] for m in lines) == 23
    failures = [json.loads(line) for line in (tmp_path / "sft" / "failures.jsonl").read_text().splitlines()]
    assert [f["path"] for f in failures] == [str(bad)]


@pytest.mark.slow
def test_two_cpu_processes_fine_tune_together(tmp_path, tiny_models, synth_root):
    """2 processes x 2 micro-batches of 1 sample train exactly like 1 process with batches of 4: the loss is the
    token mean over the whole step, and the warm-up + cosine schedule is the 1-process one."""
    from tests.launch import launch_two_cpu_processes
    from tests.test_train import expected_lrs
    from videor1.config import save_config

    schedule = ["max_steps=3", "save_every=3", "optim.scheduler=cosine", "optim.warmup_ratio=0.34",
                "data.shuffle=false"]
    split = sft_config(tmp_path / "two", tiny_models(), synth_root, *schedule, "batch_size=1",
                       "gradient_accumulation_steps=2")
    save_config(split, tmp_path / "c.yaml")
    launch_two_cpu_processes("dist_check.py", "sft", tmp_path / "report.json", tmp_path / "c.yaml")
    ranks = json.loads((tmp_path / "report.json").read_text())
    assert len(ranks) == 2 and all(r["changed"] for r in ranks) and ranks[0]["checksum"] == ranks[1]["checksum"]
    two = [json.loads(line) for line in (tmp_path / "two" / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert [m["data/samples"] for m in two] == [4, 4, 4]  # 2 micro-batches of 1 sample on each of 2 processes
    assert [m["optim/lr"] for m in two] == pytest.approx(expected_lrs(split.optim, 1, 3), rel=1e-9)

    whole = SFTTrainer(sft_config(tmp_path / "one", tiny_models(), synth_root, *schedule, "batch_size=4"))
    whole.train()
    one = [json.loads(line) for line in (tmp_path / "one" / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert [m["optim/lr"] for m in one] == [m["optim/lr"] for m in two]
    # same samples, same token-mean loss and gradient: only float summation order differs (padding, reductions)
    assert [m["loss/sft"] for m in one] == pytest.approx([m["loss/sft"] for m in two], rel=1e-4)
    assert [m["optim/grad_norm"] for m in one] == pytest.approx([m["optim/grad_norm"] for m in two], rel=1e-3)
    checksum = float(sum(p.detach().double().sum() for p in whole.model.parameters()))
    assert checksum == pytest.approx(ranks[0]["checksum"], rel=1e-6)
