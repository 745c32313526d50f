"""Video-R1's own evaluation outputs, read and rescored with each benchmark's official metric.

Video-R1's `src/eval_bench.py` writes `{"results": [row + output, prediction, reward, correct],
"final_acc": [{"mean_acc", "mean_mra"}]}` (follow-up projects also write the same rows as JSONL). Its
scoring rule, reimplemented here so every difference from ours can be named:
- the answer is the text of the first `<answer>…</answer>`, stripped; the whole output when there is none;
- multiple choice: 1 when that text equals the solution's answer text exactly ("B. dog" or "(B)" for "B"
  scores 0);
- numerical: 0 when exactly one of the two has a decimal point or comma; else 1 when both parse (commas
  dropped) and agree to 2 decimals;
- regression: MRA on float32 with a 1e-8 epsilon in the denominator;
- OCR and free-form: always 0;
- a batch whose generate raised gets the output `<answer>error</answer>` for every row of the batch;
- `final_acc`: mean_acc over the non-regression rows, mean_mra over the regression rows, of the rows that
  the last invocation generated (a resumed run leaves the earlier rows out). The paper's VSI-Bench number
  is (mean_acc + mean_mra) / 2.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from videor1.eval.benchmarks import NUMERIC_TYPES, Benchmark, Category, category_from_row
from videor1.eval.data import row_fields
from videor1.eval.metrics import mean
from videor1.rewards.answers import extract_answer

BATCH_ERROR_OUTPUT = "<answer>error</answer>"
_ANSWER = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL)
# torch.arange(0.5, 0.975, 0.05, dtype=float32) computes in double, then rounds: the last is 0.94999999
_MRA_THRESHOLDS = (0.5 + 0.05 * np.arange(10)).astype(np.float32)
_AGREE = 1e-6

# Why a row's score differs from the file's reward, in the order they are checked.
REASONS: dict[str, str] = {
    "file_reward": "the file's reward is not eval_bench.py's rule for this row (a modified script?)",
    "metric": "the benchmark's official metric differs from eval_bench.py's rule for this problem type",
    "answer_reading": "same metric, answer read differently (eval_bench.py compares the <answer> text verbatim, "
    "or the whole output when the tags are missing; ours reads the option letter or the number)",
    "mra_precision": "MRA at an exact threshold: eval_bench.py's float32 with a 1e-8 epsilon vs exact decimals",
}


class OutputFileError(ValueError):
    """A file that is neither predictions.jsonl nor a Video-R1 eval output; names the file and row."""


@dataclass
class ScoredFile:
    """A file of outputs: our predictions records, or Video-R1 eval rows with the file's final_acc."""

    kind: str
    """"predictions" (videor1 records) or "original" (eval_bench.py rows)."""
    rows: list[tuple[int, Any]]
    final_acc: dict[str, Any] | None = None


def read_scored_file(path: str | Path) -> ScoredFile:
    """Read predictions.jsonl, or an eval_bench.py output ({"results": […]}, a JSON list or JSONL of rows)."""
    from videor1.data.dataset import DatasetError, JSONDepthError, loads_json, open_regular_file

    path = Path(path)
    try:
        with open_regular_file(path) as file:  # a FIFO or a device is refused, never waited on
            text = file.read().decode("utf-8")
    except (OSError, UnicodeDecodeError, DatasetError) as exc:
        raise OutputFileError(str(exc) if isinstance(exc, DatasetError) else f"{path}: {exc}") from exc
    final_acc = None
    try:
        data = loads_json(text)
    except JSONDepthError as exc:
        raise OutputFileError(f"{path}: {exc}") from exc
    except json.JSONDecodeError:
        data = None  # JSON lines
    if isinstance(data, dict) and isinstance(data.get("results"), list):
        rows = list(enumerate(data["results"], start=1))
        accs = data.get("final_acc")
        final_acc = accs[0] if isinstance(accs, list) and accs and isinstance(accs[0], dict) else None
    elif isinstance(data, list):
        rows = list(enumerate(data, start=1))
    elif data is not None and not isinstance(data, dict):
        raise OutputFileError(f"{path}: expected predictions or eval_bench.py results, got {type(data).__name__}")
    else:
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append((number, loads_json(line)))
            except (json.JSONDecodeError, JSONDepthError) as exc:
                raise OutputFileError(f"{path}: row {number}: not valid JSON: {exc}") from exc
    objects = [row for _, row in rows if isinstance(row, dict)]
    kind = "predictions" if objects and all("truth" in row for row in objects) else "original"
    return ScoredFile(kind, rows, final_acc)


# ---------------------------------------------------------------------------------------------------
# eval_bench.py's rule


def original_answer(output: str) -> str:
    """The answer eval_bench.py reads: the first <answer> text, stripped, else the whole output."""
    match = _ANSWER.search(output)
    return match.group(1).strip() if match and match.group(1).strip() else output


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def original_mra(prediction: float, truth: float) -> float:
    """eval_bench.py's MRA: float32, relative error over |truth| + 1e-8, strict comparison."""
    pred, gt = np.float32(prediction), np.float32(truth)
    error = np.abs(pred - gt) / (np.abs(gt) + np.float32(1e-8))
    return float(np.mean(error < (np.float32(1) - _MRA_THRESHOLDS)))


def original_reward(output: str, solution: str, problem_type: str) -> float:
    """The reward eval_bench.py gives an output (see the module docstring)."""
    answer = original_answer(output)
    truth = extract_answer(solution) or ""
    if problem_type == "multiple choice":
        return float(answer.strip() == truth.strip())
    if problem_type == "numerical":
        if (("." in truth) or ("," in truth)) != (("." in answer) or ("," in answer)):
            return 0.0
        gt, out = _number(truth), _number(answer)
        return float(gt is not None and out is not None and round(gt, 2) == round(out, 2))
    if problem_type == "regression":
        gt, out = _number(truth), _number(answer)
        return 0.0 if gt is None or out is None else original_mra(out, gt)
    return 0.0


def original_metric(problem_type: str | None) -> str:
    """The name of eval_bench.py's rule for a problem type, comparable with our metric names."""
    if problem_type == "regression":
        return "mra"
    if problem_type in ("multiple choice", "numerical"):
        return "accuracy"
    return "zero"


# ---------------------------------------------------------------------------------------------------
# Original rows as our records, and the comparison


_NEEDED = ("problem_type", "solution", "output")


def original_record(bench: Benchmark, number: int, row: Any, field_name: str | None = None) -> dict[str, Any]:
    """A prediction record (unscored) from one eval_bench.py row, keeping the file's reward beside it."""
    raw = row if isinstance(row, dict) else {}
    category: Category = category_from_row(bench, raw, field_name)
    problem_id = raw.get("problem_id")
    if not isinstance(problem_id, (int, str)) or isinstance(problem_id, bool):
        problem_id = f"row:{number}"
    missing = [name for name in _NEEDED if not isinstance(raw.get(name), str)]
    error, kind = None, None
    if not isinstance(row, dict):
        error, kind = f"row {number}: expected a JSON object, got {type(row).__name__}", "row"
    elif missing:
        error, kind = f"row {number}: {', '.join(missing)} missing or not text", "row"
    elif raw["output"].strip() == BATCH_ERROR_OUTPUT:
        error = "eval_bench.py's batch failed: its output is the '<answer>error</answer>' placeholder"
        kind = "generation"
    solution = raw.get("solution")
    return {
        "id": problem_id, "row": number, **row_fields(raw),
        "category": category.name, "category_source": category.source,
        "output": raw.get("output") if isinstance(raw.get("output"), str) else "",
        "error": error, "error_kind": kind,
        "file_reward": _float(raw.get("reward")),
        "file_prediction": raw.get("prediction"),
        "solution": solution if isinstance(solution, str) else None,
    }


def disagreement(record: Mapping[str, Any]) -> str | None:
    """Why our score of a rescored original row differs from the file's reward; None when they agree."""
    file_reward = record.get("file_reward")
    if file_reward is None or record.get("error_kind") == "row" or abs(file_reward - record["score"]) <= _AGREE:
        return None
    problem_type = record["problem_type"]
    rule = original_reward(record["output"], record["solution"], problem_type)
    if abs(rule - file_reward) > _AGREE:
        return "file_reward"
    if original_metric(problem_type) != record["metric"]:
        return "metric"
    if record["metric"] == "mra" and problem_type in NUMERIC_TYPES and _same_number(record):
        return "mra_precision"
    return "answer_reading"


def _float(value: Any) -> float | None:
    """A number written in the file, else None."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _same_number(record: Mapping[str, Any]) -> bool:
    """Whether eval_bench.py and we read the same number (so only the MRA arithmetic differs)."""
    theirs = _number(original_answer(record["output"]))
    return theirs is not None and record.get("answer") is not None and _number(record["answer"]) == theirs


def _file_means(rows: list[Mapping[str, Any]]) -> dict[str, float | None]:
    """mean_acc and mean_mra as eval_bench.py defines them, over the given rows' file rewards."""
    rewards = [(r["problem_type"], r["file_reward"]) for r in rows if r.get("file_reward") is not None]
    return {
        "mean_acc": mean(reward for kind, reward in rewards if kind != "regression"),
        "mean_mra": mean(reward for kind, reward in rewards if kind == "regression"),
    }


def headline(means: Mapping[str, float | None]) -> float | None:
    """The original's reported number: mean_acc, or (mean_acc + mean_mra) / 2 when there are regression rows."""
    acc, mra = means.get("mean_acc"), means.get("mean_mra")
    if mra is None:
        return acc
    return mra if acc is None else (acc + mra) / 2


def compare(
    bench: Benchmark, records: list[Mapping[str, Any]], summary: Mapping[str, Any],
    final_acc: Mapping[str, Any] | None, excluded: list[Mapping[str, Any]],
) -> dict[str, Any]:
    """The file's own scores next to ours, and each row scored differently counted by reason with an example."""
    reasons: dict[str, dict[str, Any]] = {}
    for record in records:
        reason = disagreement(record)
        if reason is None:
            continue
        entry = reasons.setdefault(reason, {"rows": 0, "why": REASONS[reason], "example": _example(record)})
        entry["rows"] += 1
    written = None
    if final_acc is not None:
        written = {k: _float(final_acc.get(k)) for k in ("mean_acc", "mean_mra")}
        # eval_bench.py writes mean_mra 0.0 when there are no regression rows
        if not any(r.get("problem_type") == "regression" for r in (*records, *excluded)):
            written["mean_mra"] = None
    file_all = _file_means([*records, *excluded])
    notes = []
    if written is not None and any(
        written[k] is not None and file_all[k] is not None and abs(written[k] - file_all[k]) > 1e-4 for k in written
    ):
        notes.append("final_acc differs from the mean of the file's own rewards: eval_bench.py takes it over the "
                     "rows its last invocation generated, so a resumed run leaves the earlier rows out")
    if excluded:
        notes.append(f"{len(excluded)} rows outside {bench.title}'s evaluated subset (multiple choice only) count "
                     "in the file's mean_acc, not in ours")
    if summary["aggregation"] == "task_mean":
        notes.append(f"{bench.title}'s overall is the mean over its tasks; the file's mean_acc is over rows")
    placeholders = sum(r.get("error_kind") == "generation" for r in records)
    if placeholders:
        notes.append(f"{placeholders} rows carry eval_bench.py's batch-failure placeholder (counted as failed)")
    return {
        "source": "Video-R1 eval_bench.py",
        "final_acc": written,
        "file_headline": headline(written) if written is not None else None,
        "file_rewards": {**file_all, "headline": headline(file_all), "rows": len(records) + len(excluded)},
        "ours": summary["overall"],
        "ours_aggregation": summary["aggregation"],
        "rows_compared": sum(r.get("file_reward") is not None and r.get("error_kind") != "row" for r in records),
        "rows_differing": sum(entry["rows"] for entry in reasons.values()),
        "reasons": reasons,
        "notes": notes,
    }


def _example(record: Mapping[str, Any]) -> dict[str, Any]:
    """The first row of a reason, as evidence: what each side read and scored."""
    return {
        "row": record["row"], "id": record["id"], "category": record["category"],
        "problem_type": record["problem_type"], "truth": record["truth"],
        "file_answer": original_answer(record["output"]), "file_reward": record["file_reward"],
        "our_answer": record.get("answer"), "our_metric": record["metric"], "our_score": record["score"],
    }

