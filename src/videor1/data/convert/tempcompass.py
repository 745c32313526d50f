"""TempCompass (hub lmms-lab/TempCompass, now lmms-eval/TempCompass) to evaluation rows: multiple choice.

The release, as its hub tree shows: one parquet per task format, `multi-choice/`, `yes_no/`,
`caption_matching/` and `captioning/` (`test-00000-of-00001.parquet`), and the videos in
`tempcompass_videos.zip`, unpacked next to it into `videos/<video_id>.mp4` (lmms-eval
tasks/tempcompass/utils.py reads `<cache>/videos/<video_id>.mp4`). Video-R1 reports the multiple-choice
subset, the only one converted; the others are listed as skipped. Multiple-choice row fields: `video_id`,
`dim` (the aspect: action, speed, direction, order, attribute_change — the category column), `question`
(the question's line, then one line per option, "A. …") and `answer` (the right option's whole line,
"A. …": lmms-eval compares it with the parsed prediction).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from videor1.data.convert.common import Conversion, ConvertError, choice_solution, eval_row, lettered, read_native

NAME = "tempcompass"
SUBSET = "multi-choice"
OTHER_SUBSETS = ("yes_no", "caption_matching", "captioning")
_OPTION_LINE = re.compile(r"^\s*\(?[A-Z][.):]")


def split_question(text: str) -> tuple[str, list[str]]:
    """The question's own lines and the option lines that follow them."""
    lines = [line for line in text.split("\n") if line.strip()]
    first = next((i for i, line in enumerate(lines) if _OPTION_LINE.match(line)), len(lines))
    return "\n".join(lines[:first]).strip(), lines[first:]


def convert(root: Path) -> Conversion:
    """The rows of TempCompass's multiple-choice subset."""
    done = Conversion(NAME)
    sources = sorted(p.relative_to(root).as_posix() for p in (root / SUBSET).rglob("*.parquet"))
    if not sources:
        raise ConvertError(f"{root}: no TempCompass multiple-choice parquet ({SUBSET}/*.parquet)")
    done.skipped = [f"{name}/: not multiple choice" for name in OTHER_SUBSETS if (root / name).is_dir()]
    seen: Counter[tuple[str, str]] = Counter()
    for source in sources:
        for number, row in read_native(root, source, done):
            video_id, dim = str(row.get("video_id", "")), str(row.get("dim", ""))
            problem, lines = split_question(str(row.get("question", "")))
            if not lines:
                done.issue(source, number, "question", "no option lines ('A. …') after the question")
            options = lettered(lines)
            answer = choice_solution(done, source, number, row.get("answer"), options, by_text=True)
            path = done.media(root, f"videos/{video_id}.mp4", source, number)
            # a video has several questions per aspect; the id numbers them in file order
            seen[(video_id, dim)] += 1
            done.rows.append(
                eval_row(
                    f"{video_id}/{dim}/{seen[(video_id, dim)]}",
                    problem,
                    "multiple choice",
                    options,
                    answer,
                    path,
                    "TempCompass",
                    dim=dim,
                    video_id=video_id,
                )
            )
    return done
