"""A LoRA run's checkpoint holds the merged model and peft's adapter; `videor1 export --merge` rebuilds the former."""

import json

import pytest
import torch
from typer.testing import CliRunner

from videor1.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_models, synth_root):
    """(starting model, final checkpoint) of a 2-step LoRA SFT run."""
    from tests.test_sft import sft_config
    from videor1.sft.trainer import SFTTrainer

    base = tiny_models()
    cfg = sft_config(tmp_path_factory.mktemp("lora"), base, synth_root, "max_steps=2", "save_every=2",
                     "model.lora.enabled=true", "model.lora.r=4", "model.freeze_vision=true", "optim.lr=0.01")
    return base, SFTTrainer(cfg).train()


def logits(model, processor):
    ids = processor.tokenizer(["<|im_start|>user\nwhat happens first?<|im_end|>\n"], return_tensors="pt")
    with torch.no_grad():
        return model(**ids).logits


def load(path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    return AutoModelForImageTextToText.from_pretrained(path).eval(), AutoProcessor.from_pretrained(path)


def test_lora_checkpoint_holds_the_peft_adapter_beside_the_merged_model(lora_run):
    from peft import PeftModel

    base, checkpoint = lora_run
    adapter = checkpoint / "adapter"
    assert (adapter / "adapter_model.safetensors").exists()
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(base)
    merged, processor = load(checkpoint)  # the checkpoint still loads as a plain model
    expected = logits(merged, processor)
    start, _ = load(base)
    assert not torch.allclose(logits(start, processor), expected, atol=1e-4)  # the adapter changed something
    with_adapter = PeftModel.from_pretrained(start, adapter).eval()
    torch.testing.assert_close(logits(with_adapter, processor), expected, rtol=0, atol=1e-5)


def test_export_merge_writes_a_plain_checkpoint_equal_to_the_merged_one(lora_run, tmp_path):
    _, checkpoint = lora_run
    out = tmp_path / "exported"
    result = runner.invoke(app, ["export", str(checkpoint), str(out), "--merge"])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.stderr
    assert not (out / "adapter").exists() and not (out / "state").exists()
    assert not list(tmp_path.glob(".exported*"))  # the temporary folder was renamed, not left
    exported, processor = load(out)
    merged, _ = load(checkpoint)
    torch.testing.assert_close(logits(exported, processor), logits(merged, processor), rtol=0, atol=1e-5)


def test_export_merges_a_bare_adapter_folder_onto_the_base_given(lora_run, tmp_path):
    base, checkpoint = lora_run
    out = tmp_path / "bare"
    result = runner.invoke(app, ["export", str(checkpoint / "adapter"), str(out), "--merge", "--base", str(base)])
    assert result.exit_code == 0, result.output
    exported, processor = load(out)
    merged, _ = load(checkpoint)
    torch.testing.assert_close(logits(exported, processor), logits(merged, processor), rtol=0, atol=1e-5)


def error_line(result):
    lines = [line for line in result.output.splitlines() if not line.startswith("(videor1 --debug")]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    return lines[0]


def test_export_input_errors_are_one_line_and_exit_2(lora_run, tiny_models, tmp_path):
    _, checkpoint = lora_run
    plain = tiny_models()  # a model folder without an adapter
    line = error_line(runner.invoke(app, ["export", str(plain), str(tmp_path / "a"), "--merge"]))
    assert "nothing to merge" in line and not (tmp_path / "a").exists()

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    line = error_line(runner.invoke(app, ["export", str(checkpoint), str(taken), "--merge"]))
    assert "--force" in line and (taken / "keep.txt").read_text() == "mine"

    line = error_line(runner.invoke(app, ["export", str(checkpoint / "adapter"), str(tmp_path / "b")]))
    assert "--merge" in line

    result = runner.invoke(app, ["export", str(checkpoint), str(taken), "--merge", "--force"])
    assert result.exit_code == 0, result.output
    assert not (taken / "keep.txt").exists() and (taken / "config.json").exists()
