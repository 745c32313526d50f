"""Tiny offline Qwen-VL models: a locally trained tokenizer, a random-initialised model, the real processor.

Nothing here downloads anything. The result is a folder written with `save_pretrained` that the Auto
classes load exactly like a hub checkpoint, so tests and the demo exercise the real loading code.

Deviations from the real checkpoints, on purpose:
- `<think>`, `</think>`, `<answer>`, `</answer>` are single added (non-special) tokens in every family, so
  a 0.6M-parameter model can learn the output format in a few hundred steps; decoding keeps them.
- `initializer_range` is 0.05, not 0.02: measured on this CPU (docs/design.md §9), the default init stalls at
  the class prior in most seeds while 0.05 learns the video in every seed tried.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

Family = Literal["qwen2_vl", "qwen2_5_vl", "qwen3_vl"]
FAMILIES: tuple[str, ...] = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")

# Qwen2/2.5/3-VL's special tokens, in their checkpoint order (ids differ, names do not).
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
REASONING_TOKENS: tuple[str, ...] = ("<think>", "</think>", "<answer>", "</answer>")

# Qwen2's pre-tokenizer pattern: single digits, letters runs, punctuation runs, whitespace.
_QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# The chat template of Qwen2-VL / Qwen2.5-VL (default system prompt) and Qwen3-VL (none), reduced to
# text, image and video content; the processor expands each placeholder to its grid of pad tokens.
_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' and DEFAULT_SYSTEM %}"
    "<|im_start|>system\nDEFAULT_SYSTEM<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def chat_template(family: Family) -> str:
    """The Jinja chat template for a family (Qwen2/2.5-VL add a default system prompt, Qwen3-VL does not)."""
    system = "" if family == "qwen3_vl" else "You are a helpful assistant."
    template = _CHAT_TEMPLATE.replace("and DEFAULT_SYSTEM", "and true" if system else "and false")
    return template.replace("DEFAULT_SYSTEM", system)


@dataclass(frozen=True)
class TinySpec:
    """Sizes of a tiny model; defaults are the 0.6M-parameter prototype of docs/design.md §9."""

    hidden_size: int = 128
    intermediate_size: int = 256
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    vision_depth: int = 2
    vision_hidden_size: int = 64
    vision_heads: int = 2
    vocab_size: int = 1024
    initializer_range: float = 0.05
    min_pixels: int = 56 * 56
    max_pixels: int = 224 * 224


def _builtin_corpus() -> list[str]:
    """Text the tokenizer always sees: the prompt templates, option letters, digits, punctuation."""
    from videor1.data.prompts import QUESTION_TEMPLATE, TYPE_TEMPLATES

    texts = [QUESTION_TEMPLATE, *TYPE_TEMPLATES.values(), "You are a helpful assistant."]
    texts.append("Options:\n" + "\n".join(f"{c}. option {c.lower()}" for c in "ABCDEFGHIJ"))
    texts.append(" ".join(str(i) for i in range(200)) + " 0.25 -1.5 3.14 1,000")
    texts.append("<0.5 seconds> <1.0 seconds> <2.5 seconds> <10.0 seconds>")
    texts.append(
        "Let me think. Hmm, wait. Oh, I see. Let's break it down. The answer is A. First, then, finally."
    )
    return texts


def dataset_corpus(path: str | Path) -> list[str]:
    """Texts of a Video-R1-format file for tokenizer training: full prompts, rationales and solutions."""
    from videor1.data.dataset import iter_rows
    from videor1.data.prompts import TYPE_TEMPLATES, user_prompt

    texts = []
    for _, row in iter_rows(path):
        if not isinstance(row, dict):
            continue
        if row.get("problem_type") in TYPE_TEMPLATES and isinstance(row.get("problem"), str):
            texts.append(user_prompt(row["problem"], row["problem_type"], list(row.get("options") or [])))
        texts += [row[k] for k in ("process", "solution") if isinstance(row.get(k), str)]
    return texts


def train_tokenizer(corpus: Iterable[str], *, vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer with Qwen's pre-tokenizer, special tokens and reasoning tokens."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([*_builtin_corpus(), *corpus], trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        model_max_length=32768,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    tokenizer.add_tokens(list(REASONING_TOKENS), special_tokens=False)
    return tokenizer


def _round_up(x: int, multiple: int) -> int:
    return (x + multiple - 1) // multiple * multiple


def _model_config(family: Family, spec: TinySpec, tokenizer: PreTrainedTokenizerFast):
    """Build the family's config with tiny sizes and the tokenizer's special-token ids."""
    from transformers import Qwen2_5_VLConfig, Qwen2VLConfig, Qwen3VLConfig

    head_dim = spec.hidden_size // spec.num_heads
    # M-RoPE splits head_dim/2 rotary frequencies into (temporal, height, width), as 16:24:24 in the 7B.
    half = head_dim // 2
    mrope_section = [half - 2 * (3 * half // 8), 3 * half // 8, 3 * half // 8]
    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in (
        ("image_token_id", "<|image_pad|>"),
        ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"),
        ("vision_end_token_id", "<|vision_end|>"),
    )}
    text = dict(
        vocab_size=_round_up(len(tokenizer), 64),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=32768,
        initializer_range=spec.initializer_range,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = dict(depth=spec.vision_depth, num_heads=spec.vision_heads, initializer_range=spec.initializer_range)
    if family == "qwen2_vl":
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": mrope_section}
        vision.update(embed_dim=spec.vision_hidden_size, hidden_size=spec.hidden_size, mlp_ratio=2)
        return Qwen2VLConfig(text_config=text, vision_config=vision, **ids)
    if family == "qwen2_5_vl":
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": mrope_section}
        vision.update(
            hidden_size=spec.vision_hidden_size,
            intermediate_size=2 * spec.vision_hidden_size,
            out_hidden_size=spec.hidden_size,
            fullatt_block_indexes=[spec.vision_depth - 1],
            window_size=112,
        )
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)
    if family == "qwen3_vl":
        text.update(head_dim=head_dim)
        text["rope_parameters"] = {
            "rope_type": "default", "rope_theta": 5e6, "mrope_section": mrope_section, "mrope_interleaved": True
        }
        vision.update(
            hidden_size=spec.vision_hidden_size,
            intermediate_size=2 * spec.vision_hidden_size,
            out_hidden_size=spec.hidden_size,
            num_position_embeddings=256,
            deepstack_visual_indexes=[0],
        )
        return Qwen3VLConfig(text_config=text, vision_config=vision, **ids)
    raise ValueError(f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")


def _processor(family: Family, spec: TinySpec, tokenizer: PreTrainedTokenizerFast):
    """The family's real processor classes around the local tokenizer."""
    from transformers import Qwen2VLImageProcessor

    patch = 16 if family == "qwen3_vl" else 14
    common = dict(patch_size=patch, temporal_patch_size=2, merge_size=2)
    size = {"shortest_edge": spec.min_pixels, "longest_edge": spec.max_pixels}
    image_processor = Qwen2VLImageProcessor(size=size, **common)
    template = chat_template(family)
    if family == "qwen3_vl":
        from transformers import Qwen3VLProcessor, Qwen3VLVideoProcessor

        video_processor = Qwen3VLVideoProcessor(size=size, **common)
        return Qwen3VLProcessor(image_processor, tokenizer, video_processor, chat_template=template)
    from transformers import Qwen2_5_VLProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    video_processor = Qwen2VLVideoProcessor(size=size, **common)
    cls = Qwen2VLProcessor if family == "qwen2_vl" else Qwen2_5_VLProcessor
    return cls(image_processor, tokenizer, video_processor, chat_template=template)


def build_tiny(
    out_dir: str | Path,
    *,
    family: Family = "qwen2_5_vl",
    corpus: Iterable[str] = (),
    spec: TinySpec | None = None,
    seed: int = 0,
) -> Path:
    """Train a tokenizer, build a random-initialised tiny model and its processor, save all to out_dir."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")
    from transformers import AutoModelForImageTextToText

    spec = spec or TinySpec()
    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(corpus, vocab_size=spec.vocab_size)
    config = _model_config(family, spec, tokenizer)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    processor = _processor(family, spec, tokenizer)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir
