"""Dataset validation: every bad row and every bad media file, counted and named, in one pass."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from videor1.config import MediaConfig
from videor1.data.dataset import LoadedDataset, load_dataset
from videor1.data.frames import load_clip
from videor1.data.media import MediaError, load_image
from videor1.data.schema import Problem, Sample


@dataclass
class ValidationReport:
    """Row problems from loading plus media problems from decoding (when media was checked)."""

    dataset: LoadedDataset
    media_problems: list[Problem] = field(default_factory=list)
    media_checked: int = 0

    @property
    def ok(self) -> bool:
        """True when no row and no media file is bad."""
        return not self.dataset.problems and not self.media_problems


def check_media(
    samples: list[Sample],
    media: MediaConfig,
    *,
    factor: int = 28,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[Problem], int]:
    """Decode each distinct media file once as training would; return its problems and the files checked."""
    by_file: dict[Path, list[Sample]] = {}
    for sample in samples:
        by_file.setdefault(sample.media_path, []).append(sample)
    problems: list[Problem] = []
    for done, (path, users) in enumerate(by_file.items(), start=1):
        first = users[0]
        try:
            if first.is_video:
                fps = first.frame_fps or media.frame_fps
                load_clip(path, media.sampling(), media.video_budget(factor), frame_fps=fps)
            else:
                load_image(path, media.image_budget(factor))
        except MediaError as exc:
            rows = ", ".join(str(s.row) for s in users[:5]) + (" ..." if len(users) > 5 else "")
            problems.append(Problem(str(path), None, "path", f"{exc.reason} (used by row {rows})"))
        if progress is not None:
            progress(done, len(by_file))
    return problems, len(by_file)


def validate(
    path: str | Path,
    media_root: str | Path,
    *,
    check: bool = False,
    media: MediaConfig | None = None,
    require_process: bool = False,
    benchmark: bool = False,
    factor: int = 28,
    progress: Callable[[int, int], None] | None = None,
) -> ValidationReport:
    """Validate a dataset file's rows (as training data, or as a `benchmark` file) and, with check=True, its media."""
    report = ValidationReport(load_dataset(path, media_root, require_process=require_process, benchmark=benchmark))
    if check:
        report.media_problems, report.media_checked = check_media(
            report.dataset.samples, media or MediaConfig(), factor=factor, progress=progress
        )
    return report
