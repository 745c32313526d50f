"""Sharded training with FSDP2 on 2 CPU processes (gloo): the same numbers as the unsharded run, checkpoints
that `from_pretrained` loads, and an exact resume. Each launch is bounded by a timeout, so a deadlock fails
instead of hanging CI."""

import json

import pytest
import torch

from tests.launch import launch_two_cpu_processes
from tests.test_sft import sft_config
from videor1.config import SFTConfig, load_config, save_config
from videor1.sft.trainer import SFTTrainer

pytestmark = pytest.mark.slow

SCHEDULE = ["max_steps=3", "save_every=3", "optim.scheduler=cosine", "optim.warmup_ratio=0.34", "data.shuffle=false"]


def metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_fsdp2_sft_on_two_processes_equals_one_unsharded_process(tmp_path, tiny_models, synth_root):
    """2 processes x 2 micro-batches of 1 sample, sharded, train like 1 process with batches of 4."""
    from transformers import AutoModelForImageTextToText

    sharded = sft_config(tmp_path / "two", tiny_models(), synth_root, *SCHEDULE, "batch_size=1",
                         "gradient_accumulation_steps=2", "distributed.sharding=fsdp2")
    save_config(sharded, tmp_path / "c.yaml")
    launch_two_cpu_processes("dist_check.py", "sft", tmp_path / "report.json", tmp_path / "c.yaml", timeout=300)
    ranks = json.loads((tmp_path / "report.json").read_text())
    assert len(ranks) == 2 and all(r["changed"] for r in ranks) and ranks[0]["checksum"] == ranks[1]["checksum"]
    two = metrics(tmp_path / "two" / "sft")

    whole = SFTTrainer(sft_config(tmp_path / "one", tiny_models(), synth_root, *SCHEDULE, "batch_size=4"))
    whole.train()
    one = metrics(tmp_path / "one" / "sft")
    assert [m["optim/lr"] for m in one] == [m["optim/lr"] for m in two]
    assert [m["loss/sft"] for m in one] == pytest.approx([m["loss/sft"] for m in two], rel=1e-4)
    assert [m["optim/grad_norm"] for m in one] == pytest.approx([m["optim/grad_norm"] for m in two], rel=1e-3)
    checksum = float(sum(p.detach().double().sum() for p in whole.model.parameters()))
    assert checksum == pytest.approx(ranks[0]["checksum"], rel=1e-6)
    # the sharded run's checkpoint is a whole model that from_pretrained loads, equal to the trained weights
    saved = AutoModelForImageTextToText.from_pretrained(tmp_path / "two" / "sft" / "checkpoint-3")
    for (name, a), b in zip(saved.named_parameters(), whole.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


def test_fsdp2_sft_resume_is_exact(tmp_path, tiny_models, synth_root):
    """Sharded: 4 steps in one go, against 2 steps, then a second launch resumed from checkpoint-2."""
    # a constant schedule: the first launch's shorter max_steps would give a cosine another shape
    extra = ["batch_size=1", "distributed.sharding=fsdp2", "data.shuffle=false", "optim.scheduler=constant"]
    straight = sft_config(tmp_path / "a", tiny_models(), synth_root, "max_steps=4", "save_every=2", *extra)
    save_config(straight, tmp_path / "a.yaml")
    launch_two_cpu_processes("dist_check.py", "sft", tmp_path / "ra.json", tmp_path / "a.yaml", timeout=300)
    first = sft_config(tmp_path / "b", tiny_models(), synth_root, "max_steps=2", "save_every=2", *extra)
    save_config(first, tmp_path / "b1.yaml")
    launch_two_cpu_processes("dist_check.py", "sft", tmp_path / "rb1.json", tmp_path / "b1.yaml", timeout=300)
    second = load_config(SFTConfig, tmp_path / "b1.yaml", ["max_steps=4"])
    save_config(second, tmp_path / "b2.yaml")
    launch_two_cpu_processes("dist_check.py", "sft", tmp_path / "rb2.json", tmp_path / "b2.yaml", "resume",
                             timeout=300)
    a, b = metrics(tmp_path / "a" / "sft"), metrics(tmp_path / "b" / "sft")
    assert [m["step"] for m in b] == [1, 2, 3, 4]
    assert [m["loss/sft"] for m in a] == [m["loss/sft"] for m in b]
    assert json.loads((tmp_path / "ra.json").read_text()) == json.loads((tmp_path / "rb2.json").read_text())


def tgrpo_on_two_processes(tmp_path, model, synth_root, *overrides):
    """T-GRPO on 2 processes, DDP then FSDP2, from the same per-rank seeds: {sharding: (metrics, per-rank report)}."""
    from tests.test_train import TOY_REWARD, config

    runs = {}
    for sharding in ("none", "fsdp2"):
        cfg = config(tmp_path / sharding, model, synth_root, "max_steps=3", "save_every=3",
                     f'rewards=[{{name: "{TOY_REWARD}"}}, {{name: "tests.toy_rewards:varies_on_video_only"}}, '
                     '{name: accuracy}, {name: format}]', "algorithm.kl_coef=0.04", "generation.max_new_tokens=16",
                     "gradient_accumulation_steps=2", "algorithm.num_iterations=2", "prompts_per_device=2",
                     "algorithm.dynamic_sampling.enabled=true", "algorithm.dynamic_sampling.max_rounds=2",
                     f"distributed.sharding={sharding}", *overrides)
        save_config(cfg, tmp_path / f"{sharding}.yaml")
        launch_two_cpu_processes("dist_check.py", "rl", tmp_path / f"{sharding}.json", tmp_path / f"{sharding}.yaml",
                                 timeout=400)
        runs[sharding] = (metrics(tmp_path / sharding / "run"), json.loads((tmp_path / f"{sharding}.json").read_text()))
    return runs


def assert_same_training(runs):
    """The same samples (so exactly equal rollouts and rewards), and losses, norms and weights within float noise."""
    (ddp, ddp_ranks), (fsdp, fsdp_ranks) = runs["none"], runs["fsdp2"]
    for key in ("reward/total", "rollout/length", "rollout/shuffled_length", "rollout/extra_rounds", "data/prompts"):
        assert [m[key] for m in ddp] == [m[key] for m in fsdp], key
    assert any(m["rollout/shuffled_length"] for m in fsdp) and any(m["rollout/extra_rounds"] for m in fsdp)
    for key in ("loss/total", "loss/kl", "optim/grad_norm"):
        assert [m[key] for m in ddp] == pytest.approx([m[key] for m in fsdp], rel=1e-4, abs=1e-7), key
    assert fsdp_ranks[0]["checksum"] == fsdp_ranks[1]["checksum"]
    assert ddp_ranks[0]["checksum"] == pytest.approx(fsdp_ranks[0]["checksum"], rel=1e-6)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_fsdp2_tgrpo_equals_ddp_on_the_same_two_processes(tmp_path, tiny_models, synth_root, family):
    """T-GRPO on 2 processes, sharded and not: the same per-rank seeds sample the same rollouts (ordered and
    shuffled groups, images and videos, completions of different lengths, dynamic sampling with its own rounds
    on each rank, a sharded reference model for the KL), so losses, gradient norms and weights agree."""
    assert_same_training(tgrpo_on_two_processes(tmp_path, tiny_models(family), synth_root))


def test_fsdp2_tgrpo_with_lora_equals_ddp_and_saves_the_merged_model(tmp_path, tiny_models, synth_root):
    """LoRA on a sharded policy: the adapters start from rank 0's random init on every process (as DDP's do),
    the reference is the base with the adapter disabled, and the checkpoint's merged model and adapter, gathered
    from the shards, equal the DDP run's."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText

    runs = tgrpo_on_two_processes(tmp_path, tiny_models(), synth_root, "model.lora.enabled=true", "model.lora.r=4",
                                  "model.lora.dropout=0.0", "optim.lr=0.02")
    assert_same_training(runs)
    ddp, fsdp = (tmp_path / name / "run" / "checkpoint-3" for name in ("none", "fsdp2"))
    for name in ("adapter/adapter_model.safetensors", "model.safetensors"):
        a, b = load_file(ddp / name), load_file(fsdp / name)
        assert list(a) == list(b), name
        for key in a:  # float noise in the reductions' order, through 3 Adam steps at lr 0.02: ~1e-6
            torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5)
    adapter = load_file(fsdp / "adapter/adapter_model.safetensors")
    assert any("lora_B" in key and tensor.abs().max() > 0 for key, tensor in adapter.items())  # it trained
    merged = AutoModelForImageTextToText.from_pretrained(fsdp).eval()
    with_adapter = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(tiny_models()),
                                             fsdp / "adapter").eval()
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    with torch.no_grad():
        torch.testing.assert_close(with_adapter(input_ids=ids).logits, merged(input_ids=ids).logits,
                                   rtol=0, atol=1e-5)


def test_a_sharded_run_killed_while_it_saves_resumes_exactly(tmp_path, tiny_models, synth_root):
    """kill -9 of both processes as checkpoint-2 is being written: checkpoint-1 stays the newest complete one,
    and the resumed run logs exactly the steps of a run that was never killed."""
    from tests.launch import launch_and_kill
    from tests.test_train import TOY_REWARD, config
    from videor1.runlog import checkpoints

    settings = ["max_steps=3", "save_every=1", f'rewards=[{{name: "{TOY_REWARD}"}}, {{name: accuracy}}]',
                "distributed.sharding=fsdp2", "algorithm.kl_coef=0.04", "prompts_per_device=1"]
    straight = config(tmp_path / "a", tiny_models(), synth_root, *settings)
    save_config(straight, tmp_path / "a.yaml")
    launch_two_cpu_processes("dist_check.py", "rl", tmp_path / "ra.json", tmp_path / "a.yaml", timeout=300)

    killed = config(tmp_path / "b", tiny_models(), synth_root, *settings)
    save_config(killed, tmp_path / "b.yaml")
    run = tmp_path / "b" / "run"
    launch_and_kill("dist_check.py", "rl", tmp_path / "rb.json", tmp_path / "b.yaml",
                    when=lambda: (run / ".checkpoint-2.tmp").exists() or (run / "checkpoint-2").exists())
    assert checkpoints(run)[-1].name in ("checkpoint-1", "checkpoint-2")  # never a half-written one
    launch_two_cpu_processes("dist_check.py", "rl", tmp_path / "rb.json", tmp_path / "b.yaml", "resume", timeout=300)
    a, b = metrics(tmp_path / "a" / "run"), metrics(run)
    assert [m["step"] for m in b] == [1, 2, 3]
    for key in ("reward/total", "loss/total", "optim/grad_norm", "rollout/length"):
        assert [m[key] for m in a] == [m[key] for m in b], key
    assert json.loads((tmp_path / "ra.json").read_text()) == json.loads((tmp_path / "rb.json").read_text())
    assert not list(run.glob(".checkpoint-*.tmp"))


def test_fsdp2_sft_keeps_its_processes_in_step_when_a_micro_batch_fails_whole(tmp_path, tiny_models, synth_root):
    """Batches of one sample: the corrupt video leaves one process's micro-batch empty; it still takes part in
    the update (a zero-weight pass), the run finishes and the failure is counted and named."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synth_root, data)
    rows = json.loads((data / "train.json").read_text())
    index = next(i for i, r in enumerate(rows) if r["data_type"] == "video" and i >= 2)  # not the first batch
    bad = data / rows[index]["path"]
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    steps = index // 2 + 2  # 2 processes x 1 sample a step, unshuffled: the corrupt row is in step index // 2 + 1
    cfg = sft_config(tmp_path / "run", tiny_models(), data, f"max_steps={steps}", f"save_every={steps}",
                     "batch_size=1", "data.shuffle=false", "distributed.sharding=fsdp2",
                     "data.max_failure_fraction=0.5")
    save_config(cfg, tmp_path / "c.yaml")
    launch_two_cpu_processes("dist_check.py", "sft", tmp_path / "report.json", tmp_path / "c.yaml", timeout=300)
    ranks = json.loads((tmp_path / "report.json").read_text())
    assert ranks[0]["checksum"] == ranks[1]["checksum"]
    lines = metrics(tmp_path / "run" / "sft")
    assert len(lines) == steps and sum(m["data/skipped_media"] for m in lines) == 1
    failures = [json.loads(line) for line in (tmp_path / "run" / "sft" / "failures.jsonl").read_text().splitlines()]
    assert [f["path"] for f in failures] == [str(bad)]


def test_weights_pushed_from_a_sharded_policy_are_the_whole_model(tmp_path, tiny_models):
    launch_two_cpu_processes("dist_weights.py", tiny_models(), tmp_path / "out.txt", timeout=300)
    count, largest = map(int, (tmp_path / "out.txt").read_text().split())
    assert count > 10 and largest > 0


@pytest.mark.parametrize("setting", ["distributed.param_dtype=bfloat16", "distributed.reshard_after_forward=false"])
def test_fsdp2_sft_settings_train(tmp_path, tiny_models, synth_root, setting):
    """FSDP2's mixed precision and kept-gathered settings run end to end and keep the processes identical."""
    cfg = sft_config(tmp_path / "run", tiny_models(), synth_root, "max_steps=2", "save_every=2", "batch_size=1",
                     "distributed.sharding=fsdp2", setting)
    save_config(cfg, tmp_path / "c.yaml")
    launch_two_cpu_processes("dist_check.py", "sft", tmp_path / "report.json", tmp_path / "c.yaml", timeout=300)
    ranks = json.loads((tmp_path / "report.json").read_text())
    assert all(r["changed"] for r in ranks) and ranks[0]["checksum"] == ranks[1]["checksum"]
    lines = metrics(tmp_path / "run" / "sft")
    assert all(m["loss/sft"] > 0 and m["optim/grad_norm"] > 0 for m in lines)
