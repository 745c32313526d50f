"""Video-MME (hub lmms-lab/Video-MME, now lmms-eval/Video-MME) to evaluation rows, without subtitles.

The release, as its hub tree shows: the questions in `videomme/test-00000-of-00001.parquet`, the videos in
`videos_chunked_01.zip` … `videos_chunked_20.zip` (separate, complete zips, not parts of one) and the
subtitles in `subtitle.zip`, all unpacked next to them: videos into `data/<videoID>.mp4` (some `.MP4` or
`.mkv`, which lmms-eval tasks/videomme/utils.py also tries), subtitles into `subtitle/<videoID>.srt`
(unused: Video-R1 evaluates without subtitles). Row fields (lmms-eval's `videomme_process_results` reads
them): `video_id` ("001"), `duration` (short / medium / long — the category column), `domain`,
`sub_category`, `videoID` (the YouTube id naming the file), `question_id` ("001-1"), `task_type`,
`question`, `options` (["A. …", …]) and `answer` (a letter).
"""

from __future__ import annotations

from pathlib import Path

from videor1.data.convert.common import Conversion, ConvertError, choice_solution, eval_row, lettered, read_native

NAME = "videomme"
SUFFIXES = (".mp4", ".MP4", ".mkv")


def convert(root: Path) -> Conversion:
    """The rows of Video-MME's test set."""
    done = Conversion(NAME)
    sources = sorted(p.relative_to(root).as_posix() for p in (root / "videomme").glob("*.parquet"))
    if not sources:
        raise ConvertError(f"{root}: no Video-MME question parquet (videomme/*.parquet)")
    for source in sources:
        for number, row in read_native(root, source, done):
            video = str(row.get("videoID", ""))
            rel = next((f"data/{video}{s}" for s in SUFFIXES if (root / f"data/{video}{s}").is_file()), None)
            path = done.media(root, rel or f"data/{video}.mp4", source, number)
            options = lettered([str(o) for o in row.get("options") or []])
            answer = choice_solution(done, source, number, row.get("answer"), options)
            done.rows.append(
                eval_row(
                    row.get("question_id", number),
                    str(row.get("question", "")),
                    "multiple choice",
                    options,
                    answer,
                    path,
                    "Video-MME",
                    duration=row.get("duration"),
                    domain=row.get("domain"),
                    sub_category=row.get("sub_category"),
                    task_type=row.get("task_type"),
                    videoID=video,
                )
            )
    return done
