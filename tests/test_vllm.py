"""The vLLM engine against the HF path on tiny models of all three families (runs in the vLLM venv: -m vllm).

Prompt alignment is checked, not assumed: vLLM's expanded prompt ids equal the HF processor's, greedy
completions are identical, and vLLM's sampling log-probs equal the HF scorer's, before and after the policy's
weights are pushed into the running engine. Tolerance 1e-4 on log-probs: both sides run fp32 on the CPU, and
the measured gap is about 5e-6 (different kernels summing in different orders); a weight that failed to load,
a stale cache or a misplaced position would show as 1e-2 or more.
"""

import pytest

vllm = pytest.importorskip("vllm")

import torch  # noqa: E402

from videor1.config import MediaConfig  # noqa: E402
from videor1.data.dataset import load_dataset  # noqa: E402
from videor1.models.generation import SamplingParams, eos_token_ids, generate_from_inputs  # noqa: E402
from videor1.models.inputs import load_sample_media, processor_inputs, prompt_text, vision_factor  # noqa: E402
from videor1.models.load import load_model_and_processor  # noqa: E402
from videor1.models.vllm_engine import VLLMEngine, VLLMSettings, policy_weights  # noqa: E402
from videor1.rl.logprobs import CompletionScorer  # noqa: E402

pytestmark = pytest.mark.vllm

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
# 4 frames of 56x56 (the tiny processors' factor: 28, or 32 for Qwen3-VL) and 112x112 images; the synthetic
# clips are 8 frames at 4 fps, so at 2 fps the videos' scaled time outgrows their 2x2 grid, where vLLM's own
# M-RoPE rule and transformers 5's part
MEDIA = MediaConfig(fps=2.0, min_frames=4, max_frames=4, video_min_pixels=3136, video_max_pixels=3136,
                    image_min_pixels=12544, image_max_pixels=12544)


@pytest.fixture(scope="module", params=FAMILIES)
def family_setup(request, tiny_models, synth_root):
    """One engine per family, with its HF model, processor and an image and a video prompt."""
    path = tiny_models(request.param)
    model, processor = load_model_and_processor(path, dtype="float32")
    samples = load_dataset(synth_root / "train.json", synth_root).samples
    chosen = [next(s for s in samples if not s.is_video), next(s for s in samples if s.is_video)]
    media = [load_sample_media(s, MEDIA, vision_factor(processor)) for s in chosen]
    texts = [prompt_text(processor, s) for s in chosen]
    engine = VLLMEngine(path, processor, dtype="float32", seed=0, settings=VLLMSettings(enforce_eager=True))
    yield request.param, model, processor, texts, media, engine
    engine.close()


def hf_inputs(processor, text, media):
    return processor_inputs(processor, [text], [media])


def test_prompt_ids_and_greedy_completions_equal_the_hf_path(family_setup):
    family, model, processor, texts, media, engine = family_setup
    greedy = SamplingParams(max_new_tokens=8, temperature=0.0)
    for text, item in zip(texts, media, strict=True):
        inputs = hf_inputs(processor, text, item)
        expected = inputs["input_ids"][0][inputs["attention_mask"][0].bool()].tolist()
        out = engine.generate([text], [item], greedy)[0]
        assert list(out.prompt_token_ids) == expected, family
        hf_text = generate_from_inputs(model, processor.tokenizer, inputs, greedy)[0][0].text
        assert engine.texts([text], [item], greedy) == [hf_text], family
    engine.check_prompts(texts, media, [hf_inputs(processor, t, m)["input_ids"][0].tolist() for t, m in
                                        zip(texts, media, strict=True)])


def scorer_logprobs(model, processor, text, item, completions, temperature):
    inputs = hf_inputs(processor, text, item)
    owners = [0] * completions.ids.shape[0]
    scorer = CompletionScorer(model, engine_suppressed(processor))
    with torch.no_grad():
        logp, _ = scorer(inputs, completions.ids, completions.mask, owners, temperature=temperature)
    return logp


def engine_suppressed(processor):
    from videor1.models.generation import suppressed_token_ids

    return suppressed_token_ids(processor.tokenizer)


def test_sampling_logprobs_follow_the_weights_pushed_into_the_engine(family_setup):
    family, model, processor, texts, media, engine = family_setup
    params = SamplingParams(max_new_tokens=8, temperature=0.7)
    eos = eos_token_ids(model, processor.tokenizer)
    text, item = texts[1], media[1]  # the video prompt

    def gap() -> float:
        completions = engine.completions([text], [item], params, n=4, eos_ids=eos, seed=7)
        logp = scorer_logprobs(model, processor, text, item, completions, params.temperature)
        return float(((logp - completions.logprobs).abs() * completions.mask).max())

    assert gap() < 1e-4, family
    original = {name: p.detach().clone() for name, p in model.named_parameters()}
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # an optimizer step's worth of change on every weight of the language model
        for name, p in model.named_parameters():
            if "visual" not in name and p.dim() == 2:
                p.add_(torch.randn(p.shape, generator=generator) * 0.02)
    try:
        stale = gap()
        engine.load_weights(policy_weights(model))
        assert gap() < 1e-4, family
        assert stale > 1e-2  # the check would catch weights that did not follow
    finally:
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(original[name])
        engine.load_weights(policy_weights(model))
