"""The streamed LoRA merge equals peft's own `merge_and_unload`, weight for weight, in float32 and bfloat16."""

import copy

import pytest
import torch

from videor1.models.load import load_model, prepare_for_training, unwrap_peft
from videor1.models.lora_weights import adapted_layers, adapter_state, lora_delta, merge_delta, merged_weights


def lora_model(path, dtype):
    model = prepare_for_training(load_model(path, dtype=dtype), freeze_vision=True, gradient_checkpointing=False,
                                 lora_r=4, lora_alpha=8, lora_dropout=0.0, lora_targets=["q_proj", "down_proj"])
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # B starts at zero: give the adapters something to merge
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator).to(p.dtype))
    return model


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_streamed_merge_equals_peft_merge_and_unload(tiny_models, dtype):
    model = lora_model(tiny_models(), dtype)
    layers = adapted_layers(unwrap_peft(model))
    assert len(layers) == 2 * model.config.text_config.num_hidden_layers  # language model only: q_proj, down_proj
    assert {layer.scale for layer in layers.values()} == {2.0}  # alpha / r
    expected = copy.deepcopy(model).merge_and_unload().state_dict()
    seen = []
    merged = dict(merged_weights(unwrap_peft(model).state_dict(), layers, whole=lambda t: seen.append(t) or t))
    assert list(merged) == list(expected)  # the plain model's names, in its order
    for name, tensor in expected.items():
        assert merged[name].dtype == tensor.dtype and torch.equal(merged[name], tensor), name
    base = unwrap_peft(model).state_dict()
    assert all(not torch.equal(merged[f"{n}.weight"], base[f"{n}.base_layer.weight"]) for n in layers)
    # every stored tensor but the adapters' passes through `whole` once; each adapted one with its A and B
    assert len(seen) == len(expected) + 2 * len(layers)


def test_delta_is_scale_times_b_a_and_the_merge_rounds_once():
    a = torch.tensor([[1.0, 2.0], [0.5, -1.0]])  # r=2, in=2
    b = torch.tensor([[1.0, 0.0], [2.0, 1.0], [0.0, -1.0]])  # out=3
    # B·A = [[1, 2], [2.5, 3], [-0.5, 1]]; times 0.5
    expected = torch.tensor([[0.5, 1.0], [1.25, 1.5], [-0.25, 0.5]])
    assert torch.equal(lora_delta(a, b, 0.5), expected)
    assert lora_delta(a.bfloat16(), b.bfloat16(), 0.5).dtype == torch.bfloat16
    # a bf16 weight (step 2 at 256) and a float32 delta of 1.0039: 257.0039 in float32 rounds to 258 in bf16;
    # rounding the delta to bf16 first (1.0) would give 257, a tie, which rounds to even: 256
    weight = torch.tensor([256.0], dtype=torch.bfloat16)
    assert merge_delta(weight, torch.tensor([1.0039])).item() == 258.0
    assert merge_delta(weight, torch.tensor([1.0039]).bfloat16()).item() == 256.0


def test_adapter_state_keeps_only_the_adapters(tiny_models):
    model = lora_model(tiny_models(), "float32")
    state = adapter_state(unwrap_peft(model).state_dict())
    assert state and all(".lora_A." in n or ".lora_B." in n for n in state)
