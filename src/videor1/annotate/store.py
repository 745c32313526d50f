"""The files of an annotation run, next to --out, appended line by line so a killed run loses nothing.

For `--out cot.json`:
- `cot.kept.jsonl`: one Video-R1-COT row per kept question (the input row, `process` from the teacher);
- `cot.rejected.jsonl`: one line per rejected output of a question that kept none (problem_id, sample,
  reason, detail, accuracy, output), and permanent failures (`media`, `request`) with an empty output;
- `cot.failed.jsonl`: transient failures (teacher unreachable, timeout, 5xx): a log of attempts only, so
  those questions are retried by the next run;
- `cot.json`: the consolidated kept rows in input order (a JSON list, or JSONL for a .jsonl --out), written
  atomically at the end of every run, which `videor1 sft` reads;
- `cot.annotate.yaml` / `cot.annotate.log`: the run's settings and log.
A question is done once it is in the kept or rejected file (or an earlier consolidated --out); a rerun skips
it. Lines are flushed as they are written; a line cut short by a kill is dropped on the next start.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from videor1.atomic import atomic_write_bytes, atomic_write_lines


class AnnotationStore:
    """Append-only kept / rejected / failed files and the consolidated output."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        stem = self.out.parent / self.out.stem
        self.kept_path = Path(f"{stem}.kept.jsonl")
        self.rejected_path = Path(f"{stem}.rejected.jsonl")
        self.failed_path = Path(f"{stem}.failed.jsonl")
        self.config_path = Path(f"{stem}.annotate.yaml")
        self.log_path = Path(f"{stem}.annotate.log")
        self._handles: dict[Path, IO[str]] = {}

    def __enter__(self) -> AnnotationStore:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        for path in (self.kept_path, self.rejected_path, self.failed_path):
            drop_partial_line(path)
            self._handles[path] = path.open("a", encoding="utf-8")
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()

    def done_ids(self) -> set[Any]:
        """problem_ids with a final outcome: kept, rejected, or in an earlier consolidated output."""
        done = {row["problem_id"] for row in read_jsonl(self.kept_path)}
        done |= {line["problem_id"] for line in read_jsonl(self.rejected_path)}
        done |= {row["problem_id"] for row in self._consolidated_rows()}
        return done

    def keep(self, row: dict[str, Any]) -> None:
        """Record a kept question's output row."""
        self._append(self.kept_path, row)

    def reject(self, record: dict[str, Any]) -> None:
        """Record one rejected output or a permanent failure."""
        self._append(self.rejected_path, record)

    def fail(self, record: dict[str, Any]) -> None:
        """Record a transient failure; the question stays pending."""
        self._append(self.failed_path, record)

    def _append(self, path: Path, record: dict[str, Any]) -> None:
        handle = self._handles[path]
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        handle.flush()  # a killed run keeps every line written before the kill

    def _consolidated_rows(self) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        if self.out.suffix == ".jsonl":
            return list(read_jsonl(self.out))
        return json.loads(self.out.read_text(encoding="utf-8"))

    def consolidate(self, order: Iterable[Any]) -> int:
        """Write --out: kept rows (this and earlier runs) in input order, then any unknown to the input."""
        rows = {row["problem_id"]: row for row in self._consolidated_rows()}
        rows.update({row["problem_id"]: row for row in read_jsonl(self.kept_path)})
        position = {pid: i for i, pid in enumerate(order)}
        ordered = sorted(rows.values(), key=lambda row: position.get(row["problem_id"], len(position)))
        if self.out.suffix == ".jsonl":
            chunks: Iterable[str] = (json.dumps(row, ensure_ascii=False) + "\n" for row in ordered)
        else:
            # the chunks json.dump would write, streamed rather than built as one string
            chunks = json.JSONEncoder(ensure_ascii=False, indent=1).iterencode(ordered)
        atomic_write_lines(self.out, chunks)  # a reader (or a kill) never sees half a file
        return len(ordered)


def drop_partial_line(path: Path) -> None:
    """Cut a file back to its last newline: a run killed mid-write leaves at most one partial last line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        atomic_write_bytes(path, data[: data.rfind(b"\n") + 1])


def read_jsonl(path: Path) -> Iterable[dict[str, Any]]:
    """Records of a JSONL file (none when it does not exist); a corrupt complete line is an error."""
    if not path.exists():
        return []
    records = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.endswith("\n"):
                break  # a partial last line, cut on the next start
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number}: not valid JSON ({exc}); fix or remove the line") from exc
    return records
