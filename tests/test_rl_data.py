"""The RL prompt stream (videor1.rl.data): order, sharding, epochs, failures, resume and prefetch.

Samples are built from rows (no media on disk); `load` is a fake that returns a SampleMedia for every
problem_id except the ones chosen to fail, and records which samples it was asked to decode.
"""

from __future__ import annotations

import threading

import pytest

from videor1.data.failures import TooManyFailures
from videor1.data.media import MediaError
from videor1.data.schema import parse_row
from videor1.models.inputs import SampleMedia
from videor1.rl.data import PromptStream

from .rows import good_row


class FakeLoad:
    """`load(sample)`: SampleMedia tagged with the problem_id, or MediaError for the ids in `bad`."""

    def __init__(self, bad=()):
        self.bad = set(bad)
        self.calls: list[int] = []
        self._lock = threading.Lock()

    def __call__(self, sample):
        with self._lock:
            self.calls.append(sample.problem_id)
        if sample.problem_id in self.bad:
            raise MediaError(sample.media_path, "truncated: moov atom not found")
        return SampleMedia(image=f"image-{sample.problem_id}")


def _samples(tmp_path, n):
    rows = [good_row(problem_id=i, path=f"videos/{i}.mp4") for i in range(n)]
    return [parse_row(row, row_number=i + 1, media_root=tmp_path) for i, row in enumerate(rows)]


def _ids(batch):
    return [item.sample.problem_id for item in batch]


def _stream(samples, load=None, **kwargs):
    kwargs.setdefault("seed", 0)
    return PromptStream(samples, load or FakeLoad(), **kwargs)


def _take(stream, sizes):
    """The problem_ids of consecutive batches of the given sizes."""
    return [_ids(stream.next_batch(size)) for size in sizes]


# ------------------------------------------------------------------------------------------------------ order


def test_order_is_deterministic_per_seed(tmp_path):
    samples = _samples(tmp_path, 8)
    first = _ids(_stream(samples, seed=0).next_batch(8))
    again = _ids(_stream(samples, seed=0).next_batch(8))
    other = _ids(_stream(samples, seed=1).next_batch(8))
    assert first == again
    assert other != first
    # each epoch is a permutation of the whole dataset
    assert sorted(first) == sorted(other) == list(range(8))
    # without shuffling, the dataset order
    assert _ids(_stream(samples, shuffle=False).next_batch(8)) == list(range(8))


def test_batch_boundaries_do_not_change_the_sequence(tmp_path):
    samples = _samples(tmp_path, 5)
    # 10 samples = two epochs of 5, taken as 10 at once or as 3 + 4 + 3 (crossing the epoch inside a batch)
    whole = _take(_stream(samples, seed=4), [10])[0]
    pieces = sum(_take(_stream(samples, seed=4), [3, 4, 3]), [])
    assert pieces == whole


def test_epochs_continue_with_a_new_permutation(tmp_path):
    samples = _samples(tmp_path, 6)
    stream = _stream(samples, seed=0)
    epoch0, epoch1 = _take(stream, [6, 6])
    assert sorted(epoch0) == sorted(epoch1) == list(range(6))
    assert epoch0 != epoch1
    # 12 consumed = two full epochs: the position rolled over to the start of epoch 2
    assert (stream.epoch, stream.cursor) == (2, 0)


# --------------------------------------------------------------------------------------------------- sharding


@pytest.mark.parametrize("shuffle", [False, True])
def test_ranks_are_disjoint_and_cover_the_epoch_without_the_tail(tmp_path, shuffle):
    samples = _samples(tmp_path, 7)
    # 7 samples over 2 ranks: 7 - 7 % 2 = 6 usable, 3 per rank, one sample dropped this epoch
    rank0 = _ids(_stream(samples, shuffle=shuffle, rank=0, world_size=2).next_batch(3))
    rank1 = _ids(_stream(samples, shuffle=shuffle, rank=1, world_size=2).next_batch(3))
    assert not set(rank0) & set(rank1)
    assert len(set(rank0) | set(rank1)) == 6
    if not shuffle:
        # rank r takes every 2nd entry from r; the tail sample 6 is dropped
        assert (rank0, rank1) == ([0, 2, 4], [1, 3, 5])
    else:
        # the two ranks interleave one shared permutation of the epoch
        permutation = _ids(_stream(samples, seed=0).next_batch(7))
        assert rank0 == permutation[0:6:2]
        assert rank1 == permutation[1:6:2]


def test_rank_epoch_rolls_over_after_its_share(tmp_path):
    samples = _samples(tmp_path, 7)
    stream = _stream(samples, shuffle=False, rank=1, world_size=2)
    # rank 1's share of each epoch is [1, 3, 5]; the 4th sample starts epoch 1
    assert _take(stream, [4]) == [[1, 3, 5, 1]]
    assert (stream.epoch, stream.cursor) == (1, 1)


def test_fewer_samples_than_processes_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="1 samples cannot feed 2 processes"):
        _stream(_samples(tmp_path, 1), world_size=2)


# --------------------------------------------------------------------------------------------------- failures


def test_failing_sample_is_skipped_reported_once_and_replaced(tmp_path):
    samples = _samples(tmp_path, 6)
    load = FakeLoad(bad={1})
    reported = []
    stream = _stream(
        samples, load, shuffle=False, max_failure_fraction=0.5, on_failure=lambda s, e: reported.append((s, e))
    )
    batch = stream.next_batch(3)
    # 0 loads, 1 fails and is skipped, 2 and 3 fill the batch: still 3 samples
    assert _ids(batch) == [0, 2, 3]
    assert [item.media.image for item in batch] == ["image-0", "image-2", "image-3"]
    assert all(item.seconds >= 0 for item in batch)
    assert (stream.attempted, stream.failed) == (4, 1)
    assert len(reported) == 1
    sample, error = reported[0]
    assert sample.problem_id == 1
    assert isinstance(error, MediaError) and error.reason.startswith("truncated:")
    # the rest of the epoch: no new failure, no second report, and sample 1 was decoded only once
    assert _ids(stream.next_batch(2)) == [4, 5]
    assert len(reported) == 1
    assert (stream.attempted, stream.failed) == (6, 1)
    assert load.calls == [0, 1, 2, 3, 4, 5]


def test_one_early_failure_does_not_end_the_run(tmp_path):
    samples = _samples(tmp_path, 8)
    # limit 0.25 is judged from ceil(1 / 0.25) = 4 attempts on; attempt 1 fails (1/1 > 0.25 but not judged),
    # attempts 2-4 load: 1/4 = 0.25 is not above the limit
    stream = _stream(samples, FakeLoad(bad={0}), shuffle=False, max_failure_fraction=0.25)
    assert _ids(stream.next_batch(3)) == [1, 2, 3]
    assert (stream.attempted, stream.failed) == (4, 1)


def test_too_many_failures_once_judged(tmp_path):
    samples = _samples(tmp_path, 8)
    reported = []
    stream = _stream(
        samples, FakeLoad(bad={0, 1, 3}), shuffle=False, max_failure_fraction=0.25,
        on_failure=lambda s, e: reported.append(s.problem_id),
    )
    # attempts: 0 fails (1/1, not judged), 1 fails (2/2, not judged), 2 loads, 3 fails: 3/4 = 0.75 > 0.25
    # with 4 ≥ ceil(1 / 0.25) attempts -> stop, after reporting sample 3
    with pytest.raises(TooManyFailures, match=r"3 of 4 samples failed"):
        stream.next_batch(5)
    assert (stream.attempted, stream.failed) == (4, 3)
    assert reported == [0, 1, 3]


def test_too_many_failures_judged_when_the_threshold_is_reached_by_successes(tmp_path):
    samples = _samples(tmp_path, 8)
    stream = _stream(samples, FakeLoad(bad={0, 1}), shuffle=False, max_failure_fraction=0.25)
    # attempts: 0 fails, 1 fails (not judged yet), 2 loads, 3 loads: 2/4 = 0.5 > 0.25 at 4 attempts
    with pytest.raises(TooManyFailures, match=r"2 of 4 samples failed"):
        stream.next_batch(5)


def test_zero_tolerance_stops_at_the_first_failure(tmp_path):
    samples = _samples(tmp_path, 8)
    stream = _stream(samples, FakeLoad(bad={2}), shuffle=False, max_failure_fraction=0.0)
    # limit 0 is judged from the first attempt: 0 and 1 load, 2 fails -> 1/3 > 0
    with pytest.raises(TooManyFailures, match=r"1 of 3 samples failed"):
        stream.next_batch(5)
    assert (stream.attempted, stream.failed) == (3, 1)


# ----------------------------------------------------------------------------------------------------- resume


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_continues_where_the_checkpoint_left(tmp_path, num_workers):
    samples = _samples(tmp_path, 10)
    bad = {3}
    # uninterrupted: 5 batches of 3 over 10 samples, crossing into epoch 1
    reference = _stream(samples, FakeLoad(bad), seed=3, max_failure_fraction=0.5, num_workers=num_workers)
    expected = _take(reference, [3] * 5)
    reference.close()

    first = _stream(samples, FakeLoad(bad), seed=3, max_failure_fraction=0.5, num_workers=num_workers)
    assert _take(first, [3, 3]) == expected[:2]
    state = first.state_dict()
    first.close()
    # the position counts consumed samples only (not the ones decoded ahead by prefetch threads)
    assert state["epoch"] == 0
    assert state["cursor"] == state["attempted"] == 6 + state["failed"]

    load = FakeLoad(bad)
    resumed = _stream(samples, load, seed=3, max_failure_fraction=0.5, num_workers=num_workers)
    resumed.load_state_dict(state)
    assert _take(resumed, [3, 3, 3]) == expected[2:]
    assert (resumed.attempted, resumed.failed) == (reference.attempted, reference.failed)
    resumed.close()
    if num_workers == 0:
        # decoded lazily: exactly the samples it yielded (plus the failed ones), nothing before the position
        upcoming = _take(_stream(samples, FakeLoad(), seed=3), [20])[0][state["cursor"] :]
        assert load.calls == upcoming[: len(load.calls)]
        assert len(load.calls) == resumed.attempted - state["attempted"]


def test_resume_with_no_decoding_before_the_position(tmp_path):
    samples = _samples(tmp_path, 4)
    first = _stream(samples, shuffle=False)
    first.next_batch(3)
    load = FakeLoad()
    resumed = _stream(samples, load, shuffle=False)
    resumed.load_state_dict(first.state_dict())
    # samples 0-2 were consumed before the checkpoint: only 3 (end of epoch 0) and 0 (epoch 1) are decoded
    assert _ids(resumed.next_batch(2)) == [3, 0]
    assert load.calls == [3, 0]


# --------------------------------------------------------------------------------------------------- prefetch


def test_thread_prefetch_yields_the_same_sequence(tmp_path):
    samples = _samples(tmp_path, 9)
    runs = {}
    for num_workers in (0, 2):
        reported = []
        stream = _stream(
            samples, FakeLoad(bad={4}), seed=5, max_failure_fraction=0.5, num_workers=num_workers,
            on_failure=lambda s, e, reported=reported: reported.append(s.problem_id),
        )
        batches = [stream.next_batch(4) for _ in range(4)]  # 16 of 18 over two epochs, sample 4 fails twice
        stream.close()
        runs[num_workers] = (
            [_ids(batch) for batch in batches],
            [[item.media.image for item in batch] for batch in batches],
            reported,
            stream.state_dict(),
        )
    assert runs[2] == runs[0]
    ids, _, reported, state = runs[0]
    assert reported == [4, 4]
    assert 4 not in sum(ids, [])
    # 16 loaded + 2 failed = 18 attempted = two full epochs of 9
    assert state == {"epoch": 2, "cursor": 0, "attempted": 18, "failed": 2}


def test_workers_decode_the_next_batch_while_the_caller_computes(tmp_path):
    load = FakeLoad()
    stream = _stream(_samples(tmp_path, 20), load, seed=1, num_workers=1)
    first = [item.sample.problem_id for item in stream.next_batch(4)]
    for _, future in list(stream._ahead):  # the caller "computes"; the worker goes on meanwhile
        future.result()
    assert len(load.calls) == 8 and load.calls[:4] == first  # the whole next batch was decoded ahead, in order
    second = [item.sample.problem_id for item in stream.next_batch(4)]
    assert second == load.calls[4:8]  # handed out as decoded, nothing decoded twice
    stream.close()
