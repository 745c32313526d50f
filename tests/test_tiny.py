"""Tiny offline models: saved with save_pretrained, loaded back by the Auto classes like a hub checkpoint."""

import pytest
import torch

from videor1.models.load import load_model_and_processor, resolve_dtype
from videor1.models.tiny import FAMILIES, REASONING_TOKENS, SPECIAL_TOKENS, build_tiny, train_tokenizer


def test_tokenizer_keeps_qwen_specials_and_reasoning_tags_whole():
    tok = train_tokenizer(["the red square moves to the left"], vocab_size=400)
    for token in (*SPECIAL_TOKENS, *REASONING_TOKENS):
        assert tok.tokenize(token) == [token]
    text = "<think>Hmm, 3.5 then 1,000</think>\n<answer>B</answer>"
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text
    # specials are skipped when decoding, the reasoning tags are not
    assert tok.decode(ids + [tok.convert_tokens_to_ids("<|im_end|>")], skip_special_tokens=True) == text


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_model_round_trip(tmp_path, family):
    path = build_tiny(tmp_path / family, family=family, corpus=["a moving square"])
    model, processor = load_model_and_processor(path, dtype="float32")
    assert model.config.model_type == family
    assert sum(p.numel() for p in model.parameters()) < 2_000_000
    assert model.config.text_config.vocab_size >= len(processor.tokenizer)
    tok = processor.tokenizer
    assert model.config.video_token_id == tok.convert_tokens_to_ids("<|video_pad|>")
    assert model.config.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert model.generation_config.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    # the chat template renders a multimodal conversation with Qwen's markup
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Why?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    system = "" if family == "qwen3_vl" else "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    expected = system + "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>Why?<|im_end|>\n"
    assert text == expected + "<|im_start|>assistant\n"
    # text-only generation works and stops within the budget
    ids = tok(["<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"], return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] <= ids["input_ids"].shape[1] + 5


def test_same_seed_same_weights(tmp_path):
    a, _ = load_model_and_processor(build_tiny(tmp_path / "a", seed=1))
    b, _ = load_model_and_processor(build_tiny(tmp_path / "b", seed=1))
    c, _ = load_model_and_processor(build_tiny(tmp_path / "c", seed=2))
    wa, wb, wc = (next(m.parameters()) for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_unknown_family_and_dtype():
    with pytest.raises(ValueError, match="unknown family"):
        build_tiny("/nonexistent", family="llava")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("fp8")
    assert resolve_dtype("bfloat16") is torch.bfloat16
