"""VideoMMMU (hub lmms-lab/VideoMMMU, moved to lmms-eval/VideoMMMU) to evaluation rows.

The release, as its hub tree shows: one parquet per track, `Perception/`, `Comprehension/` and
`Adaptation/` (`test-00000-of-00001.parquet`; the parquet converter's `<track>/test/0000.parquet` is read
the same way), and the videos in `Art.zip`, `Business.zip`, `Engineering.zip`, `Humanities.zip`,
`Medicine.zip` and `Science.zip`, unpacked next to them into `<Discipline>/<id>.mp4`. Row fields (lmms-eval
tasks/videommmu/utils.py): `id` ("validation_Art_1": the subject between the first and the last
underscore), `question`, `options` (a list, lettered or not), `answer` (a letter on multiple-choice rows)
and `question_type` ("multiple-choice", else open). The three tracks ask about the same videos, so the
`id` repeats across them; a row's `problem_id` is `<track>/<id>`. The track is the category column.
"""

from __future__ import annotations

from pathlib import Path

from videor1.data.convert.common import (
    Conversion,
    ConvertError,
    choice_solution,
    eval_row,
    is_number,
    lettered,
    read_native,
)
from videor1.data.convert.common import solution as answer_tag

NAME = "videommmu"
TRACKS = ("Perception", "Comprehension", "Adaptation")
# lmms-eval videommmu/utils.py get_cache_dir: the zip (discipline folder) holding each subject's videos
DISCIPLINES = {
    "Art": ("Art", "Art_Theory", "Design", "Music"),
    "Science": ("Biology", "Chemistry", "Geography", "Math", "Physics"),
    "Humanities": ("History", "Literature", "Sociology", "Psychology"),
    "Engineering": (
        "Agriculture",
        "Architecture_and_Engineering",
        "Computer_Science",
        "Electronics",
        "Energy_and_Power",
        "Materials",
        "Mechanical_Engineering",
    ),
    "Medicine": (
        "Basic_Medical_Science",
        "Clinical_Medicine",
        "Diagnostics_and_Laboratory_Medicine",
        "Pharmacy",
        "Public_Health",
    ),
    "Business": ("Accounting", "Economics", "Finance", "Manage", "Marketing"),
}
_DISCIPLINE_OF = {subject: folder for folder, subjects in DISCIPLINES.items() for subject in subjects}


def _subject(video_id: str) -> str:
    return "_".join(video_id.split("_")[1:-1])


def convert(root: Path) -> Conversion:
    """The rows of the three tracks."""
    done = Conversion(NAME)
    found = {
        track: sorted(p.relative_to(root).as_posix() for p in (root / track).rglob("*.parquet"))
        for track in TRACKS
        if (root / track).is_dir()
    }
    if not any(found.values()):
        raise ConvertError(f"{root}: no VideoMMMU track parquet ({', '.join(f'{t}/*.parquet' for t in TRACKS)})")
    # one hub revision held a `Comprehension_Engineering/` beside the tracks: said, not read
    done.skipped = [
        f"{folder.name}/: not one of the tracks {', '.join(TRACKS)}"
        for folder in sorted(root.iterdir())
        if folder.is_dir()
        and folder.name not in TRACKS
        and not folder.name.startswith(".")
        and any(folder.rglob("*.parquet"))
    ]
    for track, sources in found.items():
        for source in sources:
            for number, row in read_native(root, source, done):
                video_id = str(row.get("id", ""))
                discipline = _DISCIPLINE_OF.get(_subject(video_id))
                if discipline is None:
                    done.issue(source, number, "id", f"subject {_subject(video_id)!r} has no discipline folder")
                path = done.media(root, f"{discipline or _subject(video_id)}/{video_id}.mp4", source, number)
                options = [str(o) for o in row.get("options") or []]
                if row.get("question_type") == "multiple-choice":
                    options, problem_type = lettered(options), "multiple choice"
                    answer = choice_solution(done, source, number, row.get("answer"), options)
                else:
                    truth = str(row.get("answer", "")).strip()
                    options, problem_type = [], "numerical" if is_number(truth) else "free-form"
                    answer = answer_tag(truth)
                done.rows.append(
                    eval_row(
                        f"{track}/{video_id}",
                        str(row.get("question", "")),
                        problem_type,
                        options,
                        answer,
                        path,
                        "VideoMMMU",
                        track=track,
                        id=video_id,
                        question_type=row.get("question_type"),
                    )
                )
    return done
