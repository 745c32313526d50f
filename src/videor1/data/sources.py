"""The datasets `videor1 data fetch` knows: which Hugging Face hub repo holds each and which of its files make it.

Every fact here (repo id, file layout, commit, size, gating) comes from the public record named in the entry's
`source`: the hub's file listings and dataset cards, Video-R1's README and scripts, lmms-eval's task YAMLs. Where a
layout could not be confirmed file by file, the patterns are broad (a folder, an extension) and the entry says so.
Patterns are huggingface_hub's `allow_patterns` (fnmatch: `*` also matches `/`). A revision is pinned only where
the full commit of a listing was found; the rest follow `main`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# what `videor1 data prepare` does with a fetched folder: Video-R1-format training data, Video-R1's own eval
# JSONs, or one benchmark's native files to convert (the keys of videor1.eval.benchmarks.BENCHMARKS)
BENCHMARK_KINDS = ("vsibench", "videommmu", "mmvu", "mvbench", "tempcompass", "videomme")
KINDS = ("video-r1-train", "video-r1-eval", *BENCHMARK_KINDS)


@dataclass(frozen=True)
class Source:
    """One fetchable name: a hub repo, the files that make the dataset, named subsets of them."""

    name: str
    repo_id: str
    allow_patterns: tuple[str, ...]
    subsets: Mapping[str, tuple[str, ...]]
    kind: str
    description: str
    source: str  # where the facts above were read (URLs, files)
    repo_type: str = "dataset"
    revision: str = "main"
    gated: bool = False  # needs a token of an account that accepted the repo's terms
    size: str = "not published"
    notes: tuple[str, ...] = field(default=())

    def patterns(self, subsets: Iterable[str] = (), include: Iterable[str] = ()) -> tuple[str, ...]:
        """The allow_patterns of the named subsets plus `include`; the full set when both are empty."""
        chosen: list[str] = []
        for subset in subsets:
            if subset not in self.subsets:
                raise UnknownSubsetError(
                    f"{self.name}: unknown subset {subset!r}; its subsets: {', '.join(self.subsets)}"
                )
            chosen += self.subsets[subset]
        chosen += include
        # keep the order, drop repeats: the manifest records the patterns as given
        return tuple(dict.fromkeys(chosen)) or self.allow_patterns


class UnknownSourceError(ValueError):
    """A name the registry does not hold."""


class UnknownSubsetError(ValueError):
    """A subset the named source does not define."""


# Video-R1/Video-R1-data: one repo for both training sets. The card: "Video data folder: CLEVRER,
# LLaVA-Video-178K, NeXT-QA, PerceptionTest, STAR / Image data folder: Chart, General, Knowledge, Math, OCR,
# Spatial"; each folder holds <Folder>_partN.zip archives that unpack into the folder (src/unzip.py extracts every
# zip where it lies), and the JSON rows' paths ("./CLEVRER/train_videos/...") are relative to the repo root.
_VIDEO_R1_VIDEO = ("CLEVRER", "LLaVA-Video-178K", "NeXT-QA", "PerceptionTest", "STAR")
_VIDEO_R1_IMAGE = ("Chart", "General", "Knowledge", "Math", "OCR", "Spatial")
_VIDEO_R1_MEDIA = tuple(f"{folder}/*" for folder in (*_VIDEO_R1_VIDEO, *_VIDEO_R1_IMAGE))
_VIDEO_R1_REPO = "Video-R1/Video-R1-data"
# the head of main when its listing was read ("9ecf5ef Update README.md", 11 commits); the full hash is the
# snapshot folder of that commit in a public huggingface_hub cache path
_VIDEO_R1_COMMIT = "9ecf5eff38945e9ae4958058b83c9337f54aadd4"
_VIDEO_R1_SOURCE = (
    "https://huggingface.co/datasets/Video-R1/Video-R1-data/tree/main (folders, Video-R1-260k.json 176 MB, "
    "Video-R1-COT-165k.json 267 MB); .../tree/main/PerceptionTest and a duplicate's .../Chart "
    "(<Folder>_partN.zip); the dataset card (video vs image folders); the 309 GB total of its duplicate "
    "johncmm/Video-R1-data; github.com/tulerfeng/Video-R1 README.md and src/unzip.py"
)


def _video_r1_subsets(json_file: str) -> dict[str, tuple[str, ...]]:
    """The JSON alone, the video or image folders, or one folder by its lower-case name."""
    subsets = {
        "annotations": (json_file,),
        "videos": tuple(f"{folder}/*" for folder in _VIDEO_R1_VIDEO),
        "images": tuple(f"{folder}/*" for folder in _VIDEO_R1_IMAGE),
    }
    subsets.update({folder.lower(): (f"{folder}/*",) for folder in (*_VIDEO_R1_VIDEO, *_VIDEO_R1_IMAGE)})
    return subsets


_SHARED_MEDIA_NOTE = (
    "video-r1-260k and video-r1-cot-165k share every media archive: fetch one in full and only the other's "
    "JSON (--subset annotations), then point --media-root at the first"
)

SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            name="video-r1-260k",
            repo_id=_VIDEO_R1_REPO,
            revision=_VIDEO_R1_COMMIT,
            allow_patterns=("Video-R1-260k.json", *_VIDEO_R1_MEDIA),
            subsets=_video_r1_subsets("Video-R1-260k.json"),
            kind="video-r1-train",
            size="about 309 GB (the whole repo; Video-R1-260k.json is 176 MB)",
            description="Video-R1's RL set: Video-R1-260k.json and the 11 image and video folders of zip archives",
            source=_VIDEO_R1_SOURCE,
            notes=(_SHARED_MEDIA_NOTE,),
        ),
        Source(
            name="video-r1-cot-165k",
            repo_id=_VIDEO_R1_REPO,
            revision=_VIDEO_R1_COMMIT,
            allow_patterns=("Video-R1-COT-165k.json", *_VIDEO_R1_MEDIA),
            subsets=_video_r1_subsets("Video-R1-COT-165k.json"),
            kind="video-r1-train",
            size="about 309 GB (the whole repo; Video-R1-COT-165k.json is 267 MB)",
            description="Video-R1's SFT cold-start set: Video-R1-COT-165k.json (rows with <think> rationales) "
            "and the same media as video-r1-260k",
            source=_VIDEO_R1_SOURCE,
            notes=(_SHARED_MEDIA_NOTE,),
        ),
        Source(
            name="video-r1-eval",
            repo_id="Video-R1/Video-R1-eval",
            # the commit that added the six files ("Upload 6 files"); their pages on main name it as last change
            revision="8d690077856fe9174975fc4ff7daadfcc5628c2b",
            allow_patterns=("eval_*.json",),
            subsets={b: (f"eval_{b}.json",) for b in BENCHMARK_KINDS},
            kind="video-r1-eval",
            size="tens of MB (eval_tempcompass.json 8.06 MB, eval_videommmu.json 960 kB); no media",
            description="Video-R1's evaluation JSONs (eval_<benchmark>.json, training schema); the videos come "
            "from the benchmarks' own repos",
            source="https://huggingface.co/datasets/Video-R1/Video-R1-eval/commit/"
            "8d690077856fe9174975fc4ff7daadfcc5628c2b "
            "(eval_mmvu, eval_mvbench, eval_tempcompass, eval_videomme, eval_videommmu, eval_vsibench .json); "
            "github.com/tulerfeng/Video-R1 README.md (put them in src/r1-v/Evaluation) and src/eval_bench.py",
        ),
        Source(
            name="vsibench",
            repo_id="nyu-visionx/VSI-Bench",
            # the original release's layout (the one Video-R1 evaluated); main later added VSI-Bench-Debiased
            # files (test.jsonl): pass --revision main for those
            revision="668dd47863a49c6ee50946df1bf085a039fc95cd",
            allow_patterns=("test-00000-of-00001.parquet", "arkitscenes.zip", "scannet.zip", "scannetpp.zip"),
            subsets={
                "annotations": ("test-00000-of-00001.parquet",),
                "arkitscenes": ("arkitscenes.zip",),
                "scannet": ("scannet.zip",),
                "scannetpp": ("scannetpp.zip",),
            },
            kind="vsibench",
            size="about 5.7 GB (arkitscenes.zip 1.81 GB, scannet.zip 2.89 GB, scannetpp.zip 1.03 GB)",
            description="VSI-Bench: the test parquet and one zip of videos per source dataset",
            source="https://huggingface.co/datasets/nyu-visionx/VSI-Bench/tree/"
            "668dd47863a49c6ee50946df1bf085a039fc95cd; "
            "lmms-eval lmms_eval/tasks/vsibench/_default_template_yaml (dataset_path nyu-visionx/VSI-Bench)",
        ),
        Source(
            name="videommmu",
            repo_id="lmms-eval/VideoMMMU",
            allow_patterns=("*",),
            subsets={"annotations": ("*.parquet",), "videos": ("*.zip",)},
            kind="videommmu",
            gated=True,
            description="VideoMMMU: Perception/Comprehension/Adaptation parquets and zips of videos; the zips' "
            "names are not confirmed, so the full set is the whole repo",
            source="lmms-eval lmms_eval/tasks/videommmu/_default_template_yaml (dataset_path lmms-eval/VideoMMMU, "
            "moved from lmms-lab/VideoMMMU in lmms-eval commit 4be7ee0e, 2026-07-30); "
            "https://huggingface.co/datasets/lmms-lab/VideoMMMU (gated: 'You need to agree to share your contact "
            "information'; Perception/test-00000-of-00001.parquet)",
        ),
        Source(
            name="mmvu",
            repo_id="yale-nlp/MMVU",
            allow_patterns=("validation.json", "videos/*"),
            subsets={"annotations": ("validation.json",), "videos": ("videos/*",)},
            kind="mmvu",
            size="about 1 GB of videos (lmms-lab's zip of the same videos is 941 MB); validation.json 1.57 MB",
            description="MMVU (validation): validation.json and videos/<Subject>/<n>.mp4, the layout Video-R1's "
            "eval_mmvu.json paths name",
            source="https://huggingface.co/datasets/yale-nlp/MMVU/tree/main (assets, videos, validation.json); "
            ".../tree/7f9be2ddba929fd4b5c59f63d908549db31c97e0/videos/Materials_Science (videos/<Subject>/<n>.mp4)",
        ),
        Source(
            name="mvbench",
            repo_id="OpenGVLab/MVBench",
            allow_patterns=("json/*", "video/*"),
            subsets={"annotations": ("json/*",), "videos": ("video/*",)},
            kind="mvbench",
            gated=True,
            size="over 14 GB (video/perception.zip alone is 11.2 GB)",
            description="MVBench: json/<task>.json and video/<source>.zip (main; lmms-eval reads the unzipped "
            "'video' branch instead); NTU RGB+D clips are not on the hub (video/MVBench_videos_ntu.txt)",
            source="https://huggingface.co/datasets/OpenGVLab/MVBench/tree/main/video (FunQA_test.zip, clevrer.zip, "
            "data0613.zip, perception.zip, scene_qa.zip, ssv2_video.zip, ...); its README (extra_gated_prompt, "
            "configs json/<task>.json); lmms-eval lmms_eval/tasks/mvbench/_default_template_yaml (revision: video)",
        ),
        Source(
            name="tempcompass",
            repo_id="lmms-eval/TempCompass",
            # the head of main when its listing was read (7 commits, "Upload dataset"); moved repos keep commits
            revision="c8a67d88a3bc6fd4b2f9ae2f9e112668fbe05722",
            allow_patterns=("*.parquet", "tempcompass_videos.zip"),
            subsets={"annotations": ("*.parquet",), "videos": ("tempcompass_videos.zip",)},
            kind="tempcompass",
            size="about 420 MB (tempcompass_videos.zip 418 MB)",
            description="TempCompass: multi-choice, yes_no, caption_matching and captioning parquets and "
            "tempcompass_videos.zip (Video-R1 reports the multi-choice part)",
            source="https://huggingface.co/datasets/lmms-lab/TempCompass/tree/c8a67d88a3bc6fd4b2f9ae2f9e112668fbe05722 "
            "and .../tree/308f94b6b290722322941f647084aa15eba0e923/multi-choice (test-00000-of-00001.parquet); "
            "lmms-eval lmms_eval/tasks/tempcompass/_default_template_yaml (lmms-eval/TempCompass since 4be7ee0e)",
        ),
        Source(
            name="videomme",
            repo_id="lmms-eval/Video-MME",
            allow_patterns=("videomme/*", "subtitle.zip", "videos_chunked_*.zip"),
            subsets={
                "annotations": ("videomme/*",),
                "subtitles": ("subtitle.zip",),
                "videos": ("videos_chunked_*.zip",),
            },
            kind="videomme",
            size="about 5 GB per videos_chunked_NN.zip; the number of chunks changed over the repo's history",
            description="Video-MME: videomme/test-00000-of-00001.parquet, subtitle.zip and videos_chunked_NN.zip",
            source="https://huggingface.co/datasets/lmms-lab/Video-MME/tree/ff4a724b087af4fbf3f83bab1f5527f057736171 "
            "and .../tree/771c6f107930f955d98158146b0603511f54f911/videomme; lmms-eval "
            "lmms_eval/tasks/videomme/videomme.yaml (lmms-eval/Video-MME since 4be7ee0e; the hub page of "
            "lmms-eval/Video-MME carries lmms-lab's discussions, i.e. the repo was moved)",
        ),
    )
}


def get_source(name: str) -> Source:
    """The registry entry for `name`; an UnknownSourceError listing the known names otherwise."""
    try:
        return SOURCES[name]
    except KeyError:
        raise UnknownSourceError(f"unknown dataset {name!r}; known: {', '.join(SOURCES)}") from None
