"""The resumable annotation loop: pending questions -> teacher -> rule filter -> kept / rejected / failed files.

Each question's outcome is written (and flushed) the moment its result arrives, so a killed run loses at
most the questions in flight; a rerun skips every question already kept or rejected and retries the ones
that failed transiently. A question keeps at most one output (the passing one with the highest accuracy),
so the consolidated file has one row per problem_id, as `load_dataset` requires.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from videor1.annotate.filter import FilterRules, best_kept, judge
from videor1.annotate.store import AnnotationStore
from videor1.annotate.teacher import Teacher, TeacherResult
from videor1.data.schema import Sample

logger = logging.getLogger("videor1.annotate")


@dataclass
class AnnotateSummary:
    """What one run did."""

    questions: int = 0
    """Valid input questions."""
    already_done: int = 0
    """Kept or rejected by earlier runs, skipped."""
    attempted: int = 0
    kept: int = 0
    rejected: int = 0
    failed: int = 0
    """Transient failures, left for the next run."""
    outputs: int = 0
    outputs_passing: int = 0
    written: int = 0
    """Rows in the consolidated output."""
    reasons: Counter[str] = field(default_factory=Counter)
    """Rejected outputs and failures by reason."""

    @property
    def remaining(self) -> int:
        """Questions without an outcome yet (failed, or beyond --max-questions)."""
        return self.questions - self.already_done - self.kept - self.rejected


def output_row(sample: Sample, process: str) -> dict[str, Any]:
    """The Video-R1-COT row: the input row with the teacher's `<think>` block as `process`, solution unchanged."""
    return {**sample.to_row(), "process": process}


def record(
    result: TeacherResult, store: AnnotationStore, rules: FilterRules, length: Callable[[str], int],
    summary: AnnotateSummary,
) -> None:
    """Judge one question's outputs and write its outcome."""
    sample = result.sample
    summary.attempted += 1
    if result.error is not None:
        summary.reasons[result.kind or "teacher"] += 1
        line = {"problem_id": sample.problem_id, "reason": result.kind, "detail": result.error}
        if result.permanent:
            summary.rejected += 1
            store.reject({**line, "sample": None, "accuracy": None, "output": ""})
        else:
            summary.failed += 1
            store.fail(line)
        logger.warning("problem_id %r: %s failure: %s", sample.problem_id, result.kind, result.error)
        return
    verdicts = [
        judge(output, truth=sample.answer, problem_type=sample.problem_type, rules=rules, length=length)
        for output in result.outputs
    ]
    summary.outputs += len(verdicts)
    summary.outputs_passing += sum(v.kept for v in verdicts)
    chosen = best_kept(verdicts)
    if chosen is not None:
        summary.kept += 1
        store.keep(output_row(sample, verdicts[chosen].process or ""))
        return
    summary.rejected += 1
    for i, (output, verdict) in enumerate(zip(result.outputs, verdicts, strict=True)):
        summary.reasons[verdict.reason or ""] += 1
        store.reject({
            "problem_id": sample.problem_id, "sample": i, "reason": verdict.reason, "detail": verdict.detail,
            "accuracy": verdict.accuracy, "output": output,
        })


def annotate(
    samples: Sequence[Sample], teacher: Teacher, store: AnnotationStore, rules: FilterRules, *,
    length: Callable[[str], int] = len, max_questions: int | None = None,
    on_result: Callable[[AnnotateSummary], None] | None = None,
) -> AnnotateSummary:
    """Annotate every pending question (resuming from the store's files), then write the consolidated output."""
    summary = AnnotateSummary(questions=len(samples))
    done = store.done_ids()
    pending = [s for s in samples if s.problem_id not in done]
    summary.already_done = len(samples) - len(pending)
    if max_questions is not None:
        pending = pending[:max_questions]
    logger.info("%d questions, %d done by earlier runs, %d to annotate now", len(samples),
                summary.already_done, len(pending))
    try:
        for result in teacher.answer(pending):
            record(result, store, rules, length, summary)
            if on_result is not None:
                on_result(summary)
    finally:
        # also after a fatal error or an interrupt: what was kept so far is usable at once
        summary.written = store.consolidate(s.problem_id for s in samples)
    logger.info(
        "kept %d, rejected %d, failed %d (to retry), %d of %d outputs passed; %d rows in %s; reasons %s",
        summary.kept, summary.rejected, summary.failed, summary.outputs_passing, summary.outputs,
        summary.written, store.out, dict(summary.reasons),
    )
    return summary
