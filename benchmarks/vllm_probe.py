"""Probe vLLM (the CPU build, engine in this process) against the project's HF path on tiny Qwen-VL models.

A research script for the vLLM generation engine. For Qwen2-VL, Qwen2.5-VL and Qwen3-VL (each in its own
subprocess, so every engine starts in a fresh process), with media decoded by `videor1.data.media` under small
budgets (an image; 4- and 8-frame videos; 28x28 cases below the processors' min_pixels, which show whether vLLM
resizes) and prompts from `videor1.models.inputs.prompt_text`:
  a. candidate `multi_modal_data` / `mm_processor_kwargs` forms for each item;
  b. per form: vLLM's prompt ids after placeholder expansion vs the HF processor's `input_ids`
     (`processor_inputs`), vLLM's M-RoPE positions vs HF's `position_ids`, and vLLM's vision-encoder output vs
     HF's `get_image_features` / `get_video_features`;
  c. greedy completions (vLLM, with and without a -100 logit bias on the vision tokens, vs the project's
     `generate_from_inputs`), and n=8 sampled completions whose sampler log-probs (`SamplingParams(logprobs=0)`,
     engine `logprobs_mode="processed_logprobs"`) are compared with `videor1.rl.logprobs.CompletionScorer`;
     then again with vLLM's Qwen2.5-VL positions computed by the HF path's released rule (the engine's
     `videor1.models.vllm_engine.released_mrope_positions`, which differs from vLLM's own only at fractional
     seconds per grid);
  d. a fixed completion scored by vLLM (`prompt_logprobs=0`) vs the HF model, before and after an in-place
     weight update (`LLM.collective_rpc("reload_weights", kwargs={"weights_iterator": ...})`, the in-process
     worker's `reload_weights`, a full state dict, and a plain `model.load_weights`), and what a stale prefix
     cache does to sampled log-probs;
  e. the time and memory of `LLM(...)` and of the weight push.

Run it with the vLLM venv's python (see constraints-vllm.txt); tiny models and synthetic data go under --work
(default /tmp/vllm-probe), never into the repository:

    .venv-vllm/bin/python benchmarks/vllm_probe.py --eager           # all three families, about 1 minute
    .venv-vllm/bin/python benchmarks/vllm_probe.py --family qwen3_vl --device-normalize

vLLM's torch.compile cache goes under VLLM_CACHE_ROOT (default ~/.cache/vllm).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

# must be set before vllm is imported: engine core in this process, a small KV cache
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
MAX_TOKENS = 8
NUM_SAMPLES = 8
SAMPLE_TEMPERATURE = 0.7  # not 1, so a log-prob that ignored the temperature would show
FIXED_COMPLETION = "<think>Let me think. The answer is A.</think><answer>A</answer>"


def rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------------------------
# data and models (the project's own tools)


def prepare(work: Path) -> None:
    """Synthetic data (`videor1 data synth --n 8 --seed 0`) and one tiny model per family, once."""
    from videor1.data.synthetic import generate
    from videor1.models.tiny import build_tiny

    synth = work / "synth"
    if not (synth / "train.json").exists():
        generate(synth, n=8, seed=0)
    for family in FAMILIES:
        out = work / "tiny" / family
        if not (out / "config.json").exists():
            build_tiny(out, family=family, seed=0)  # type: ignore[arg-type]


def media_config(frames: int = 4, pixels: int | None = None) -> Any:
    from videor1.config import MediaConfig

    # `frames` frames at 2 fps per 4 frames (the synthetic clips are 8 frames at 4 fps, 2 s); by default 56x56
    # video frames (3136 px; 32x32 for Qwen3-VL, whose factor is 32) and 112x112 images (12544 px; 96x96 for
    # Qwen3-VL); `pixels` sets both budgets
    video, image = (pixels, pixels) if pixels else (3136, 12544)
    return MediaConfig(
        fps=frames / 2.0, min_frames=4, max_frames=frames, video_min_pixels=video, video_max_pixels=video,
        image_min_pixels=image, image_max_pixels=image,
    )


# media kind -> (data type of the sample, frames sampled, pixel budget). The 784-pixel cases (28x28, 32x32 for
# Qwen3-VL) lie under the tiny processors' min_pixels (3136), so a processor allowed to resize would change them.
CASES: dict[str, tuple[str, int, int | None]] = {
    "image": ("image", 4, None), "image28": ("image", 4, 784),
    "video": ("video", 4, None), "video8": ("video", 8, None), "video28": ("video", 4, 784),
}


def pick_samples(work: Path) -> dict[str, Any]:
    from videor1.data.dataset import load_dataset

    loaded = load_dataset(work / "synth" / "train.json", work / "synth")
    image = next(s for s in loaded.samples if not s.is_video)
    video = next(s for s in loaded.samples if s.is_video)
    return {"image": image, "video": video}


# ------------------------------------------------------------------------------------------------
# vLLM request forms


def video_item(video: Any, *, with_metadata: bool = True) -> Any:
    """A decoded video as vLLM takes it: (frames [T, H, W, 3] uint8 numpy, metadata dict) or frames alone."""
    from videor1.models.inputs import video_metadata

    frames = video.frames.permute(0, 2, 3, 1).contiguous().numpy()  # [F, 3, H, W] -> [F, H, W, 3]
    if not with_metadata:
        return frames
    metadata = dict(video_metadata(video))  # total_num_frames, fps (source), frames_indices, duration, size
    metadata["do_sample_frames"] = False  # read by vLLM's Qwen3-VL processor (timestamps) and dropped for HF
    return frames, metadata


def request_forms(kind: str, media: Any) -> dict[str, dict[str, Any]]:
    """Candidate (multi_modal_data, mm_processor_kwargs) forms for one media item; the first is the chosen one."""
    if media.image is not None:
        return {
            "pil+do_resize=False": {"multi_modal_data": {"image": media.image},
                                    "mm_processor_kwargs": {"do_resize": False}},
            "pil, no kwargs": {"multi_modal_data": {"image": media.image}},
        }
    return {
        "(frames,meta)+do_resize/do_sample_frames=False": {
            "multi_modal_data": {"video": [video_item(media.video)]},
            "mm_processor_kwargs": {"do_resize": False, "do_sample_frames": False},
        },
        "(frames,meta), no kwargs": {"multi_modal_data": {"video": [video_item(media.video)]}},
        "frames only+do_resize/do_sample_frames=False": {
            "multi_modal_data": {"video": [video_item(media.video, with_metadata=False)]},
            "mm_processor_kwargs": {"do_resize": False, "do_sample_frames": False},
        },
    }


def first_diff(a: list[int], b: list[int]) -> dict[str, Any] | None:
    """None when equal, else where two id lists part and what each holds there."""
    if a == b:
        return None
    i = next((k for k in range(min(len(a), len(b))) if a[k] != b[k]), min(len(a), len(b)))
    window = slice(max(0, i - 3), i + 6)
    return {"len_vllm": len(a), "len_hf": len(b), "at": i, "vllm": a[window], "hf": b[window]}


# ------------------------------------------------------------------------------------------------
# one family


def _cat(items: Any) -> Any:
    import torch

    return torch.cat(list(items)) if isinstance(items, (list, tuple)) else items


def hf_reference(hf: Any, inputs: Any, kind: str) -> dict[str, Any]:
    """HF's M-RoPE position ids [3, L] and vision features (main [N, H], deepstack [N, k*H] or None)."""
    import torch

    captured: dict[str, Any] = {}

    def hook(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        captured["positions"] = kwargs.get("position_ids")

    handle = hf.model.language_model.register_forward_pre_hook(hook, with_kwargs=True)
    with torch.no_grad():
        hf(**inputs)
        if kind == "image":
            out = hf.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"], return_dict=True)
        else:
            out = hf.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"], return_dict=True)
    handle.remove()
    positions = captured["positions"]  # [3, 1, L], or [4, 1, L] with a text row first
    deepstack = getattr(out, "deepstack_features", None)
    return {
        "positions": positions[-3:, 0],
        "main": _cat(out.pooler_output),
        "deepstack": torch.cat([_cat(layer) for layer in deepstack], dim=-1) if deepstack else None,
    }


def compare_reference(captured: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    """vLLM's captured positions and encoder output against HF's."""
    row: dict[str, Any] = {}
    pos = captured.get("positions")
    if pos is None:
        row["positions"] = "not captured"
    else:
        hp = ref["positions"]
        if pos.shape != hp.shape:
            row["positions"] = f"shape {tuple(pos.shape)} vs {tuple(hp.shape)}"
        else:
            bad = (pos != hp).any(0).nonzero().flatten().tolist()
            window = slice(max(0, bad[0] - 2), bad[0] + 3) if bad else None
            row["positions"] = "EQUAL" if not bad else {
                "first": bad[0], "count": len(bad), "vllm": pos[:, window].tolist(), "hf": hp[:, window].tolist(),
            }
    emb = captured.get("embeds")
    if emb is None:
        row["features"] = "not captured (encoder output cached?)"
    else:
        v = _cat(emb)
        main = ref["main"]
        if v.shape[0] != main.shape[0]:
            row["features"] = f"rows {v.shape[0]} vs {main.shape[0]}"
        else:
            width = main.shape[1]
            row["features_max_abs_diff"] = (v[:, :width] - main).abs().max().item()
            if ref["deepstack"] is not None and v.shape[1] == width + ref["deepstack"].shape[1]:
                row["deepstack_max_abs_diff"] = (v[:, width:] - ref["deepstack"]).abs().max().item()
    return row


def run_family(family: str, work: Path, *, eager: bool, device_normalize: bool) -> dict[str, Any]:
    import types

    import torch

    from videor1.models.generation import SamplingParams as HFSampling
    from videor1.models.generation import (
        _generate,
        build_generation_config,
        eos_token_ids,
        generate_from_inputs,
        suppressed_token_ids,
    )
    from videor1.models.inputs import load_sample_media, processor_inputs, prompt_text, vision_factor
    from videor1.models.load import load_model, load_processor
    from videor1.rl.logprobs import CompletionScorer

    result: dict[str, Any] = {"family": family, "eager": eager, "mm_device_do_normalize": device_normalize}
    model_dir = work / "tiny" / family
    processor = load_processor(model_dir)
    tokenizer = processor.tokenizer
    factor = vision_factor(processor)
    samples = pick_samples(work)

    # --- HF side: the project's decode and processor inputs
    cases: dict[str, dict[str, Any]] = {}
    for kind, (data_type, frames, pixels) in CASES.items():
        sample = samples[data_type]
        media = load_sample_media(sample, media_config(frames, pixels), factor)
        text = prompt_text(processor, sample)
        inputs = processor_inputs(processor, [text], [media])
        case = {"media": media, "text": text, "inputs": inputs, "hf_ids": inputs["input_ids"][0].tolist()}
        if media.video is not None:
            v = media.video
            info = {"frames": list(v.frames.shape), "indices": v.frame_indices, "video_fps": v.video_fps,
                    "sample_fps": v.sample_fps, "grid_thw": inputs["video_grid_thw"].tolist()}
            if "second_per_grid_ts" in inputs:
                info["second_per_grid_ts"] = inputs["second_per_grid_ts"].tolist()
        else:
            info = {"size": list(media.image.size), "grid_thw": inputs["image_grid_thw"].tolist()}
        info["prompt_tokens"] = len(case["hf_ids"])
        case["info"] = info
        cases[kind] = case
    result["media"] = {k: c["info"] for k, c in cases.items()}

    hf = load_model(model_dir, dtype="float32")
    suppressed = suppressed_token_ids(tokenizer)
    eos = eos_token_ids(hf, tokenizer)
    result["suppressed_ids"] = suppressed
    result["eos_ids"] = eos

    # HF greedy and references before vLLM exists in this process
    for case in cases.values():
        params = HFSampling(max_new_tokens=MAX_TOKENS, temperature=0.0)
        texts = generate_from_inputs(hf, tokenizer, case["inputs"], params)
        config = build_generation_config(params, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id,
                                         suppress_tokens=suppressed)
        with torch.no_grad():
            seq = _generate(hf, case["inputs"], config).sequences[0, case["inputs"]["input_ids"].shape[1]:].tolist()
        case["hf_greedy_ids"] = seq[: next((i + 1 for i, t in enumerate(seq) if t in eos), len(seq))]
        case["hf_greedy_text"] = texts[0][0].text
        case["ref"] = hf_reference(hf, case["inputs"], "image" if case["media"].image is not None else "video")

    # --- vLLM engine
    from vllm import LLM, TokensPrompt
    from vllm import SamplingParams as VSampling

    threads_before = torch.get_num_threads()
    rss0, t0 = rss_mib(), time.perf_counter()
    llm = LLM(
        model=str(model_dir), dtype="float32", max_model_len=4096, seed=0, enforce_eager=eager,
        limit_mm_per_prompt={"image": 1, "video": 1}, logprobs_mode="processed_logprobs",
        mm_device_do_normalize=device_normalize,
    )
    result["construct_s"] = round(time.perf_counter() - t0, 2)
    result["rss_mib"] = {"before": round(rss0), "after": round(rss_mib()), "peak": round(peak_rss_mib())}
    result["torch_threads"] = {"before": threads_before, "after": torch.get_num_threads()}
    result["default_dtype_after"] = str(torch.get_default_dtype())
    result["compilation_mode"] = str(llm.llm_engine.vllm_config.compilation_config.mode)

    # capture what the in-process model computes: encoder outputs and M-RoPE positions
    model = llm.llm_engine.model_executor.driver_worker.model_runner.get_model()
    captured: dict[str, Any] = {}
    positions_fn = {"fn": model.get_mrope_input_positions}
    embed_fn = model.embed_multimodal

    def embed_capture(**kwargs: Any) -> Any:
        out = embed_fn(**kwargs)
        captured["embeds"] = [t.detach().clone() for t in out]
        return out

    def positions_capture(input_tokens: list[int], mm_features: list[Any]) -> Any:
        out = positions_fn["fn"](input_tokens, mm_features)
        captured["positions"] = out[0].clone()
        return out

    model.embed_multimodal = embed_capture
    model.get_mrope_input_positions = positions_capture

    def fresh_caches() -> None:
        llm.reset_prefix_cache()
        llm.llm_engine.reset_encoder_cache()

    bias = {t: -100.0 for t in suppressed}

    # a/b: forms, prompt ids, positions, encoder outputs
    result["forms"] = {}
    for kind, case in cases.items():
        rows = {}
        for name, form in request_forms(kind, case["media"]).items():
            captured.clear()
            fresh_caches()
            try:
                out = llm.generate({"prompt": case["text"], **form}, VSampling(temperature=0, max_tokens=1),
                                   use_tqdm=False)[0]
                diff = first_diff(list(out.prompt_token_ids), case["hf_ids"])
                rows[name] = {"ok": True, "ids_equal": diff is None, "diff": diff,
                              **compare_reference(captured, case["ref"])}
            except Exception as e:  # report and go on: some forms are expected to fail
                rows[name] = {"ok": False, "error": f"{type(e).__name__}: {str(e)[:300]}"}
        result["forms"][kind] = rows
        case["form"] = next(iter(request_forms(kind, case["media"]).values()))

    def greedy_check() -> dict[str, Any]:
        rows = {}
        for kind, case in cases.items():
            row = {"hf_ids": case["hf_greedy_ids"], "hf_text": case["hf_greedy_text"]}
            for label, sp in (("biased", VSampling(temperature=0, max_tokens=MAX_TOKENS, logit_bias=bias)),
                              ("plain", VSampling(temperature=0, max_tokens=MAX_TOKENS))):
                out = llm.generate({"prompt": case["text"], **case["form"]}, sp, use_tqdm=False)[0].outputs[0]
                row[f"vllm_{label}_ids"] = list(out.token_ids)
                row[f"equal_{label}"] = list(out.token_ids) == case["hf_greedy_ids"]
                if label == "biased":
                    row["vllm_text"] = out.text
            rows[kind] = row
        return rows

    # c: sampled completions with the sampler's log-probs, against the project's scorer
    def sampled_check(tag: str, seed: int) -> dict[str, Any]:
        rows: dict[str, Any] = {"tag": tag}
        for kind, case in cases.items():
            sp = VSampling(n=NUM_SAMPLES, temperature=SAMPLE_TEMPERATURE, max_tokens=MAX_TOKENS, logprobs=0,
                           seed=seed, logit_bias=bias)
            out = llm.generate({"prompt": case["text"], **case["form"]}, sp, use_tqdm=False)[0]
            ids = [list(o.token_ids) for o in out.outputs]
            lps = [[lp[t].logprob for t, lp in zip(o.token_ids, o.logprobs, strict=True)] for o in out.outputs]
            width = max(len(x) for x in ids)
            pad = tokenizer.pad_token_id
            comp = torch.tensor([x + [pad] * (width - len(x)) for x in ids])
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
            with torch.no_grad():
                scored = CompletionScorer(hf, suppressed)(case["inputs"], comp, mask, [0] * len(ids),
                                                          temperature=SAMPLE_TEMPERATURE).logp
            v = torch.tensor([x + [0.0] * (width - len(x)) for x in lps])
            rows[kind] = {
                "max_abs_diff": ((scored - v).abs() * mask).max().item(), "completions": ids, "vllm_logprobs": lps[:2],
                "distinct": len({tuple(x) for x in ids}), "entries_per_position": len(out.outputs[0].logprobs[0]),
                "finish_reasons": sorted({o.finish_reason for o in out.outputs}),
            }
        return rows

    # d: a fixed completion scored by vLLM (prompt_logprobs) and by the HF model
    fixed = tokenizer.encode(FIXED_COMPLETION, add_special_tokens=False) + [eos[0]]
    result["fixed_completion_ids"] = fixed

    def vllm_fixed(kind: str) -> tuple[list[float], bool]:
        case = cases[kind]
        prompt_ids = tokenizer.encode(case["text"], add_special_tokens=False)
        req = TokensPrompt(prompt_token_ids=prompt_ids + fixed, **case["form"])
        out = llm.generate(req, VSampling(temperature=0, max_tokens=1, prompt_logprobs=0), use_tqdm=False)[0]
        tail = out.prompt_logprobs[-len(fixed):]
        same_ids = list(out.prompt_token_ids) == case["hf_ids"] + fixed
        return [d[t].logprob for d, t in zip(tail, fixed, strict=True)], same_ids

    def hf_fixed(kind: str) -> list[float]:
        comp = torch.tensor([fixed])
        with torch.no_grad():
            scored = CompletionScorer(hf, [])(cases[kind]["inputs"], comp, torch.ones_like(comp), [0],
                                              temperature=1.0).logp
        return scored[0].tolist()

    def fixed_diff(reference: dict[str, list[float]] | None = None) -> dict[str, float]:
        diffs = {}
        for kind in cases:
            mine = vllm_fixed(kind)[0]
            theirs = reference[kind] if reference is not None else hf_fixed(kind)
            diffs[kind] = max(abs(x - y) for x, y in zip(mine, theirs, strict=True))
        return diffs

    result["greedy"] = greedy_check()
    result["sampled"] = sampled_check("initial weights, vLLM positions", seed=1234)
    result["token_prompt_ids_equal"] = {k: vllm_fixed(k)[1] for k in cases}
    result["fixed_initial"] = fixed_diff()

    # the same with the released rule the engine installs (Qwen2.5-VL only)
    patched = family == "qwen2_5_vl"
    result["released_positions_patch"] = patched
    if patched:
        from videor1.models.vllm_engine import released_mrope_positions

        positions_fn["fn"] = types.MethodType(released_mrope_positions, model)
        patched_rows = {}
        for kind, case in cases.items():
            captured.clear()
            fresh_caches()
            llm.generate({"prompt": case["text"], **case["form"]}, VSampling(temperature=0, max_tokens=1),
                         use_tqdm=False)
            patched_rows[kind] = compare_reference(captured, case["ref"])
        result["patched_reference"] = patched_rows
        fresh_caches()
        result["greedy_patched"] = greedy_check()
        result["sampled_patched"] = sampled_check("initial weights, released positions patch", seed=1234)
        result["fixed_patched"] = fixed_diff()

    # d: in-place weight update
    update: dict[str, Any] = {}
    before = {k: vllm_fixed(k)[0] for k in cases}
    original = {n: p.detach().clone() for n, p in hf.named_parameters()}
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in hf.model.language_model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.add_(0.05 * torch.randn(module.weight.shape, generator=gen))
        if hf.lm_head.weight.data_ptr() != hf.model.language_model.embed_tokens.weight.data_ptr():  # untied
            hf.lm_head.weight.add_(0.05 * torch.randn(hf.lm_head.weight.shape, generator=gen))
    hf_pert = {k: hf_fixed(k) for k in cases}
    update["before_vs_hf_perturbed"] = {k: max(abs(x - y) for x, y in zip(before[k], hf_pert[k], strict=True))
                                        for k in cases}

    def lm_weights() -> list[tuple[str, torch.Tensor]]:
        return [(n, p.detach()) for n, p in hf.named_parameters()
                if n.startswith(("model.language_model.", "lm_head."))]

    pushed = lm_weights()
    update["pushed_tensors"] = len(pushed)
    update["pushed_numel"] = sum(p.numel() for _, p in pushed)
    update["pushed_names_sample"] = [n for n, _ in pushed[:2]] + [pushed[-1][0]]
    t0 = time.perf_counter()
    try:
        ret = llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(pushed)})
        update["collective_rpc"] = {"ok": True, "returned": repr(ret), "seconds": round(time.perf_counter() - t0, 3)}
    except Exception as e:
        update["collective_rpc"] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:500],
                                    "trace": traceback.format_exc()[-1500:]}

    # the prompts of `sampled` are in the prefix cache with KV from the old weights
    result["sampled_after_update_stale_cache"] = sampled_check("after update, prefix cache NOT reset", seed=1234)
    # reload_weights clears the worker's encoder cache but not the scheduler's record of it: resetting only
    # the prefix cache then fails the next media request with "Encoder cache miss"; reset both
    update["reset_prefix_cache"] = llm.reset_prefix_cache()
    llm.llm_engine.reset_encoder_cache()
    result["sampled_after_update"] = sampled_check("after update + prefix and encoder caches reset", seed=1234)
    update["after_vs_hf_perturbed"] = fixed_diff(hf_pert)

    # the direct call on the in-process worker: push the original weights back
    with torch.no_grad():
        for n, p in hf.named_parameters():
            p.copy_(original[n])
    t0 = time.perf_counter()
    try:
        worker = llm.llm_engine.model_executor.driver_worker
        worker.reload_weights(weights_iterator=iter(lm_weights()))
        update["driver_worker.reload_weights"] = {"ok": True, "seconds": round(time.perf_counter() - t0, 3),
                                                  "worker": type(worker).__name__}
    except Exception as e:
        update["driver_worker.reload_weights"] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:500]}
    fresh_caches()
    update["restored_vs_hf_original"] = fixed_diff()

    # a full state dict (vision tower too) through the same call
    t0 = time.perf_counter()
    full = [(n, p.detach()) for n, p in hf.named_parameters()]
    llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(full)})
    fresh_caches()
    update["full_state_dict"] = {"tensors": len(full), "seconds": round(time.perf_counter() - t0, 3),
                                 "vs_hf_original": fixed_diff()}

    # a plain model.load_weights on the CPU backend's processed weights (expected to fail)
    try:
        with torch.no_grad():
            model.load_weights(iter(lm_weights()))
        update["plain_load_weights"] = {"ok": True, "vs_hf_original": fixed_diff()}
    except Exception as e:
        update["plain_load_weights"] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:300]}
    result["update"] = update
    result["peak_rss_mib_end"] = round(peak_rss_mib())
    return result


# ------------------------------------------------------------------------------------------------
# report


def fmt(x: Any) -> str:
    return f"{x:.1e}" if isinstance(x, float) else str(x)


def fmt_diffs(d: dict[str, Any]) -> str:
    return ", ".join(f"{k} {fmt(v)}" for k, v in d.items())


def print_report(results: list[dict[str, Any]]) -> None:
    for r in results:
        print("=" * 110)
        if "error" in r:
            print(f"{r['family']}: FAILED\n{r['error']}")
            continue
        print(f"{r['family']}  (enforce_eager={r['eager']}, mm_device_do_normalize={r['mm_device_do_normalize']}, "
              f"compilation {r['compilation_mode']})")
        print(f"  e. LLM(...) {r['construct_s']} s; RSS {r['rss_mib']['before']} -> {r['rss_mib']['after']} MiB (peak "
              f"{r['rss_mib']['peak']} MiB, {r['peak_rss_mib_end']} MiB at the end); torch threads "
              f"{r['torch_threads']['before']} -> {r['torch_threads']['after']}; "
              f"default dtype {r['default_dtype_after']}")
        for kind, info in r["media"].items():
            print(f"  media {kind:7s} {info}")
        print("  a/b. request forms: prompt ids vs HF processor_inputs; M-RoPE positions; encoder output max |diff|")
        for kind, rows in r["forms"].items():
            for name, row in rows.items():
                if not row["ok"]:
                    print(f"     {kind:7s} {name:47s} ERROR {row['error']}")
                    continue
                ids = "ids EQUAL" if row["ids_equal"] else f"ids DIFFER {row['diff']}"
                feats = fmt(row.get("features_max_abs_diff", row.get("features")))
                deep = f" deepstack {fmt(row['deepstack_max_abs_diff'])}" if "deepstack_max_abs_diff" in row else ""
                print(f"     {kind:7s} {name:47s} {ids}; positions {row['positions']}; features {feats}{deep}")
        print("  greedy, 8 tokens: HF generate (vision tokens suppressed) vs vLLM with logit_bias -100 on them / plain")
        for key in ("greedy", "greedy_patched"):
            if key not in r:
                continue
            if key == "greedy_patched":
                print("     with the released positions patch:")
            for kind, row in r[key].items():
                plain = "" if row["equal_plain"] else f" {row['vllm_plain_ids']}"
                print(f"     {kind:7s} HF {row['hf_ids']}  vLLM biased {row['vllm_biased_ids']} "
                      f"equal={row['equal_biased']}  plain equal={row['equal_plain']}{plain}")
        print(f"  c. n={NUM_SAMPLES}, T={SAMPLE_TEMPERATURE}, logprobs=0, processed_logprobs: max |vLLM logprob - "
              f"CompletionScorer| over the sampled tokens")
        for key in ("sampled", "sampled_patched", "sampled_after_update_stale_cache", "sampled_after_update"):
            if key in r:
                s = r[key]
                print(f"     [{s['tag']}] " + ", ".join(
                    f"{k} {fmt(v['max_abs_diff'])} ({v['distinct']} distinct)" for k, v in s.items() if k != "tag"))
        s = r["sampled"]["video"]
        print(f"     e.g. video: ids {s['completions'][0]} logprobs {[round(x, 4) for x in s['vllm_logprobs'][0]]}; "
              f"{s['entries_per_position']} entry per position; finish {s['finish_reasons']}")
        print(f"  d. fixed completion {r['fixed_completion_ids']} scored with prompt_logprobs=0 "
              f"(TokensPrompt ids == HF ids + completion: {r['token_prompt_ids_equal']})")
        print(f"     initial weights, vs HF: {fmt_diffs(r['fixed_initial'])}")
        if r["released_positions_patch"]:
            positions = {k: v["positions"] for k, v in r["patched_reference"].items()}
            print(f"     with the released positions patch: positions {positions}")
            print(f"     initial weights + patch, vs HF: {fmt_diffs(r['fixed_patched'])}")
        u = r["update"]
        print(f"     before update, vs HF perturbed: {fmt_diffs(u['before_vs_hf_perturbed'])}")
        print(f"     collective_rpc('reload_weights', weights_iterator=...) of {u['pushed_tensors']} LM tensors "
              f"({u['pushed_numel']} values, e.g. {u['pushed_names_sample']}): {u['collective_rpc']}")
        print(f"     after update (+ caches reset), vs HF perturbed: {fmt_diffs(u['after_vs_hf_perturbed'])}")
        print(f"     driver_worker.reload_weights (original back): {u['driver_worker.reload_weights']}; "
              f"vs HF original: {fmt_diffs(u['restored_vs_hf_original'])}")
        f = u["full_state_dict"]
        print(f"     full state dict ({f['tensors']} tensors, {f['seconds']} s), "
              f"vs HF original: {fmt_diffs(f['vs_hf_original'])}")
        print(f"     plain model.load_weights: {u['plain_load_weights']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/vllm-probe"), help="tiny models and synthetic data")
    parser.add_argument("--family", choices=FAMILIES, help="one family, in this process")
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument("--eager", action="store_true", help="LLM(enforce_eager=True): no torch.compile")
    parser.add_argument("--device-normalize", action="store_true",
                        help="LLM(mm_device_do_normalize=True), vLLM's default: pixels normalised in the model "
                        "with the image processor's mean/std, videos included")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    prepare(args.work)

    if args.family:
        try:
            results = [run_family(args.family, args.work, eager=args.eager, device_normalize=args.device_normalize)]
        except Exception:
            results = [{"family": args.family, "error": traceback.format_exc()}]
        if args.json:
            args.json.write_text(json.dumps(results, indent=1, default=str))
        print_report(results)
        return

    results = []
    for family in args.families:
        out = args.work / f"result-{family}.json"
        out.unlink(missing_ok=True)
        log = args.work / f"log-{family}.txt"
        cmd = [sys.executable, __file__, "--work", str(args.work), "--family", family, "--json", str(out)]
        cmd += ["--eager"] if args.eager else []
        cmd += ["--device-normalize"] if args.device_normalize else []
        t0 = time.perf_counter()
        with log.open("w") as fh:
            subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False)
        print(f"{family}: {time.perf_counter() - t0:.0f} s in its own process (log {log})", flush=True)
        if out.exists():
            results += json.loads(out.read_text())
        else:
            results.append({"family": family, "error": f"no result; see {log}"})
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    print_report(results)


if __name__ == "__main__":
    main()
