"""`videor1 annotate` end to end: a scripted endpoint teacher (exact kept/rejected outcomes), a local tiny
teacher with a broken video, an outage and a kill mid-run that resume without duplicates or losses, and
the output accepted by `videor1 data validate --require-process` and by SFT."""

import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.fake_teacher import FakeTeacher
from tests.test_sft import sft_config
from videor1.annotate.filter import FilterRules, judge
from videor1.cli import app
from videor1.data.prompts import user_prompt
from videor1.rewards import extract_answer
from videor1.sft.trainer import SFTTrainer

MIN_THINK = 10
SMALL_MEDIA = ["--max-frames", "4", "--video-min-pixels", "3136", "--video-max-pixels", "3136",
               "--image-min-pixels", "3136", "--image-max-pixels", "3136"]
KILL_AFTER_OUTCOMES = 6
WAIT_S = 60


def rows_of(root: Path) -> list[dict]:
    return json.loads((root / "train.json").read_text())


def scripted(rows: list[dict], root: Path) -> tuple[dict, dict, dict]:
    """Outputs per problem_id, cycling through kept, wrong answer, malformed, and a too-short rationale."""
    outputs, expected, by_key = {}, {}, {}
    for i, row in enumerate(rows):
        answer = extract_answer(row["solution"])
        think = f"<think>Let me look closely at problem {row['problem_id']}.</think>"
        outputs[row["problem_id"]], expected[row["problem_id"]] = [
            (f"{think}\n<answer>{answer}</answer>", None),
            (f"{think}<answer>zzz</answer>", "accuracy"),  # scores 0 for every problem type here
            (f"The answer is {answer}.", "format"),
            (f"<think>Hmm.</think><answer>{answer}</answer>", "think_too_short"),
        ][i % 4]
        by_key[key(row, root)] = row["problem_id"]
    assert len(by_key) == len(rows)  # every request maps to one row
    return outputs, expected, by_key


def data_and_prompt(row: dict, root: Path) -> bytes:
    """What the teacher receives for a row: its media bytes and the paper's prompt."""
    return (root / row["path"]).read_bytes() + user_prompt(row["problem"], row["problem_type"], row["options"]).encode()


def key(row: dict, root: Path) -> str:
    return hashlib.sha256(data_and_prompt(row, root)).hexdigest()


def reply_from(outputs: dict, by_key: dict):
    return lambda data, text: outputs[by_key[hashlib.sha256(data + text.encode()).hexdigest()]]


def annotate(out: Path, root: Path, *args: str) -> object:
    command = ["annotate", "--data", str(root / "train.json"), "--media-root", str(root), "--out", str(out), *args]
    return CliRunner().invoke(app, command)


def endpoint_args(teacher: FakeTeacher, *args: str) -> list[str]:
    return ["--endpoint", teacher.url, "--teacher-name", "fake", "--min-think", str(MIN_THINK), *args]


def outcomes(out: Path) -> tuple[list, list[dict]]:
    """(kept problem_ids with repeats, rejected lines)."""
    stem = out.parent / out.stem
    kept = [json.loads(line)["problem_id"] for line in Path(f"{stem}.kept.jsonl").read_text().splitlines()]
    rejected = [json.loads(line) for line in Path(f"{stem}.rejected.jsonl").read_text().splitlines()]
    return kept, rejected


def assert_exact_outcomes(out: Path, rows: list[dict], expected: dict) -> None:
    """Every question has exactly one outcome, the scripted one, and the consolidated file holds the kept rows."""
    kept, rejected = outcomes(out)
    assert len(kept) == len(set(kept))
    assert Counter(line["problem_id"] for line in rejected) == Counter(
        pid for pid, reason in expected.items() if reason is not None
    )  # one output per question, so one rejected line per rejected question
    assert set(kept) == {pid for pid, reason in expected.items() if reason is None}
    assert {line["problem_id"]: line["reason"] for line in rejected} == {
        pid: reason for pid, reason in expected.items() if reason is not None
    }
    consolidated = json.loads(out.read_text())
    order = [row["problem_id"] for row in rows]
    assert [row["problem_id"] for row in consolidated] == [pid for pid in order if pid in set(kept)]


def test_endpoint_teacher_keeps_and_rejects_exactly_as_scripted(tmp_path, synth_root, tiny_models):
    rows = rows_of(synth_root)
    outputs, expected, by_key = scripted(rows, synth_root)
    out = tmp_path / "cot.json"
    with FakeTeacher(reply_from(outputs, by_key), api_key="secret") as teacher:
        result = annotate(out, synth_root, *endpoint_args(teacher, "--api-key", "secret", "--concurrency", "4"))
    assert result.exit_code == 0, result.output
    assert_exact_outcomes(out, rows, expected)
    assert teacher.requests == len(rows)
    # the paper's prompt and sampling defaults reach the teacher, the media part first
    body = teacher.bodies[0]
    assert (body["model"], body["temperature"], body["top_p"], body["max_tokens"]) == ("fake", 1.0, 0.95, 1024)
    content = body["messages"][0]["content"]
    assert content[0]["type"] in ("image_url", "video_url") and content[1]["text"].endswith("</answer> tags.")
    # kept rows are the input rows with the teacher's <think> block as process, solution unchanged
    by_id = {row["problem_id"]: row for row in rows}
    for row in json.loads(out.read_text()):
        think = outputs[row["problem_id"]][: outputs[row["problem_id"]].index("</think>") + len("</think>")]
        assert row == {**by_id[row["problem_id"]], "process": think}
    rejected = outcomes(out)[1]
    assert all(line["output"] == outputs[line["problem_id"]] for line in rejected)
    # settings (key masked) and log next to --out
    settings = yaml.safe_load((tmp_path / "cot.annotate.yaml").read_text())
    assert settings["api_key"] == "***" and settings["threshold"] == 0.6 and settings["min_think"] == MIN_THINK
    assert "kept 6, rejected 18, failed 0" in (tmp_path / "cot.annotate.log").read_text()

    validate = CliRunner().invoke(app, ["data", "validate", str(out), "--media-root", str(synth_root),
                                        "--require-process", "--check-media"])
    assert validate.exit_code == 0, validate.output
    sft = sft_config(tmp_path, tiny_models(), synth_root, f"data.train_file={out}", "batch_size=2", "max_steps=2")
    checkpoint = SFTTrainer(sft).train()
    losses = [json.loads(line)["loss/sft"] for line in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses) and (checkpoint / "model.safetensors").exists()


def test_several_samples_per_question_keep_the_best_passing_one(tmp_path, synth_root):
    rows = rows_of(synth_root)[:4]
    calls: Counter = Counter()

    answers = {hashlib.sha256(data_and_prompt(r, synth_root)).hexdigest(): extract_answer(r["solution"]) for r in rows}

    def reply(data, text):
        # per question: malformed, then a wrong answer, then the right one: the only passing output
        digest = hashlib.sha256(data + text.encode()).hexdigest()
        calls[digest] += 1
        attempt = calls[digest]
        if attempt == 1:
            return "no tags"
        return f"<think>Attempt {attempt}.</think><answer>{'zzz' if attempt == 2 else answers[digest]}</answer>"

    out = tmp_path / "cot.json"
    with FakeTeacher(reply) as teacher:
        result = annotate(out, synth_root, *endpoint_args(teacher, "--samples-per-question", "3", "--concurrency", "1",
                                                          "--max-questions", "4", "--min-think", "1"))
    assert result.exit_code == 0, result.output
    assert teacher.requests == 12
    kept, rejected = outcomes(out)
    assert kept == [r["problem_id"] for r in rows] and rejected == []
    assert all(row["process"] == "<think>Attempt 3.</think>" for row in json.loads(out.read_text()))


def test_an_outage_mid_run_is_retried_by_the_next_run(tmp_path, synth_root):
    rows = rows_of(synth_root)
    outputs, expected, by_key = scripted(rows, synth_root)
    out, served = tmp_path / "cot.json", 5
    with FakeTeacher(reply_from(outputs, by_key), fail_after=served) as teacher:
        first = annotate(out, synth_root, *endpoint_args(teacher, "--concurrency", "1", "--max-retries", "0"))
    assert first.exit_code == 1 and f"{len(rows) - served} questions still pending" in first.output
    kept, rejected = outcomes(out)
    assert len(kept) + len(rejected) == served  # one question in flight at a time: exactly the first five
    failed = [json.loads(line) for line in (tmp_path / "cot.failed.jsonl").read_text().splitlines()]
    assert len(failed) == len(rows) - served and all("HTTP 503" in f["detail"] for f in failed)

    with FakeTeacher(reply_from(outputs, by_key)) as teacher:
        second = annotate(out, synth_root, *endpoint_args(teacher))
    assert second.exit_code == 0, second.output
    assert teacher.requests == len(rows) - served  # nothing done before is asked again
    assert_exact_outcomes(out, rows, expected)


@pytest.mark.slow
def test_a_killed_run_resumes_without_duplicates_or_losses(tmp_path, synth_root):
    rows = rows_of(synth_root)
    outputs, expected, by_key = scripted(rows, synth_root)
    out = tmp_path / "cot.json"
    command = [sys.executable, "-m", "videor1.cli", "annotate", "--data", str(synth_root / "train.json"),
               "--media-root", str(synth_root), "--out", str(out)]
    with FakeTeacher(reply_from(outputs, by_key), delay_s=0.2) as teacher:
        process = subprocess.Popen([*command, *endpoint_args(teacher, "--concurrency", "2")],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
        try:
            deadline = time.monotonic() + WAIT_S
            while time.monotonic() < deadline and process.poll() is None:
                lines = sum(len(p.read_text().splitlines()) for p in tmp_path.glob("cot.*.jsonl"))
                if lines >= KILL_AFTER_OUTCOMES:
                    break
                time.sleep(0.05)
            assert process.poll() is None, "the run ended before it could be killed"
            os.kill(process.pid, signal.SIGKILL)
        finally:
            process.wait(WAIT_S)
    kept, rejected = outcomes(out)
    done_before = len(kept) + len(rejected)
    assert KILL_AFTER_OUTCOMES <= done_before < len(rows) and not out.exists()  # killed before consolidating
    with (tmp_path / "cot.kept.jsonl").open("a") as f:
        f.write('{"problem_id": 999, "proc')  # and as if the kill had cut a line in half

    with FakeTeacher(reply_from(outputs, by_key)) as teacher:
        resumed = annotate(out, synth_root, *endpoint_args(teacher))
    assert resumed.exit_code == 0, resumed.output
    assert teacher.requests == len(rows) - done_before
    assert_exact_outcomes(out, rows, expected)


def test_think_length_in_tokens_of_a_given_tokenizer(tmp_path, synth_root, tiny_models):
    from transformers import AutoTokenizer

    rows = rows_of(synth_root)
    outputs, expected, by_key = scripted(rows, synth_root)
    tokenizer = AutoTokenizer.from_pretrained(tiny_models())

    def tokens(text):
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    short = tokens("Hmm.")
    # rationale lengths of the outputs that reach the length rule (well formed, not the short "Hmm.")
    lengths = {pid: tokens(f"Let me look closely at problem {pid}.") for pid, reason in expected.items()
               if reason in (None, "accuracy")}
    longest = max(lengths.values())
    # bounds in tokens that admit every scripted rationale but the one-word "Hmm."
    bounds = ["--min-think", str(short + 1), "--max-think", str(longest), "--length-unit", "tokens"]
    out = tmp_path / "cot.json"
    with FakeTeacher(reply_from(outputs, by_key)) as teacher:
        result = annotate(out, synth_root, *endpoint_args(teacher), *bounds, "--tokenizer", str(tiny_models()))
    assert result.exit_code == 0, result.output
    assert_exact_outcomes(out, rows, expected)
    with FakeTeacher(reply_from(outputs, by_key)) as teacher:
        shorter = annotate(tmp_path / "b.json", synth_root, *endpoint_args(teacher), *bounds[:2], "--max-think",
                           str(longest - 1), "--length-unit", "tokens", "--tokenizer", str(tiny_models()))
    assert shorter.exit_code == 0
    too_long = {line["problem_id"] for line in outcomes(tmp_path / "b.json")[1] if line["reason"] == "think_too_long"}
    assert too_long == {pid for pid, n in lengths.items() if n == longest} != set()


def test_a_wrong_api_key_stops_the_run_without_marking_rows(tmp_path, synth_root):
    out = tmp_path / "cot.json"
    with FakeTeacher(lambda data, text: "", api_key="right") as teacher:
        result = annotate(out, synth_root, *endpoint_args(teacher, "--api-key", "wrong", "--concurrency", "1"))
    assert result.exit_code == 2 and "HTTP 401" in result.output
    assert outcomes(out) == ([], []) and json.loads(out.read_text()) == []


def test_local_teacher_batches_and_a_broken_video_fails_alone(tmp_path, synth_root, tiny_models):
    data = tmp_path / "data"
    shutil.copytree(synth_root, data)
    rows = rows_of(data)
    broken = next(r for r in rows if r["data_type"] == "video")
    video = data / broken["path"]
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 3])
    out = tmp_path / "cot.json"
    result = annotate(out, data, "--teacher", str(tiny_models()), "--threshold", "0", "--max-new-tokens", "12",
                      "--batch-size", "8", "--samples-per-question", "2", *SMALL_MEDIA)
    assert result.exit_code == 0, result.output
    kept, rejected = outcomes(out)
    media = [line for line in rejected if line["reason"] == "media"]
    assert [line["problem_id"] for line in media] == [broken["problem_id"]]
    assert Path(broken["path"]).name in media[0]["detail"] and media[0]["output"] == ""
    outputs = [line for line in rejected if line["reason"] != "media"]
    by_question = Counter(line["problem_id"] for line in outputs)
    assert set(by_question.values()) <= {2}  # both samples of every question without a kept output
    assert set(by_question) | set(kept) | {broken["problem_id"]} == {r["problem_id"] for r in rows}
    assert not set(by_question) & set(kept)
    by_id = {r["problem_id"]: r for r in rows}
    rules = FilterRules(threshold=0.0, min_think=1)
    for line in outputs:  # each recorded output is judged exactly as the filter judges it
        row = by_id[line["problem_id"]]
        verdict = judge(line["output"], truth=extract_answer(row["solution"]), problem_type=row["problem_type"],
                        rules=rules)
        assert (verdict.reason, verdict.accuracy) == (line["reason"], line["accuracy"])


@pytest.mark.parametrize(("bad", "words"), [
    (["--teacher", "x", "--endpoint", "http://127.0.0.1:1/v1"], "exactly one of"),
    (["--endpoint", "http://127.0.0.1:1/v1"], "needs --teacher-name"),
    (["--teacher", "x", "--min-think", "0"], "min_think"),
    (["--teacher", "x", "--min-think", "5", "--max-think", "4"], "below min_think"),
    (["--teacher", "x", "--length-unit", "words"], "length_unit"),
    (["--endpoint", "http://127.0.0.1:1/v1", "--teacher-name", "t", "--length-unit", "tokens"], "needs --tokenizer"),
])
def test_bad_settings_exit_2_naming_the_problem(tmp_path, synth_root, bad, words):
    result = annotate(tmp_path / "cot.json", synth_root, *bad)
    assert result.exit_code == 2 and words in result.output
