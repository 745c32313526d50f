"""MMVU (hub yale-nlp/MMVU) to evaluation rows.

The release, as its hub tree shows: `validation.json` at the top (`data/validation.json` in the GitHub repo
yale-nlp/MMVU) and the videos as plain files, `videos/<Subject>/<n>.mp4` — no archive. Row fields (read
from validation.json itself): `id` ("validation_0"), `video` (the file's hub URL,
`https://huggingface.co/datasets/yale-nlp/MMVU/resolve/main/videos/Art/0.mp4`), `question_type`
("multiple-choice" or "open-ended"), `metadata` (`subject`, spelled with spaces: "Computer Science", while
its folder is `Computer_Science`), `question`, `choices` ({"A": …, "E": …}, all empty on open-ended rows)
and `answer` (a letter on multiple-choice rows, else the text). Video-R1 reports the multiple-choice subset;
the open-ended rows are converted too (as free-form) and the benchmark's subset rule leaves them out of the
score. The subject is the category column.
"""

from __future__ import annotations

from pathlib import Path

from videor1.data.convert.common import (
    Conversion,
    choice_solution,
    eval_row,
    first_existing,
    is_number,
    lettered,
    read_native,
    solution,
)

NAME = "mmvu"
_HUB_PREFIX = "/resolve/main/"


def _relative(video: str) -> str:
    """The file's path in the release from its hub URL (or the path itself when it is one already)."""
    if _HUB_PREFIX in video:
        return video.split(_HUB_PREFIX, 1)[1]
    return video.removeprefix("./")


def convert(root: Path) -> Conversion:
    """The rows of MMVU's validation split."""
    done = Conversion(NAME)
    source = first_existing(root, ["validation.json", "data/validation.json"], "MMVU question file")
    for number, row in read_native(root, source, done):
        metadata = row.get("metadata") if isinstance(row.get("metadata"), dict) else {}
        path = done.media(root, _relative(str(row.get("video", ""))), source, number)
        choices = row.get("choices") if isinstance(row.get("choices"), dict) else {}
        if row.get("question_type") == "multiple-choice":
            # the letters are the dict's keys; an option left empty past the last real one is no option
            texts = [str(choices[key]) for key in sorted(choices)]
            while texts and not texts[-1].strip():
                texts.pop()
            options, problem_type = lettered(texts), "multiple choice"
            answer = choice_solution(done, source, number, row.get("answer"), options)
        else:
            truth = str(row.get("answer", "")).strip()
            options, problem_type, answer = [], "numerical" if is_number(truth) else "free-form", solution(truth)
        done.rows.append(
            eval_row(
                row.get("id", number),
                str(row.get("question", "")),
                problem_type,
                options,
                answer,
                path,
                "MMVU",
                subject=metadata.get("subject"),
                question_type=row.get("question_type"),
            )
        )
    return done
