"""Answer samples with a model, batched, with each sample's failure kept to itself.

Media is decoded per sample before batching, so a bad file fails only its own sample. If a batched
`generate` raises (out of memory, a processor error on one prompt), the batch's samples are retried one
by one, so only the culprit is recorded as failed. The original Video-R1 evaluation turned all 64 samples
of a batch into "error" when one failed (docs/design.md §4).

The generator is the HF model, or an engine with a `texts` method (`TextEngine`: the vLLM engine), which
gets the same rendered prompts and decoded media, so both paths share the isolation above.

`answer_samples` / `summarize_answers` serve SFT's held-out evaluation with greedy decoding; their scores reuse
the reward functions' parsers and rules (one parser, two uses), so "accuracy" there is the number RL
optimises. Benchmarks score the same generations with their own metrics (`videor1.eval.scoring`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import torch

from videor1.config import MediaConfig
from videor1.data.media import MediaError
from videor1.data.schema import Sample
from videor1.models.generation import SamplingParams, generate_from_inputs
from videor1.models.inputs import SampleMedia, load_sample_media, processor_inputs, prompt_text, vision_factor
from videor1.rewards import accuracy_score, extract_answer, is_well_formed

ErrorKind = Literal["row", "media", "generation"]
"""Where a failed sample stopped: its row was invalid, its media would not decode, or generate raised."""


@runtime_checkable
class TextEngine(Protocol):
    """A generation engine beside the HF model (`VLLMEngine`): one completion's text per rendered prompt."""

    def texts(self, texts: Sequence[str], media: Sequence[SampleMedia], params: SamplingParams) -> list[str]:
        """Completions of the prompts, special tokens dropped."""
        ...


@dataclass(frozen=True)
class Generation:
    """One sample's output text, or the error that stopped it (then `text` is empty) and where."""

    sample: Sample
    text: str
    error: str | None = None
    error_kind: ErrorKind | None = None


def describe(error: BaseException) -> str:
    """An error as one line: its type and message (MediaError already names the file)."""
    return str(error) if isinstance(error, MediaError) else f"{type(error).__name__}: {error}"


def decode_samples(samples: list[Sample], media: MediaConfig, factor: int) -> list[SampleMedia | Generation]:
    """Each sample's decoded media, or a failed Generation with the decoding error."""
    decoded: list[SampleMedia | Generation] = []
    for sample in samples:
        try:
            decoded.append(load_sample_media(sample, media, factor))
        except Exception as error:  # any decoder failure is this sample's alone; it must not stop the run
            decoded.append(Generation(sample, "", error=describe(error), error_kind="media"))
    return decoded


@torch.no_grad()
def generate_texts(
    model: Any,
    processor: Any,
    samples: list[Sample],
    media: list[SampleMedia],
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float = 1.0,
    top_k: int | None = None,
    repetition_penalty: float = 1.0,
    system_prompt: str | None = None,
) -> list[str]:
    """One batched generation (HF model or TextEngine) of decoded samples; temperature 0 = greedy; raises on failure."""
    params = SamplingParams(max_new_tokens, temperature, top_p, top_k, repetition_penalty)
    texts = [prompt_text(processor, s, system_prompt=system_prompt) for s in samples]
    if isinstance(model, TextEngine):
        outputs = model.texts(texts, media, params)
        if len(outputs) != len(samples):  # an engine that mixed in other requests' outputs must not be trusted
            raise RuntimeError(f"the engine answered {len(outputs)} prompts, {len(samples)} were asked")
        return outputs
    inputs = processor_inputs(processor, texts, media)
    # texts keep <think>/<answer> (added, non-special tokens); pads and the end-of-turn token are dropped
    return [rows[0].text for rows in generate_from_inputs(model, processor.tokenizer, inputs, params)]


def generate_batch(
    model: Any, processor: Any, samples: list[Sample], media: MediaConfig, **decoding: Any
) -> list[Generation]:
    """Generations for a batch, in order: decode per sample, generate together, retry one by one on failure."""
    results: list[SampleMedia | Generation] = decode_samples(samples, media, vision_factor(processor))
    ready = [i for i, item in enumerate(results) if isinstance(item, SampleMedia)]
    try:
        if ready:
            batch_media = [results[i] for i in ready]
            texts = generate_texts(model, processor, [samples[i] for i in ready], batch_media, **decoding)
            for i, text in zip(ready, texts, strict=True):
                results[i] = Generation(samples[i], text)
    except Exception as batch_error:  # isolate the culprit: every sample of the batch gets its own try
        for i in ready:
            results[i] = _generate_alone(model, processor, samples[i], results[i], batch_error, len(ready), decoding)
    return results  # type: ignore[return-value]  # every SampleMedia has been replaced by a Generation


def _generate_alone(
    model: Any, processor: Any, sample: Sample, media: Any, batch_error: Exception, batch_len: int,
    decoding: dict[str, Any],
) -> Generation:
    """Retry one sample of a failed batch; a batch of one already failed alone, so its error is final."""
    if batch_len == 1:
        return Generation(sample, "", error=describe(batch_error), error_kind="generation")
    try:
        return Generation(sample, generate_texts(model, processor, [sample], [media], **decoding)[0])
    except Exception as error:  # recorded with the sample and counted wrong; the run goes on
        return Generation(sample, "", error=describe(error), error_kind="generation")


@dataclass
class Answer:
    """One sample's output and its scores."""

    sample: Sample
    output: str
    accuracy: float
    well_formed: bool
    error: str | None = None


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
    """Greedy answers for every sample, in order; failures become scored-wrong answers with an error."""
    answers: list[Answer] = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        for gen in generate_batch(model, processor, chunk, media, max_new_tokens=max_new_tokens, temperature=0.0):
            if gen.error is not None:
                answers.append(Answer(gen.sample, "", 0.0, False, error=gen.error))
                continue
            score = accuracy_score(extract_answer(gen.text), gen.sample.answer, gen.sample.problem_type)
            answers.append(Answer(gen.sample, gen.text, score, is_well_formed(gen.text)))
        if progress is not None:
            progress(min(start + batch_size, len(samples)), len(samples))
    return answers


def summarize_answers(answers: list[Answer]) -> dict[str, float]:
    """Mean accuracy and format rate overall, by data_type and by problem_type; failed-sample count."""
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
