"""The model worker: batches of compatible requests, per-request token limits, one bad request fails alone.

Requests whose client left are dropped from the queue, or stopped between tokens while their batch-mates run on.
"""

import time
from concurrent.futures import Future

import pytest

from tests.test_serve_messages import SMALL
from videor1.data.dataset import load_dataset
from videor1.models.generation import SamplingParams, generate_from_inputs
from videor1.models.inputs import load_sample_media, processor_inputs, prompt_text, vision_factor
from videor1.models.load import load_model, load_processor
from videor1.serve.errors import RequestError
from videor1.serve.worker import GenerationWorker, Job, group_compatible

TIMEOUT_S = 60
LONG_TOKENS = 2000


@pytest.fixture(scope="module")
def tiny(tiny_models, synth_root):
    path = tiny_models("qwen2_5_vl")
    processor = load_processor(path)
    samples = load_dataset(synth_root / "train.json", synth_root).samples
    video = next(s for s in samples if s.is_video)
    image = next(s for s in samples if not s.is_video)
    factor = vision_factor(processor)
    return {
        "model": load_model(path), "processor": processor,
        "video": (prompt_text(processor, video), [load_sample_media(video, SMALL, factor)]),
        "image": (prompt_text(processor, image), [load_sample_media(image, SMALL, factor)]),
    }


def job(params):
    return Job("", [], params, Future())


def test_group_compatible_batches_equal_sampling_in_arrival_order():
    greedy_3, greedy_9 = SamplingParams(3, 0.0, 0.5), SamplingParams(9, 0.0, 1.0)  # top_p is moot when greedy
    hot, warm = SamplingParams(5, 1.0, 0.9), SamplingParams(5, 0.7, 0.9)
    jobs = [job(p) for p in (greedy_3, hot, greedy_9, warm, hot, greedy_3)]
    groups = group_compatible(jobs, max_batch_size=2)
    assert [[jobs.index(j) for j in g] for g in groups] == [[0, 2], [1, 4], [3], [5]]


def test_each_row_stops_at_its_own_token_limit(tiny):
    processor = tiny["processor"]
    texts = [tiny["video"][0], tiny["image"][0]]
    inputs = processor_inputs(processor, texts, tiny["video"][1] + tiny["image"][1])
    params = SamplingParams(max_new_tokens=6, temperature=0)
    results = generate_from_inputs(tiny["model"], processor.tokenizer, inputs, params, row_max_new_tokens=[2, 6],
                             num_return_sequences=2)
    assert [len(r) for r in results] == [2, 2]
    for p, limit in enumerate([2, 6]):
        for g in results[p]:
            assert 0 < g.completion_tokens <= limit
            # below its limit a row can only have stopped at EOS; a cut row used its whole limit
            assert g.finish_reason == "stop" or g.completion_tokens == limit
            assert g.prompt_tokens == int(inputs["attention_mask"][p].sum())
    assert results[0][0] == results[0][1]  # greedy: the K completions are one completion repeated
    assert results[0][0].finish_reason == "length"  # the random tiny model does not stop within 2 tokens


def test_queued_requests_share_a_batch_and_a_bad_one_fails_alone(tiny):
    worker = GenerationWorker(tiny["model"], tiny["processor"], max_batch_size=8, batch_wait_s=0, max_queue=16,
                              max_prompt_tokens=10_000)
    greedy, sampled = SamplingParams(4, 0.0), SamplingParams(4, 1.0, 0.9)
    video_text, video_media = tiny["video"]
    # queued before the worker starts, so the first drain sees them all
    good = [worker.submit(*tiny["video"], greedy), worker.submit(*tiny["image"], greedy)]
    other = worker.submit(*tiny["image"], sampled)
    broken = worker.submit(video_text, [], greedy)  # a video placeholder without its video
    worker.start()
    try:
        for future in [*good, other]:
            assert future.result(TIMEOUT_S).completion_tokens <= 4
        error = broken.exception(TIMEOUT_S)
        assert isinstance(error, RequestError) and error.status == 400 and "cannot be processed" in error.message
        # [good, good, broken] failed as a batch, was retried one by one; [other] is a batch of its own
        assert worker.requests == 3 and worker.batches == 3
    finally:
        worker.stop(TIMEOUT_S)
    assert not worker.alive


def test_a_too_long_prompt_is_refused_and_the_rest_of_its_batch_served(tiny):
    text, media = tiny["image"]
    limit = int(processor_inputs(tiny["processor"], [text], media)["attention_mask"].sum())
    worker = GenerationWorker(tiny["model"], tiny["processor"], max_batch_size=8, batch_wait_s=0, max_queue=16,
                              max_prompt_tokens=limit)
    greedy = SamplingParams(2, 0.0)
    futures = [worker.submit(text + " and more words", media, greedy), worker.submit(text, media, greedy)]
    worker.start()
    try:
        error = futures[0].exception(TIMEOUT_S)
        assert isinstance(error, RequestError) and error.status == 400 and f"the limit is {limit}" in error.message
        assert futures[1].result(TIMEOUT_S).prompt_tokens == limit
    finally:
        worker.stop(TIMEOUT_S)


def test_a_full_queue_or_a_stopped_worker_answers_503(tiny):
    worker = GenerationWorker(tiny["model"], tiny["processor"], max_batch_size=1, batch_wait_s=0, max_queue=1,
                              max_prompt_tokens=10_000)
    params = SamplingParams(1, 0.0)
    queued = worker.submit(*tiny["image"], params)
    with pytest.raises(RequestError, match="busy") as busy:
        worker.submit(*tiny["image"], params)
    assert busy.value.status == 503
    worker.start()
    assert queued.result(TIMEOUT_S).completion_tokens == 1
    worker.stop(TIMEOUT_S)
    with pytest.raises(RequestError, match="not running"):
        worker.submit(*tiny["image"], params)
    never_started = GenerationWorker(tiny["model"], tiny["processor"], max_batch_size=1, batch_wait_s=0,
                                     max_queue=1, max_prompt_tokens=10_000)
    orphan = never_started.submit(*tiny["image"], params)
    never_started.stop()
    assert "shutting down" in str(orphan.exception(0))  # a stopping server answers what it will not serve


def wait_until(ready) -> None:
    """Poll until `ready()` holds (bounded)."""
    deadline = time.monotonic() + TIMEOUT_S
    while not ready():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_a_cancelled_row_stops_between_tokens_and_its_batch_mates_are_served_unchanged(tiny):
    worker = GenerationWorker(tiny["model"], tiny["processor"], max_batch_size=8, batch_wait_s=0, max_queue=16,
                              max_prompt_tokens=10_000)
    greedy = SamplingParams(LONG_TOKENS, 0.0)
    short = SamplingParams(12, 0.0)
    alone = generate_from_inputs(tiny["model"], tiny["processor"].tokenizer,
                                 processor_inputs(tiny["processor"], *tiny["video"]), short)[0][0]
    # one batch (equal sampling): the long image request is cancelled once it has started
    left = worker.enqueue(Job(*tiny["image"], greedy, Future()))
    kept = worker.enqueue(Job(*tiny["video"], short, Future()))
    worker.start()
    try:
        wait_until(lambda: left.generated > 0)
        worker.cancel(left)
        error = left.future.exception(TIMEOUT_S)
        assert isinstance(error, RequestError) and error.status == 499
        # stopped at the next token, nowhere near its limit (the batch ran on only for what it still owed)
        assert 0 < left.generated < LONG_TOKENS // 2
        assert kept.future.result(TIMEOUT_S) == alone
        assert (worker.cancelled, worker.requests, worker.batches) == (1, 1, 1)
        assert worker.submit(*tiny["image"], SamplingParams(2, 0.0)).result(TIMEOUT_S).completion_tokens <= 2
    finally:
        worker.stop(TIMEOUT_S)


def test_a_request_cancelled_in_the_queue_never_reaches_the_model(tiny):
    worker = GenerationWorker(tiny["model"], tiny["processor"], max_batch_size=8, batch_wait_s=0, max_queue=16,
                              max_prompt_tokens=10_000)
    calls = []
    hook = tiny["model"].register_forward_pre_hook(lambda module, args: calls.append(1))
    params = SamplingParams(3, 0.0)
    try:
        queued = worker.enqueue(Job(*tiny["image"], params, Future()))
        worker.cancel(queued)
        assert queued.future.cancelled() and worker.cancelled == 1
        # cancelled after the worker took it from the queue but before its batch was generated
        taken = worker.enqueue(Job(*tiny["image"], params, Future()))
        taken.cancelled.set()
        worker.start()
        error = taken.future.exception(TIMEOUT_S)
        assert isinstance(error, RequestError) and error.status == 499
        assert (worker.cancelled, worker.batches, worker.requests, calls) == (2, 0, 0, [])
        assert worker.submit(*tiny["image"], params).result(TIMEOUT_S).completion_tokens <= 3
        assert (worker.batches, worker.requests, worker.submitted) == (1, 1, 3) and calls
    finally:
        hook.remove()
        worker.stop(TIMEOUT_S)
