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
