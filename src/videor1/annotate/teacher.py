"""Teachers that write rationales: a local checkpoint (batched `generate`) or an OpenAI-compatible endpoint.

Both ask with the paper's prompt (`prompts.user_prompt`: the question, the reasoning instruction and the
answer-type instruction, which asks for <think>…</think><answer>…</answer>), the media first, as in
training. Both yield one `TeacherResult` per question, in completion order; a question whose media or
request fails yields a failed result and never takes other questions down.
"""

from __future__ import annotations

import base64
import mimetypes
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from videor1.annotate.client import ChatClient, PermanentError, TransientError
from videor1.config import MediaConfig
from videor1.data.dataset import DatasetError, open_regular_file
from videor1.data.media import MediaError
from videor1.data.prompts import user_prompt
from videor1.data.schema import Sample
from videor1.models.generation import SamplingParams, generate_from_inputs
from videor1.models.inputs import SampleMedia, load_sample_media, processor_inputs, prompt_text, vision_factor

FailureKind = Literal["media", "request", "teacher"]


@dataclass
class TeacherResult:
    """A question's outputs, or why there are none (`permanent`: retrying the same question cannot help)."""

    sample: Sample
    outputs: list[str] = field(default_factory=list)
    error: str | None = None
    kind: FailureKind | None = None
    permanent: bool = False


class Teacher(Protocol):
    """Anything that answers questions with rationales."""

    def answer(self, samples: Sequence[Sample]) -> Iterator[TeacherResult]:
        """One result per sample, in any order."""
        ...


def media_url(sample: Sample, media_as: Literal["data-url", "file-url"]) -> str:
    """The sample's media as a base64 data URL or a file:// URL.

    OSError when the file cannot be read, DatasetError when it is not a regular file (a FIFO would block
    the request's thread for ever).
    """
    if sample.media_path.is_dir():
        # an OpenAI-style request carries one file per video part; a frame folder has no such file
        raise IsADirectoryError(f"{sample.media_path}: a folder of frames; a teacher takes a video file")
    if media_as == "file-url":
        if not sample.media_path.is_file():
            raise FileNotFoundError(f"{sample.media_path}: missing file")
        return sample.media_path.resolve().as_uri()
    mime = mimetypes.guess_type(sample.media_path.name)[0] or "application/octet-stream"
    with open_regular_file(sample.media_path) as file:
        data = file.read()
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def teacher_messages(sample: Sample, url: str, *, system_prompt: str | None = None) -> list[dict[str, Any]]:
    """OpenAI chat messages for one question: the media part, then the paper's prompt text."""
    part = "video_url" if sample.is_video else "image_url"
    content = [
        {"type": part, part: {"url": url}},
        {"type": "text", "text": user_prompt(sample.problem, sample.problem_type, sample.options)},
    ]
    messages: list[dict[str, Any]] = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return messages + [{"role": "user", "content": content}]


def bounded_map(
    pool: ThreadPoolExecutor, fn: Callable[[Any], Any], items: Iterable[Any], window: int
) -> Iterator[Any]:
    """fn over items in a pool with at most `window` in flight, yielding results as they complete.

    The window keeps a 165k-row run from queueing 165k futures, and lets an error (or the consumer stopping)
    end the run after the requests in flight rather than after all of them."""
    source = iter(items)
    pending: set[Future] = set()

    def refill() -> None:
        while len(pending) < window:
            try:
                item = next(source)
            except StopIteration:
                return
            pending.add(pool.submit(fn, item))

    refill()
    try:
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                pending.discard(future)
                yield future.result()
            refill()
    finally:
        for future in pending:
            future.cancel()


class HTTPTeacher:
    """An OpenAI-compatible endpoint, `concurrency` questions in flight; FatalError from the client ends the run."""

    def __init__(
        self, client: ChatClient, params: SamplingParams, *, samples_per_question: int, concurrency: int,
        media_as: Literal["data-url", "file-url"] = "data-url", system_prompt: str | None = None,
    ) -> None:
        self.client, self.params = client, params
        self.samples_per_question, self.concurrency = samples_per_question, concurrency
        self.media_as, self.system_prompt = media_as, system_prompt

    def answer(self, samples: Sequence[Sample]) -> Iterator[TeacherResult]:
        """Results in completion order."""
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="teacher") as pool:
            yield from bounded_map(pool, self._answer_one, samples, self.concurrency)

    def _answer_one(self, sample: Sample) -> TeacherResult:
        try:
            url = media_url(sample, self.media_as)
        except OSError as exc:
            return TeacherResult(sample, error=f"{sample.media_path}: {exc}", kind="media", permanent=True)
        except DatasetError as exc:  # its message names the file already
            return TeacherResult(sample, error=str(exc), kind="media", permanent=True)
        messages = teacher_messages(sample, url, system_prompt=self.system_prompt)
        try:
            outputs = [self.client.complete(messages, self.params) for _ in range(self.samples_per_question)]
        except PermanentError as exc:
            return TeacherResult(sample, error=str(exc), kind="request", permanent=True)
        except TransientError as exc:
            return TeacherResult(sample, error=str(exc), kind="teacher")
        return TeacherResult(sample, outputs)


class LocalTeacher:
    """A checkpoint loaded here: `batch_size` questions per `generate`, `samples_per_question` each."""

    def __init__(
        self, model: Any, processor: Any, media: MediaConfig, params: SamplingParams, *, samples_per_question: int,
        batch_size: int, system_prompt: str | None = None,
    ) -> None:
        self.model, self.processor, self.media, self.params = model, processor, media, params
        self.samples_per_question, self.batch_size = samples_per_question, batch_size
        self.system_prompt = system_prompt
        self.factor = vision_factor(processor)

    def answer(self, samples: Sequence[Sample]) -> Iterator[TeacherResult]:
        """Results batch by batch; media failures first within each batch."""
        for start in range(0, len(samples), self.batch_size):
            loaded: list[tuple[Sample, SampleMedia]] = []
            for sample in samples[start : start + self.batch_size]:
                try:
                    loaded.append((sample, load_sample_media(sample, self.media, self.factor)))
                except MediaError as exc:
                    yield TeacherResult(sample, error=str(exc), kind="media", permanent=True)
            if loaded:
                yield from self._generate(loaded)

    def _generate(self, loaded: list[tuple[Sample, SampleMedia]]) -> Iterator[TeacherResult]:
        try:
            texts = [prompt_text(self.processor, s, system_prompt=self.system_prompt) for s, _ in loaded]
            inputs = processor_inputs(self.processor, texts, [m for _, m in loaded])
            generations = generate_from_inputs(
                self.model, self.processor.tokenizer, inputs, self.params,
                num_return_sequences=self.samples_per_question,
            )
        except Exception as exc:  # out of memory, a processor error: isolate the question that causes it
            if len(loaded) == 1:
                yield TeacherResult(loaded[0][0], error=f"generation failed: {exc}", kind="teacher")
                return
            for one in loaded:
                yield from self._generate([one])
            return
        for (sample, _), outputs in zip(loaded, generations, strict=True):
            yield TeacherResult(sample, [g.text for g in outputs])
