"""MVBench (hub OpenGVLab/MVBench) to evaluation rows.

The release, as its hub tree and dataset card show: the questions in `json/<task>.json` (one config per
task) and the videos as zips under `video/` (`star.zip`, `clevrer.zip`, `perception.zip`, `tvqa.zip`,
`sta.zip`, `scene_qa.zip`, `ssv2_video.zip`, `vlnqa.zip`, `FunQA_test.zip`, `Moments_in_Time_Raw.zip`, and
`data0613.zip` with videos missing from the first upload; `nturgbd.zip` was deleted, `MVBench_videos_ntu.txt`
says where NTU RGB+D comes from), each unpacked next to itself into `video/<source>/…`. The hub's `video`
branch (lmms-eval's `revision: video`) holds the same folders unpacked at the top, with `ssv2_video_mp4/`,
`nturgbd_convert/`, `sta/sta_video_segment/`… instead. Row fields (lmms-eval tasks/mvbench/utils.py):
`video`, `question`, `candidates`, `answer` (the text of the right candidate) and, on the tasks with a time
bound, `start`/`end` (kept as columns: videor1 samples the whole clip). The folder of each task is the
`data_list` of MVBench's own evaluation (Ask-Anything video_chat2/mvbench.ipynb); lmms-eval's `DATA_LIST`
names the `video` branch's folders; both are searched, under `video/`, `video/data0613/` and the top.
Episodic reasoning (TVQA) is a folder of frames at 3 fps (`frames_fps3_hq`): `data_type: frame`, `fps: 3`.
The task is the category column.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from videor1.data.convert.common import Conversion, ConvertError, choice_solution, eval_row, lettered, read_native

NAME = "mvbench"
# task -> folders of its videos: MVBench's data_list first, then lmms-eval's DATA_LIST (the `video` branch)
FOLDERS: dict[str, tuple[str, ...]] = {
    "action_sequence": ("star/Charades_v1_480", "star/Charades_segment"),
    "action_prediction": ("star/Charades_v1_480", "star/Charades_segment"),
    "action_antonym": ("ssv2_video", "ssv2_video_mp4"),
    "fine_grained_action": ("Moments_in_Time_Raw/videos",),
    "unexpected_action": ("FunQA_test/test",),
    "object_existence": ("clevrer/video_validation",),
    "object_interaction": ("star/Charades_v1_480", "star/Charades_segment"),
    "object_shuffle": ("perception/videos",),
    "moving_direction": ("clevrer/video_validation",),
    "action_localization": ("sta/sta_video", "sta/sta_video_segment"),
    "scene_transition": ("scene_qa/video",),
    "action_count": ("perception/videos",),
    "moving_count": ("clevrer/video_validation",),
    "moving_attribute": ("clevrer/video_validation",),
    "state_change": ("perception/videos",),
    "fine_grained_pose": ("nturgbd", "nturgbd_convert"),
    "character_order": ("perception/videos",),
    "egocentric_navigation": ("vlnqa",),
    "episodic_reasoning": ("tvqa/frames_fps3_hq", "tvqa/video_fps3_hq_segment"),
    "counterfactual_inference": ("clevrer/video_validation",),
}
FRAME_TASKS = {"episodic_reasoning": 3.0}  # frames_fps3_hq: extracted at 3 frames per second
_BASES = ("video", "video/data0613", "", "data0613")


def locate(root: Path, task: str, video: str) -> str:
    """The video's path relative to root: the first candidate that exists, else the release's own folder.

    A clip missing under its name is also looked for as .mp4: Video-R1 converted ssv2's webm files to mp4.
    """
    folder = task in FRAME_TASKS
    names = [video] + ([str(PurePosixPath(video).with_suffix(".mp4"))] if video and not folder else [])
    candidates = [str(PurePosixPath(base) / sub / name) for sub in FOLDERS[task] for base in _BASES for name in names]
    if ".." not in PurePosixPath(video).parts:  # a name climbing out is reported by `media`, never looked up
        for rel in candidates:
            if (root / rel).is_dir() if folder else (root / rel).is_file():
                return rel
    return candidates[0]


def convert(root: Path) -> Conversion:
    """The rows of MVBench's 20 tasks."""
    done = Conversion(NAME)
    sources = sorted(p.relative_to(root).as_posix() for p in (root / "json").glob("*.json"))
    if not sources:
        raise ConvertError(f"{root}: no MVBench question files (json/<task>.json)")
    for source in sources:
        task = PurePosixPath(source).stem
        if task not in FOLDERS:
            done.skipped.append(f"{source}: not one of MVBench's 20 tasks")
            continue
        for number, row in read_native(root, source, done):
            rel = locate(root, task, str(row.get("video", "")))
            path = done.media(root, rel, source, number, folder=task in FRAME_TASKS)
            candidates = [str(c) for c in row.get("candidates") or []]
            options = lettered(candidates)
            answer = choice_solution(done, source, number, row.get("answer"), options, by_text=True)
            extra = {key: row[key] for key in ("start", "end") if key in row}
            if task in FRAME_TASKS:
                extra["fps"] = FRAME_TASKS[task]
            item = eval_row(
                f"{task}/{number}",
                str(row.get("question", "")),
                "multiple choice",
                options,
                answer,
                path,
                f"MVBench/{task}",
                task_type=task,
                source_video=row.get("video"),
                **extra,
            )
            if task in FRAME_TASKS:
                item["data_type"] = "frame"
            done.rows.append(item)
    return done
