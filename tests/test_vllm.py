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
from videor1.models.inputs import (  # noqa: E402
    SampleMedia,
    load_sample_media,
    processor_inputs,
    prompt_text,
    vision_factor,
)
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


def scorer_logprobs(model, processor, text, item, completions, temperature, top_p=1.0):
    """The HF scorer's log-probs of vLLM's completions: of the distribution sampled from when top_p < 1."""
    inputs = hf_inputs(processor, text, item)
    owners = [0] * completions.ids.shape[0]
    scorer = CompletionScorer(model, engine_suppressed(processor))
    with torch.no_grad():
        scores = scorer(inputs, completions.ids, completions.mask, owners, temperature=temperature, top_p=top_p)
    return scores.logp if scores.sampled_logp is None else scores.sampled_logp


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


def fractional_fps_video(processor):
    """8 frames sampled at 1.2 fps (every 5th frame of a 6 fps clip): 5/3 s per temporal patch."""
    from pathlib import Path

    from videor1.data.media import DecodedVideo

    side = 64 if "Qwen3" in type(processor).__name__ else 56
    frames = torch.randint(0, 255, (8, 3, side, side), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    indices = list(range(0, 40, 5))
    return SampleMedia(video=DecodedVideo(
        frames=frames, frame_indices=indices, timestamps=[i / 6 for i in indices], video_fps=6.0, total_frames=40,
        duration=40 / 6, sample_fps=1.2, path=Path("fractional.mp4"),
    ))


def test_positions_at_fractional_seconds_per_grid_are_the_released_ones(family_setup):
    family, model, processor, texts, _, engine = family_setup
    media = fractional_fps_video(processor)
    inputs = hf_inputs(processor, texts[1], media)
    keys = ("input_ids", "mm_token_type_ids", "video_grid_thw", "second_per_grid_ts", "attention_mask")
    expected, _ = model.model.get_rope_index(**{k: inputs[k] for k in keys if k in inputs})  # the HF path's rule
    vmodel = engine.llm.llm_engine.model_executor.driver_worker.model_runner.get_model()
    installed = vmodel.get_mrope_input_positions
    captured = {}

    def capture(tokens, features):
        captured["args"] = (tokens, features)
        captured["positions"] = installed(tokens, features)[0]
        return installed(tokens, features)

    vmodel.get_mrope_input_positions = capture
    try:
        engine.llm.reset_prefix_cache()
        engine.generate([texts[1]], [media], SamplingParams(max_new_tokens=1, temperature=0.0))
    finally:
        vmodel.get_mrope_input_positions = installed
    assert torch.equal(captured["positions"], expected[:, 0]), family
    if family == "qwen2_5_vl":
        is_video = inputs["input_ids"][0] == model.config.video_token_id
        # 1.2 fps: 5/3 s per grid; the tiny config keeps transformers' default of 4 tokens per second, so
        # τ = ⌊t · 5/3 · 4⌋ = 0, 6, 13, 20 (float32, as released)
        assert model.config.vision_config.tokens_per_second == 4
        start = int(expected[1, 0][is_video].min())
        assert (expected[0, 0][is_video].unique() - start).tolist() == [0, 6, 13, 20]
        # vLLM's own rule floors 3 · 1.6666666 · 4 = 19.9999995 in float64: 19, below the released 20
        native, _ = type(vmodel).get_mrope_input_positions(vmodel, *captured["args"])
        assert (native[0][is_video].unique() - start).tolist() == [0, 6, 13, 19]
    # and the engine's log-probs on this video still equal the scorer's
    params = SamplingParams(max_new_tokens=6, temperature=0.7)
    eos = eos_token_ids(model, processor.tokenizer)
    completions = engine.completions([texts[1]], [media], params, n=3, eos_ids=eos, seed=5)
    logp = scorer_logprobs(model, processor, texts[1], media, completions, params.temperature)
    assert float(((logp - completions.logprobs).abs() * completions.mask).max()) < 1e-4, family


def test_at_top_p_095_the_engines_agree_on_the_distribution_sampled_from(family_setup):
    """vLLM reports log-probs after top-p; the trainer's own of that distribution match them to float noise."""
    family, model, processor, texts, media, engine = family_setup
    params = SamplingParams(max_new_tokens=8, temperature=1.0, top_p=0.95)
    eos = eos_token_ids(model, processor.tokenizer)
    for text, item in zip(texts, media, strict=True):
        completions = engine.completions([text], [item], params, n=6, eos_ids=eos, seed=11)
        mask = completions.mask.bool()
        truncated = scorer_logprobs(model, processor, text, item, completions, 1.0, top_p=0.95)
        full = scorer_logprobs(model, processor, text, item, completions, 1.0)
        assert torch.isfinite(truncated[mask]).all(), family  # every token vLLM drew is in the trainer's nucleus
        assert float((truncated - completions.logprobs).abs()[mask].max()) < 1e-4, family
        # against the full softmax the gap is the nucleus's missing mass, as large as a failed weight push
        assert float((full - completions.logprobs).abs()[mask].mean()) > 1e-2, family
