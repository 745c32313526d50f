"""One generation module: the distribution rollouts sample from is the one RL scores, whatever the checkpoint ships.

Real Qwen chat checkpoints carry sampling settings in generation_config.json (repetition_penalty 1.05, top_k,
top_p, temperature). HF `generate` merges them into every call, so rollouts drew from a distribution that
`CompletionScorer` (softmax(logits / temperature)) does not model. Here each tiny family gets a checkpoint
with settings that clearly change the distribution; sampling through `videor1.models.generation` must still
give exactly the scorer's log-probs, while a plain `generate` (the bug) must not.
"""

import json
import logging
import shutil

import pytest
import torch

from tests.batches import MEDIA, mixed_batch
from videor1.data.dataset import load_dataset
from videor1.models.generation import (
    SamplingParams,
    build_generation_config,
    completion_mask,
    eos_token_ids,
    generate_completions,
    suppressed_token_ids,
)
from videor1.models.inputs import load_sample_media, processor_inputs, prompt_text, vision_factor
from videor1.models.load import load_model_and_processor
from videor1.models.tiny import FAMILIES
from videor1.rl.logprobs import CompletionScorer

G = 3
OWNERS = [p for p in range(3) for _ in range(G)]
TEMPERATURE = 0.7
# what a checkpoint might ship, exaggerated so that any leak shows up far above float noise
CHECKPOINT_SAMPLING = {"repetition_penalty": 1.5, "top_k": 2, "top_p": 0.5, "temperature": 0.3,
                       "no_repeat_ngram_size": 2}


@pytest.fixture(scope="module", params=FAMILIES)
def checkpoint(request, tiny_models, tmp_path_factory):
    """A copy of the tiny checkpoint whose generation_config.json carries CHECKPOINT_SAMPLING."""
    path = tmp_path_factory.mktemp(f"leaky_{request.param}") / "model"
    shutil.copytree(tiny_models(request.param), path)
    config = json.loads((path / "generation_config.json").read_text())
    (path / "generation_config.json").write_text(json.dumps({**config, **CHECKPOINT_SAMPLING}))
    return path


@pytest.fixture(scope="module")
def setup(checkpoint, synth_root):
    model, processor, inputs = mixed_batch(checkpoint, synth_root)
    assert model.generation_config.repetition_penalty == 1.5  # the settings did load
    return model, processor, inputs


def score(model, processor, inputs, ids, mask):
    """The trainer's scorer: vision placeholders, which the sampler never emits, are out of its softmax too."""
    scorer = CompletionScorer(model, suppressed_token_ids(processor.tokenizer))
    with torch.no_grad():
        logp = scorer(dict(inputs), ids, mask, OWNERS, temperature=TEMPERATURE).logp
    return logp  # [N, T]


def test_sampler_log_probs_equal_the_scorer_despite_the_checkpoint_settings(setup):
    model, processor, inputs = setup
    params = SamplingParams(max_new_tokens=10, temperature=TEMPERATURE, top_p=1.0, top_k=None)
    torch.manual_seed(0)
    completions = generate_completions(model, processor.tokenizer, inputs, params, num_generations=G,
                                       return_logprobs=True)
    assert completions.logprobs is not None and completions.logprobs.shape == completions.ids.shape
    logp = score(model, processor, inputs, completions.ids, completions.mask)
    assert ((logp - completions.logprobs).abs() * completions.mask).max() < 1e-4
    assert (completions.logprobs[completions.mask == 0] == 0).all()


def test_plain_generate_samples_from_the_checkpoint_settings(setup):
    """Negative control: the bug this module fixes, so the test above has teeth."""
    model, processor, inputs = setup
    torch.manual_seed(0)
    out = model.generate(
        **inputs, do_sample=True, temperature=TEMPERATURE, top_p=1.0, top_k=0, max_new_tokens=10,
        num_return_sequences=G, eos_token_id=eos_token_ids(model, processor.tokenizer),
        pad_token_id=processor.tokenizer.pad_token_id, output_scores=True, return_dict_in_generate=True,
    )
    ids = out.sequences[:, inputs["input_ids"].shape[1]:]  # [N, T]
    mask = completion_mask(ids, eos_token_ids(model, processor.tokenizer))  # [N, T]
    sampled = torch.stack(out.scores, 1).log_softmax(-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)  # [N, T]
    # the repetition penalty renormalises every step over tokens of the prompt: far off the scorer's numbers
    assert ((score(model, processor, inputs, ids, mask) - sampled).abs() * mask).max() > 1e-2


def test_ignored_checkpoint_settings_are_logged_once_per_model(checkpoint, synth_root, caplog):
    model, processor = load_model_and_processor(checkpoint, dtype="float32")  # fresh: never warned about
    sample = load_dataset(synth_root / "train.json", synth_root).samples[0]
    inputs = processor_inputs(processor, [prompt_text(processor, sample)],
                              [load_sample_media(sample, MEDIA, vision_factor(processor))])
    params = SamplingParams(max_new_tokens=2, temperature=1.0)
    with caplog.at_level(logging.WARNING, logger="videor1.generation"):
        for _ in range(2):
            generate_completions(model, processor.tokenizer, inputs, params, num_generations=2)
    warnings = [r.getMessage() for r in caplog.records if r.name == "videor1.generation"]
    assert len(warnings) == 1
    for key, value in CHECKPOINT_SAMPLING.items():
        assert f"{key}={value!r}" in warnings[0]
    assert model.generation_config.repetition_penalty == 1.5  # the model's own config is restored afterwards


def test_a_checkpoint_without_sampling_settings_logs_nothing(tiny_models, synth_root, caplog):
    model, processor = load_model_and_processor(tiny_models(), dtype="float32")  # token ids and use_cache only
    sample = load_dataset(synth_root / "train.json", synth_root).samples[0]
    inputs = processor_inputs(processor, [prompt_text(processor, sample)],
                              [load_sample_media(sample, MEDIA, vision_factor(processor))])
    with caplog.at_level(logging.WARNING, logger="videor1.generation"):
        generate_completions(model, processor.tokenizer, inputs, SamplingParams(2), num_generations=2)
    assert not [r for r in caplog.records if r.name == "videor1.generation"]


def test_greedy_rollouts_are_refused(setup):
    model, processor, inputs = setup
    with pytest.raises(ValueError, match="temperature"):
        generate_completions(model, processor.tokenizer, inputs, SamplingParams(4, temperature=0.0), num_generations=2)


def built(params, **kwargs):
    config = build_generation_config(params, eos_token_id=[2, 3], pad_token_id=0, suppress_tokens=[7], **kwargs)
    return {k: v for k, v in config.to_diff_dict().items() if k != "transformers_version"}


COMMON = {"max_new_tokens": 8, "num_return_sequences": 1, "eos_token_id": [2, 3], "pad_token_id": 0,
          "suppress_tokens": [7], "use_cache": True, "return_dict_in_generate": True, "output_scores": False}


def test_built_arguments_hold_exactly_our_knobs():
    # greedy: no sampling knobs at all, but the repetition penalty (a logits processor) still applies
    assert built(SamplingParams(8, temperature=0.0, top_p=0.5, top_k=4, repetition_penalty=1.2)) == {
        **COMMON, "do_sample": False, "repetition_penalty": 1.2,
    }
    # top_k None is 0, i.e. off: left unset, transformers would apply its global default of 50
    assert built(SamplingParams(8, temperature=0.7, top_p=0.9)) == {
        **COMMON, "do_sample": True, "temperature": 0.7, "top_p": 0.9, "top_k": 0, "repetition_penalty": 1.0,
    }
    assert built(SamplingParams(8, temperature=1.0, top_k=5), num_return_sequences=4, output_scores=True) == {
        **COMMON, "num_return_sequences": 4, "output_scores": True,
        "do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": 5, "repetition_penalty": 1.0,
    }


@pytest.mark.parametrize("bad", [
    {"max_new_tokens": 0}, {"temperature": -0.1}, {"top_p": 0.0}, {"top_k": 0}, {"repetition_penalty": 0.0},
])
def test_sampling_params_reject_out_of_range_values(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        SamplingParams(**{"max_new_tokens": 4, **bad})
