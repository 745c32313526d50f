"""One model worker thread draining a queue: compatible requests are generated together in one batch.

The HTTP layer decodes media, renders prompts and checks their length, then hands a `Job` to
`GenerationWorker.enqueue` and awaits its future; only this thread touches the model. Each drain takes the
requests waiting (up to `max_batch_size`), groups those with the same sampling parameters, and runs one
`processor_inputs` + `generate` per group. A request that breaks its batch (its inputs cannot be
processed, its prompt is too long, generation raises) is isolated by serving the batch's requests one by
one, so it fails alone with its own error and never takes the others down (the original Video-R1
turned a whole batch into errors for one bad sample).

A request whose client went away is cancelled (`GenerationWorker.cancel`): a queued one never reaches the
model, and a running one is finished early by a stopping criterion that reads its flag between tokens. The
criterion finishes rows one by one (a row also finishes at its own token limit), so a batch ends as soon as
every row still wanted has its tokens: cancelling the longest request of a batch ends the batch early while
the other rows are served unchanged. A finished row still rides along until its batch ends (HF `generate`
cannot drop rows mid-batch), which costs compute but never time: the batch ends once no row is wanted.

The same criterion taps the tokens of streaming jobs (`Job.on_tokens`): between tokens it hands each such
row's new ids, up to its first EOS and its own limit, to its job, so streamed and plain requests share
batches. A streaming job whose client already read tokens is not retried alone when its batch fails (a retry
could contradict what was sent): it gets the batch's error.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from videor1.models.generation import GeneratedText, SamplingParams, eos_token_ids, generate_from_inputs
from videor1.models.inputs import SampleMedia, processor_inputs
from videor1.serve.errors import RequestError

logger = logging.getLogger("videor1.serve")


@dataclass(eq=False)  # a job is itself: equal prompts are still two requests
class Job:
    """One chat request ready for the model: its rendered prompt, decoded media and sampling parameters."""

    text: str
    media: list[SampleMedia]
    params: SamplingParams
    future: Future[GeneratedText]
    cancelled: threading.Event = field(default_factory=threading.Event)
    """Set when the client went away; the worker skips or stops the job."""
    generated: int = 0
    """Tokens generated for this job so far (written by the worker thread between tokens)."""
    on_tokens: Callable[[list[int]], None] | None = None
    """For streaming: called from the worker thread with each run of new token ids; it must not block."""
    streamed: int = 0
    """Tokens handed to `on_tokens` so far."""


CLIENT_LEFT = 499  # nginx's "client closed request": only logs see it, the client is gone


class _RowStop(StoppingCriteria):
    """Finishes each row once its job is cancelled or has its own token limit (HF stops when every row is done)."""

    def __init__(self, jobs: list[Job], prompt_length: int, eos_ids: Iterable[int] = ()) -> None:
        self.jobs, self.prompt_length = jobs, prompt_length
        self.eos = set(eos_ids)
        self.stopped: list[bool] = [False] * len(jobs)
        """Which jobs were cut short by their cancellation."""
        # rows past their EOS (HF pads them from then on), or whose hook failed: nothing more to stream
        self.ended: list[bool] = [job.on_tokens is None for job in jobs]
        for job in jobs:
            job.generated = job.streamed = 0  # a job retried alone after its batch failed starts over

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        generated = input_ids.shape[1] - self.prompt_length
        done = []
        for i, job in enumerate(self.jobs):
            limit = job.params.max_new_tokens
            if not self.stopped[i] and job.generated < limit:  # the row is still being written
                job.generated = min(generated, limit)
                self.stopped[i] = job.cancelled.is_set() and job.generated < limit
            done.append(self.stopped[i] or job.generated >= limit)
        self._stream(input_ids)
        return torch.tensor(done, device=input_ids.device)  # [B]

    def _stream(self, input_ids: torch.Tensor) -> None:
        """Hand each streaming row's new ids to its job."""
        rows = [i for i, job in enumerate(self.jobs)
                if not (self.ended[i] or self.stopped[i]) and job.streamed < job.generated]
        if not rows:
            return
        first = min(self.jobs[i].streamed for i in rows)
        last = max(self.jobs[i].generated for i in rows)
        # one copy off the device for all rows, not one sync per row
        new = input_ids[:, self.prompt_length + first : self.prompt_length + last].tolist()  # [B, T]
        for i in rows:
            job = self.jobs[i]
            ids = new[i][job.streamed - first : job.generated - first]
            eos = next((k for k, token in enumerate(ids) if token in self.eos), None)
            if eos is not None:
                ids, self.ended[i] = ids[: eos + 1], True
            job.streamed += len(ids)
            try:
                job.on_tokens(ids)
            except Exception:  # a hook that fails (its event loop closed) must not break the batch
                logger.exception("a streaming request's token hook failed; it gets no more tokens")
                self.ended[i] = True


def group_compatible(jobs: Iterable[Job], max_batch_size: int) -> list[list[Job]]:
    """Split jobs into batches of equal sampling parameters, in order of first arrival."""
    groups: dict[tuple[float, ...], list[list[Job]]] = {}
    order: list[list[Job]] = []
    for job in jobs:
        batches = groups.setdefault(job.params.batch_key, [])
        if not batches or len(batches[-1]) >= max_batch_size:
            batches.append([])
            order.append(batches[-1])
        batches[-1].append(job)
    return order


class GenerationWorker:
    """Owns the model; serves `Job`s from a bounded queue in batches."""

    def __init__(
        self, model: Any, processor: Any, *, max_batch_size: int, batch_wait_s: float, max_queue: int,
        max_prompt_tokens: int,
    ) -> None:
        self.model, self.processor = model, processor
        self.max_batch_size, self.batch_wait_s = max_batch_size, batch_wait_s
        self.max_prompt_tokens = max_prompt_tokens
        self._eos: list[int] | None = None  # read on the first streaming batch (tests pass stand-in models)
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._run, name="videor1-generation", daemon=True)
        self._stopping = threading.Event()
        self.batches = 0
        """`generate` calls made so far (with `requests`, shows how much batching happened)."""
        self.requests = 0
        """Requests answered so far."""
        self.running = 0
        """Requests in the batch being generated now."""
        self.submitted = 0
        """Requests accepted into the queue so far."""
        self.cancelled = 0
        """Requests dropped from the queue or stopped mid-generation because their client went away."""
        self._count_lock = threading.Lock()  # `cancelled` is counted from the event loop and the worker thread

    def start(self) -> None:
        """Start the worker thread."""
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Let the worker finish the batch in hand and exit; requests still queued get 503."""
        self._stopping.set()
        try:
            self._queue.put_nowait(None)  # wakes the worker if it is waiting for work
        except queue.Full:
            pass  # it is busy and sees the flag after its batch
        if self._thread.ident is not None:
            self._thread.join(timeout)
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not None and job.future.set_running_or_notify_cancel():
                job.future.set_exception(RequestError(503, "the server is shutting down"))

    @property
    def alive(self) -> bool:
        """Whether the worker thread is running."""
        return self._thread.is_alive()

    @property
    def pending(self) -> int:
        """Requests waiting in the queue."""
        return self._queue.qsize()

    def submit(self, text: str, media: list[SampleMedia], params: SamplingParams) -> Future[GeneratedText]:
        """Queue a request (also before `start`); RequestError 503 when the queue is full or the worker is gone."""
        return self.enqueue(Job(text, media, params, Future())).future

    def enqueue(self, job: Job) -> Job:
        """Queue a job (keep it to `cancel` it); RequestError 503 when the queue is full or the worker is gone."""
        if self._stopping.is_set() or (self._thread.ident is not None and not self._thread.is_alive()):
            raise RequestError(503, "the model worker is not running")
        try:
            self._queue.put_nowait(job)
        except queue.Full as exc:
            raise RequestError(503, "the server is busy: too many requests waiting; retry later") from exc
        self.submitted += 1  # only the event loop thread submits
        return job

    def cancel(self, job: Job) -> None:
        """The client went away: a queued job never reaches the model, a running one stops at its next token."""
        job.cancelled.set()
        if job.future.cancel():  # it was still queued; a running job is counted when its generation stops
            self._count_cancelled(1)

    def _count_cancelled(self, n: int) -> None:
        with self._count_lock:
            self.cancelled += n

    def _drop_cancelled(self, jobs: list[Job]) -> list[Job]:
        """The jobs still wanted; those cancelled after leaving the queue are answered 499 here."""
        wanted = []
        for job in jobs:
            if job.cancelled.is_set():
                job.future.set_exception(RequestError(CLIENT_LEFT, "the client closed the request"))
                self._count_cancelled(1)
            else:
                wanted.append(job)
        return wanted

    def _drain(self) -> list[Job]:
        """Block for one job, then take whatever else arrives within `batch_wait_s` (a None wakes it to stop)."""
        first = self._queue.get()
        if first is None:
            return []
        jobs = [first]
        # a short wait lets requests that arrive together share a batch; while a batch is generating,
        # newcomers pile up in the queue and are all taken at once by the next drain
        try:
            while len(jobs) < self.max_batch_size:
                job = self._queue.get(timeout=self.batch_wait_s) if self.batch_wait_s else self._queue.get_nowait()
                if job is None:
                    break  # stop() was called: serve what is in hand, then the loop sees the flag
                jobs.append(job)
        except queue.Empty:
            pass
        # a client that went away cancelled its future; skip its work
        return [job for job in jobs if job.future.set_running_or_notify_cancel()]

    def _run(self) -> None:
        while not self._stopping.is_set():
            for batch in group_compatible(self._drain(), self.max_batch_size):
                try:
                    self._serve(batch)
                except Exception as exc:  # a bug here must neither kill the worker nor leave clients waiting
                    logger.exception("unexpected error serving a batch")
                    for job in batch:
                        if not job.future.done():
                            job.future.set_exception(RequestError(500, f"internal error: {exc}"))

    def _serve(self, jobs: list[Job]) -> None:
        """Generate for one compatible batch; on any failure retry its jobs alone so only the culprit fails."""
        jobs = self._drop_cancelled(jobs)
        if not jobs:
            return
        try:
            inputs = processor_inputs(self.processor, [j.text for j in jobs], [m for j in jobs for m in j.media])
        except Exception as exc:  # the processor raises many types for unusable inputs
            self._isolate(jobs, RequestError(400, f"the request's inputs cannot be processed: {exc}"))
            return
        lengths = inputs["attention_mask"].sum(1).tolist()  # [B] prompt tokens, text and vision
        too_long = [n > self.max_prompt_tokens for n in lengths]
        if any(too_long):
            for job, n, bad in zip(jobs, lengths, too_long, strict=True):
                if bad:
                    job.future.set_exception(RequestError(
                        400, f"the prompt has {n} tokens (text and media); the limit is {self.max_prompt_tokens}"
                    ))
            rest = [job for job, bad in zip(jobs, too_long, strict=True) if not bad]
            if rest:
                self._serve(rest)
            return
        # the jobs share a batch_key, so every knob but the token limit is the first job's
        params = replace(jobs[0].params, max_new_tokens=max(j.params.max_new_tokens for j in jobs))
        if self._eos is None and any(j.on_tokens is not None for j in jobs):
            self._eos = eos_token_ids(self.model, self.processor.tokenizer)
        rows = _RowStop(jobs, inputs["input_ids"].shape[1], self._eos or ())
        self.running = len(jobs)
        try:
            results = generate_from_inputs(
                self.model, self.processor.tokenizer, inputs, params,
                row_max_new_tokens=[j.params.max_new_tokens for j in jobs],
                stopping_criteria=StoppingCriteriaList([rows]),
            )
        except Exception as exc:  # out of memory, a device error: the server keeps serving the others
            logger.exception("generation failed for a batch of %d", len(jobs))
            self._isolate(jobs, RequestError(500, f"generation failed: {exc}"))
            return
        finally:
            self.running = 0
        self.batches += 1
        self.requests += len(jobs) - sum(rows.stopped)
        logger.debug("batch of %d: %d new tokens at most", len(jobs), params.max_new_tokens)
        for job, (generation,), stopped in zip(jobs, results, rows.stopped, strict=True):
            if stopped:
                logger.info("stopped a request whose client left after %d of %d tokens", job.generated,
                            job.params.max_new_tokens)
                job.future.set_exception(RequestError(CLIENT_LEFT, "the client closed the request"))
            else:
                job.future.set_result(generation)
        self._count_cancelled(sum(rows.stopped))

    def _isolate(self, jobs: list[Job], error: RequestError) -> None:
        if len(jobs) == 1:
            jobs[0].future.set_exception(error)
            return
        for job in jobs:
            if job.streamed:  # its client has read tokens that a retry could contradict
                job.future.set_exception(error)
            else:
                self._serve([job])
