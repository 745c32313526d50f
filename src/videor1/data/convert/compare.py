"""Our converted rows against Video-R1's own evaluation file (`eval_<bench>.json` of hub Video-R1/Video-R1-eval).

Video-R1's files use the training schema with paths relative to its `src/r1-v/Evaluation` folder
(`eval_bench.py` opens `Evaluation + path[1:]`), so their `path` does not resolve under our unpacked release.
Rows are paired by media file name (stem) and question text; rows left over are paired by media stem alone
when exactly one row on each side is left for it (a reworded question). Reported: rows only in one file,
question / options / answer / problem_type differences by field (a few examples each), and counts by
category. `rerooted` gives Video-R1's rows with each paired row's `path` replaced by ours (the original kept
as `video_r1_path`), so Video-R1's own questions can be evaluated on the media `prepare` unpacked.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import PurePosixPath
from typing import Any

from videor1.data.convert.common import option_text
from videor1.data.schema import media_field
from videor1.eval.benchmarks import category_from_row, get_benchmark
from videor1.rewards.answers import extract_answer

EXAMPLES = 5
FIELDS = ("problem", "options", "answer", "problem_type")


def _norm(text: Any) -> str:
    return re.sub(r"\s+", " ", str(text or "")).strip().lower()


def _stem(row: dict[str, Any]) -> str:
    key = media_field(row)
    value = row.get(key) if key else None
    return PurePosixPath(str(value or "").replace("\\", "/").rstrip("/")).stem.lower()


def _question(row: dict[str, Any]) -> str:
    # eval_bench.py appends "Options:" and the options itself; a file that already holds them compares the same
    return _norm(str(row.get("problem", "")).split("Options:")[0])


def _values(row: dict[str, Any]) -> dict[str, str]:
    options = row.get("options") if isinstance(row.get("options"), list) else []
    return {
        "problem": _question(row),
        "options": " | ".join(_norm(option_text(str(o))) for o in options),
        "answer": _norm(extract_answer(str(row.get("solution", ""))) or ""),
        "problem_type": _norm(row.get("problem_type")),
    }


def pair(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """(our index, their index) of the rows that are the same question."""
    waiting: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, row in enumerate(ours):
        waiting[(_stem(row), _question(row))].append(i)
    pairs, left = [], []
    for j, row in enumerate(theirs):
        queue = waiting.get((_stem(row), _question(row)))
        if queue:
            pairs.append((queue.pop(0), j))
        else:
            left.append(j)
    by_stem: dict[str, list[int]] = defaultdict(list)
    for indices in waiting.values():
        for i in indices:
            by_stem[_stem(ours[i])].append(i)
    their_stems = Counter(_stem(theirs[j]) for j in left)
    for j in left:
        stem = _stem(theirs[j])
        if their_stems[stem] == 1 and len(by_stem.get(stem, [])) == 1:
            pairs.append((by_stem[stem][0], j))
    return sorted(pairs)


def compare(bench: str, ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> dict[str, Any]:
    """The comparison report (JSON-ready) of our rows and Video-R1's for one benchmark."""
    benchmark = get_benchmark(bench)
    pairs = pair(ours, theirs)
    mine, other = {i for i, _ in pairs}, {j for _, j in pairs}
    differences: dict[str, dict[str, Any]] = {name: {"count": 0, "examples": []} for name in FIELDS}
    for i, j in pairs:
        a, b = _values(ours[i]), _values(theirs[j])
        for name in FIELDS:
            if a[name] != b[name]:
                entry = differences[name]
                entry["count"] += 1
                if len(entry["examples"]) < EXAMPLES:
                    entry["examples"].append(
                        {
                            "ours": ours[i].get("problem_id"),
                            "video_r1": theirs[j].get("problem_id"),
                            "ours_value": a[name],
                            "video_r1_value": b[name],
                        }
                    )

    def only(rows: list[dict[str, Any]], paired: set[int]) -> dict[str, Any]:
        ids = [rows[k].get("problem_id") for k in range(len(rows)) if k not in paired]
        return {"count": len(ids), "examples": ids[:EXAMPLES]}

    def categories(rows: list[dict[str, Any]]) -> dict[str, int]:
        return dict(sorted(Counter(category_from_row(benchmark, row).name for row in rows).items()))

    return {
        "benchmark": benchmark.key,
        "ours": len(ours),
        "video_r1": len(theirs),
        "paired": len(pairs),
        "only_ours": only(ours, mine),
        "only_video_r1": only(theirs, other),
        "differences": differences,
        "categories": {"ours": categories(ours), "video_r1": categories(theirs)},
    }


def rerooted(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Video-R1's rows with each paired row's media path replaced by ours (`video_r1_path` keeps theirs)."""
    ours_of = {j: i for i, j in pair(ours, theirs)}
    rows = []
    for j, row in enumerate(theirs):
        row = dict(row)
        if j in ours_of and (key := media_field(row)) is not None:
            row["video_r1_path"] = row[key]
            row[key] = ours[ours_of[j]]["path"]
        rows.append(row)
    return rows
