"""`videor1 train` with the vLLM engine on a tiny model (runs in the vLLM venv: -m vllm).

The engine samples the ordered and the shuffled groups from the trainer's own prompt texts and decoded
frames, its weights follow the policy after every optimizer step, and the gap between its sampling log-probs
and the trainer's (logged every step) stays at float noise: a stale engine would show the step's update
(about 1e-2 and more at lr 1e-3), a misplaced prompt far more.
"""

import json

import pytest

pytest.importorskip("vllm")

from tests.test_train import REQUIRED, config  # noqa: E402
from videor1.rl.trainer import GRPOTrainer  # noqa: E402

pytestmark = pytest.mark.vllm


@pytest.mark.parametrize(("family", "top_p"), [("qwen2_5_vl", 1.0), ("qwen3_vl", 1.0), ("qwen2_5_vl", 0.95)])
def test_tgrpo_with_the_vllm_engine_stays_on_policy(tmp_path, tiny_models, synth_root, family, top_p):
    # top_p 0.95 (the 7B config's): the gap and the weights compare the truncated distributions, so they stay at
    # float noise too; against the full softmax the gap would be the nucleus's missing mass (tests/test_vllm.py)
    cfg = config(tmp_path, tiny_models(family), synth_root, "generation.engine=vllm",
                 "generation.vllm.enforce_eager=true", "generation.vllm.importance_cap=2.0", "max_steps=3",
                 f"generation.top_p={top_p}")
    trainer = GRPOTrainer(cfg)
    trainer.train()
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2, 3]
    for line in lines:
        assert not [k for k in REQUIRED if k not in line], line
        assert line["rollout/prompt_mismatches"] == 0
        # steps 2 and 3 sample from weights pushed after the previous update
        assert line["engine/logprob_gap_max"] < 1e-3, line
        assert line["engine/logprob_gap_mean"] < 1e-4, line
        assert line["engine/importance_weight"] == pytest.approx(1.0, abs=1e-3)
        assert line["engine/outside_nucleus"] == 0
    assert any(m["temporal/p"] is not None for m in lines)  # the shuffled group was sampled by vLLM too
    assert any(m["optim/grad_norm"] > 0 for m in lines[:-1])  # the weights pushed into vLLM did change


def test_lora_adapters_reach_the_engine_merged(tmp_path, tiny_models, synth_root):
    # LoRA B starts at zero: a large lr makes the adapters matter after one update, so a push that dropped
    # them (or the base weights' names under peft) would show in the next steps' gap
    cfg = config(tmp_path, tiny_models(), synth_root, "generation.engine=vllm", "generation.vllm.enforce_eager=true",
                 "model.lora.enabled=true", "model.lora.r=4", "model.lora.dropout=0.0", "optim.lr=0.05",
                 "max_steps=3", 'rewards=[{name: "tests.toy_rewards:prefers_short"}, {name: accuracy}]',
                 "algorithm.temporal=false")
    trainer = GRPOTrainer(cfg)
    trainer.train()
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any(m["optim/grad_norm"] > 0 for m in lines[:-1])
    assert all(m["engine/logprob_gap_max"] < 1e-3 for m in lines), lines


# B starts at zero and a large lr makes the adapters matter after one update; a reward that varies gives a signal
LORA = ["model.lora.enabled=true", "model.lora.r=4", "model.lora.dropout=0.0", "optim.lr=0.05",
        'rewards=[{name: "tests.toy_rewards:prefers_short"}, {name: accuracy}]']


@pytest.mark.parametrize(("sharding", "lora"), [("none", False), ("fsdp2", False), ("fsdp2", True)])
def test_tgrpo_with_the_vllm_engine_on_two_processes(tmp_path, tiny_models, synth_root, sharding, lora):
    """Each process's colocated engine joins the launch's process group and takes the weights pushed after every
    update, gathered whole from the FSDP2 shards (or DDP's replica; a LoRA policy's merged from its sharded
    adapters): the gap to the trainer's log-probs stays at float noise on both processes (the logged maximum is
    over both), and the run ends with its group intact."""
    from tests.launch import launch_two_cpu_processes
    from videor1.config import save_config

    cfg = config(tmp_path, tiny_models(), synth_root, "generation.engine=vllm", "generation.vllm.enforce_eager=true",
                 "generation.vllm.importance_cap=2.0", "max_steps=3", "save_every=3", "algorithm.kl_coef=0.04",
                 f"distributed.sharding={sharding}", *(LORA if lora else []))
    save_config(cfg, tmp_path / "run.yaml")
    launch_two_cpu_processes("dist_check.py", "rl", tmp_path / "ranks.json", tmp_path / "run.yaml", timeout=500)
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2, 3]
    for line in lines:
        assert line["rollout/prompt_mismatches"] == 0
        assert line["engine/logprob_gap_max"] < 1e-3, line
        assert line["engine/logprob_gap_mean"] < 1e-4, line
    assert any(m["temporal/p"] is not None for m in lines)
    assert any(m["optim/grad_norm"] > 0 for m in lines[:-1])  # the pushed weights did change
    ranks = json.loads((tmp_path / "ranks.json").read_text())
    assert ranks[0]["checksum"] == ranks[1]["checksum"] and ranks[0]["changed"]


def test_an_engine_on_each_of_two_processes_follows_an_fsdp2_policy(tmp_path, tiny_models, synth_root):
    """Directly: after a change to the sharded weights, each process's engine is stale (log-probs 1e-2 and more
    away from the sharded scorer's) until the push, then equal to float noise."""
    from tests.launch import launch_two_cpu_processes

    launch_two_cpu_processes("dist_vllm.py", tiny_models(), synth_root, tmp_path / "gaps.txt", timeout=300)
    for before, stale, after in (map(float, line.split()) for line in (tmp_path / "gaps.txt").read_text().splitlines()):
        assert before < 1e-4 and after < 1e-4 and stale > 1e-2, (before, stale, after)
