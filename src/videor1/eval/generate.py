"""Answer a list of samples with a model (batched, near-greedy) and score the answers.

The scores reuse the reward functions' parsers and rules (one parser, two uses), so "accuracy" here is
the same number RL optimises. A sample whose media fails is recorded with its error and counted wrong;
it never takes its batch down.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from videor1.config import MediaConfig
from videor1.data.media import MediaError
from videor1.data.schema import Sample
from videor1.models.inputs import load_sample_media, processor_inputs, prompt_text, vision_factor
from videor1.rewards import accuracy_score, extract_answer, is_well_formed
from videor1.rl.rollout import eos_token_ids, generation_mode, suppressed_token_ids


@dataclass
class Answer:
    """One sample's output and its scores."""

    sample: Sample
    output: str
    accuracy: float
    well_formed: bool
    error: str | None = None


@torch.no_grad()
def answer_samples(
    model: Any,
    processor: Any,
    samples: list[Sample],
    media: MediaConfig,
    *,
    batch_size: int = 8,
    max_new_tokens: int = 1024,
    progress: Callable[[int, int], None] | None = None,
) -> list[Answer]:
    """Greedy answers for every sample, in order; media failures become scored-wrong answers with an error."""
    factor, device = vision_factor(processor), next(model.parameters()).device
    answers: list[Answer] = []
    for start in range(0, len(samples), batch_size):
        chunk, loaded = [], []
        for sample in samples[start : start + batch_size]:
            try:
                loaded.append(load_sample_media(sample, media, factor))
                chunk.append(sample)
            except MediaError as exc:
                answers.append(Answer(sample, "", 0.0, False, error=str(exc)))
        if chunk:
            inputs = processor_inputs(processor, [prompt_text(processor, s) for s in chunk], loaded).to(device)
            with generation_mode(model):
                out = model.generate(
                    **inputs, do_sample=False, max_new_tokens=max_new_tokens,
                    eos_token_id=eos_token_ids(model, processor.tokenizer),
                    pad_token_id=processor.tokenizer.pad_token_id,
                    suppress_tokens=suppressed_token_ids(processor.tokenizer),
                )
            texts = processor.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
            for sample, text in zip(chunk, texts, strict=True):
                score = accuracy_score(extract_answer(text), sample.answer, sample.problem_type)
                answers.append(Answer(sample, text, score, is_well_formed(text)))
        if progress is not None:
            progress(min(start + batch_size, len(samples)), len(samples))
    order = {id(s): i for i, s in enumerate(samples)}
    return sorted(answers, key=lambda a: order[id(a.sample)])


def summarize(answers: list[Answer]) -> dict[str, float]:
    """Mean accuracy and format rate overall, by data_type and by problem_type; failed-media count."""
    failed = sum(a.error is not None for a in answers)
    summary: dict[str, float] = {"count": float(len(answers)), "failed": float(failed)}
    groups: dict[str, list[Answer]] = {"all": answers}
    for answer in answers:
        groups.setdefault(f"data_type/{answer.sample.data_type}", []).append(answer)
        groups.setdefault(f"problem_type/{answer.sample.problem_type}", []).append(answer)
    for name, members in groups.items():
        if members:
            summary[f"accuracy/{name}"] = sum(a.accuracy for a in members) / len(members)
            summary[f"format/{name}"] = sum(a.well_formed for a in members) / len(members)
    return summary
