"""`videor1 data prepare DIR`: from the downloaded releases to checked evaluation and training files.

For each set folder found in DIR (the names `videor1 data fetch` writes: `video-r1-260k`,
`video-r1-cot-165k`, and the six benchmarks), or for DIR itself when it is one of them:
1. remove the temporaries an interrupted run left, and unpack every archive safely and resumably
   (`videor1.data.archives`);
2. a benchmark: convert its release to evaluation rows (`videor1.data.convert`), write
   `<set>/eval_<set>.json`; a training set: take its Video-R1 JSON as it is;
3. validate the rows with the project's validator (as `videor1 data validate --benchmark`), decoding every
   media file with `check_media`; count the media found and missing, by set and category;
4. where Video-R1's own evaluation file lies at `DIR/video-r1-eval/eval_<set>.json`, write its rows with
   paths that resolve here (`<set>/eval_<set>.video_r1.json`) and a comparison (`<set>/compare_video_r1.json`).
The summary goes to `prepare.json` in the folder given. Nothing is dropped or repaired: each problem is a line
naming the file, the row and the field, counted, and listed in full in `<set>/prepare_problems.txt`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from videor1.atomic import atomic_write_text
from videor1.config import MediaConfig
from videor1.data.archives import Limits, clean_partials, extract, find_archives, is_complete
from videor1.data.convert import CONVERTERS, ConvertError
from videor1.data.convert.compare import compare, rerooted
from videor1.data.dataset import DatasetError, LoadedDataset, iter_rows, load_dataset
from videor1.data.validate import check_media as decode_all
from videor1.eval.benchmarks import category_from_row, get_benchmark

TRAIN_SETS: dict[str, str] = {"video-r1-260k": "Video-R1-260k.json", "video-r1-cot-165k": "Video-R1-COT-165k.json"}
"""Training set folder -> its JSON (hub Video-R1/Video-R1-data; paths relative to that repo's root)."""
SETS: tuple[str, ...] = (*TRAIN_SETS, *CONVERTERS)
VIDEO_R1_EVAL = "video-r1-eval"
SHOWN_PROBLEMS = 20

Say = Callable[[str], None]
ProgressFactory = Callable[[str], AbstractContextManager[Callable[[int, int], None]]]


class PrepareError(Exception):
    """Bad input: no set to prepare, an unknown name, a release without its files; one line."""


@dataclass
class SetSummary:
    """What preparing one set found."""

    name: str
    kind: str  # "benchmark" or "training"
    folder: str
    output: str | None = None
    media_root: str | None = None
    archives: dict[str, int] = field(default_factory=dict)
    rows: int = 0
    valid_rows: int = 0
    bad_rows: int = 0
    issues: int = 0
    media_found: int = 0
    media_missing: int = 0
    media_checked: int = 0
    media_bad: int = 0
    by_category: dict[str, int] = field(default_factory=dict)
    by_problem_type: dict[str, int] = field(default_factory=dict)
    skipped_files: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """The first problems (all of them are in prepare_problems.txt)."""
    problem_count: int = 0
    video_r1: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        """True when every row is valid and every media file is there and decodes."""
        return not (self.bad_rows or self.issues or self.media_missing or self.media_bad)


@dataclass
class Summary:
    """Every set prepared, in order."""

    folder: str
    sets: list[SetSummary] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every set is."""
        return all(s.ok for s in self.sets)

    def to_json(self) -> dict[str, Any]:
        """The summary as written to prepare.json."""
        return {"folder": self.folder, "ok": self.ok, "sets": [{**asdict(s), "ok": s.ok} for s in self.sets]}


@contextmanager
def _no_progress(description: str) -> Iterator[Callable[[int, int], None]]:
    yield lambda done, total: None


def find_sets(folder: Path, only: list[str] | None = None) -> list[tuple[str, Path]]:
    """(name, folder) of each set to prepare: DIR's set folders, or DIR itself when it is one."""
    if not folder.is_dir():
        raise PrepareError(f"{folder}: not a folder")
    for name in only or []:
        if name not in SETS:
            raise PrepareError(f"--only {name}: unknown set; expected one of {', '.join(SETS)}")
    found = [(name, folder / name) for name in SETS if (folder / name).is_dir()]
    if not found and folder.name in SETS:
        found = [(folder.name, folder)]
    if not found:
        raise PrepareError(
            f"{folder}: no data set folder ({', '.join(SETS)}); give the folder `videor1 data fetch` wrote "
            "or one of those folders"
        )
    if only:
        missing = [name for name in only if name not in dict(found)]
        if missing:
            raise PrepareError(f"{folder}: no {', '.join(missing)} folder (--only)")
        found = [(name, path) for name, path in found if name in only]
    return found


def _unpack(name: str, folder: Path, limits: Limits, say: Say, progress: ProgressFactory) -> dict[str, int]:
    counts = Counter(partials_removed=clean_partials(folder))
    for archive in find_archives(folder):
        if is_complete(folder, archive):  # before any bar: a finished archive is not read at all
            say(f"{name}: {archive.name} unpacked by an earlier run, skipped")
            counts["archives_skipped"] += 1
            continue
        with progress(f"{name}: unpacking {archive.name}") as update:
            done = extract(folder, archive, limits=limits, progress=update)
        say(f"{name}: {archive.name}: {done.written} files written, {done.present} already there")
        counts.update(archives_unpacked=1, files_written=done.written, files_present=done.present)
    return dict(counts)


def _record_problems(summary: SetSummary, folder: Path, lines: list[str]) -> None:
    summary.problem_count = len(lines)
    summary.problems = lines[:SHOWN_PROBLEMS]
    path = folder / "prepare_problems.txt"
    if lines:
        atomic_write_text(path, "".join(line + "\n" for line in lines))
    else:
        path.unlink(missing_ok=True)  # a rerun that fixed everything leaves no stale list behind


def _load(path: Path, media_root: Path, *, benchmark: bool) -> LoadedDataset:
    try:
        return load_dataset(path, media_root, benchmark=benchmark)
    except DatasetError as exc:
        raise PrepareError(str(exc)) from exc


def _validate(
    summary: SetSummary, path: Path, loaded: LoadedDataset, *, media: MediaConfig | None, progress: ProgressFactory
) -> list[str]:
    """Count the rows and, given `media` settings, decode each media file as `videor1 data validate` does."""
    summary.rows, summary.valid_rows, summary.bad_rows = loaded.num_rows, len(loaded.samples), loaded.bad_rows
    summary.by_problem_type = dict(loaded.counts("problem_type"))
    media_problems = []
    if media is not None:
        with progress(f"{summary.name}: decoding media") as update:
            media_problems, summary.media_checked = decode_all(loaded.samples, media, progress=update)
        # a missing file is already counted and listed as missing: "bad" is what is there and does not decode
        media_problems = [p for p in media_problems if Path(p.source).exists()]
    summary.media_bad = len(media_problems)
    return [f"{path}: {p}" for p in loaded.problems] + [str(p) for p in media_problems]


def _compare(summary: SetSummary, base: Path, folder: Path, rows: list[dict[str, Any]]) -> None:
    source = base / VIDEO_R1_EVAL / f"eval_{summary.name}.json"
    if not source.is_file():
        return
    try:
        theirs = [row for _, row in iter_rows(source) if isinstance(row, dict)]
    except DatasetError as exc:
        raise PrepareError(str(exc)) from exc
    report = compare(summary.name, rows, theirs)
    copy = folder / f"eval_{summary.name}.video_r1.json"
    moved = rerooted(rows, theirs)
    atomic_write_text(copy, json.dumps(moved, ensure_ascii=False, indent=1))
    atomic_write_text(folder / "compare_video_r1.json", json.dumps(report, ensure_ascii=False, indent=1))
    summary.video_r1 = {
        "source": str(source),
        "rerooted": str(copy),
        "rows": len(theirs),
        "paired": report["paired"],
        "only_ours": report["only_ours"]["count"],
        "only_video_r1": report["only_video_r1"]["count"],
        "differences": {name: entry["count"] for name, entry in report["differences"].items()},
    }


def _benchmark(
    summary: SetSummary, base: Path, folder: Path, media: MediaConfig | None, progress: ProgressFactory
) -> None:
    try:
        conversion = CONVERTERS[summary.name](folder)
    except ConvertError as exc:
        raise PrepareError(str(exc)) from exc
    out = folder / f"eval_{summary.name}.json"
    atomic_write_text(out, json.dumps(conversion.rows, ensure_ascii=False, indent=1))
    summary.output, summary.media_root = str(out), str(folder)
    summary.issues, summary.skipped_files = len(conversion.issues), conversion.skipped
    summary.media_found, summary.media_missing = conversion.media_found, conversion.media_missing
    bench = get_benchmark(summary.name)
    summary.by_category = dict(sorted(Counter(category_from_row(bench, r).name for r in conversion.rows).items()))
    loaded = _load(out, folder, benchmark=True)
    lines = [str(replace(issue, source=str(folder / issue.source))) for issue in conversion.issues]
    lines += _validate(summary, out, loaded, media=media, progress=progress)
    _record_problems(summary, folder, lines)
    _compare(summary, base, folder, conversion.rows)


def _training(
    summary: SetSummary, base: Path, folder: Path, media: MediaConfig | None, progress: ProgressFactory
) -> None:
    data = folder / TRAIN_SETS[summary.name]
    if not data.is_file():
        raise PrepareError(f"{folder}: no {data.name} (hub Video-R1/Video-R1-data)")
    loaded = _load(data, folder, benchmark=False)
    # Both JSONs come from one hub repo, so one folder may hold the JSON alone and the other the media. The
    # rows' paths are relative to the repo's root (Video-R1's grpo.py opens "Video-R1-data" + path[1:]).
    others = [base / name for name in TRAIN_SETS if name != summary.name and (base / name).is_dir()]
    probe = loaded.samples[:200]
    if others and not any(s.media_path.exists() for s in probe):
        best = max(others, key=lambda root: sum((root / s.media_path.relative_to(folder)).exists() for s in probe))
        if any((best / s.media_path.relative_to(folder)).exists() for s in probe):
            folder_media, loaded = best, _load(data, best, benchmark=False)
        else:
            folder_media = folder
    else:
        folder_media = folder
    summary.output, summary.media_root = str(data), str(folder_media)
    missing = [f"{data}: row {s.row}: path: missing {s.path}" for s in loaded.samples if not s.media_path.exists()]
    summary.media_missing, summary.media_found = len(missing), len(loaded.samples) - len(missing)
    summary.by_category = dict(sorted(loaded.counts("data_source").items()))
    lines = _validate(summary, data, loaded, media=media, progress=progress)
    _record_problems(summary, folder, missing + lines)


def prepare(
    folder: str | Path,
    *,
    only: list[str] | None = None,
    limits: Limits | None = None,
    check_media: bool = True,
    media: MediaConfig | None = None,
    say: Say | None = None,
    progress: ProgressFactory | None = None,
) -> Summary:
    """Unpack, convert, validate and compare every set in `folder` (see the module docstring); write prepare.json.

    With `check_media`, every media file is decoded with `media` (default: the training media settings).

    PrepareError on bad input, ArchiveError on an archive refused; problems in the rows or the media are
    counted in the summary (`Summary.ok` is False), never raised.
    """
    folder = Path(folder)
    say = say or (lambda line: None)
    progress = progress or _no_progress
    sets = find_sets(folder, only)
    base = folder if sets[0][1] != folder else folder.parent
    summary = Summary(str(folder))
    for name, path in sets:
        kind = "training" if name in TRAIN_SETS else "benchmark"
        entry = SetSummary(name, kind, str(path))
        entry.archives = _unpack(name, path, limits or Limits(), say, progress)
        decode = (media or MediaConfig()) if check_media else None
        (_training if kind == "training" else _benchmark)(entry, base, path, decode, progress)
        summary.sets.append(entry)
    atomic_write_text(folder / "prepare.json", json.dumps(summary.to_json(), ensure_ascii=False, indent=1))
    return summary
