"""Writing a dataset: per-split plans with balanced quotas, per-row seeding, media files and the JSON files."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from videor1.data.media import write_video
from videor1.data.synthetic.scene import _Canvas, _Item
from videor1.data.synthetic.tasks import _REGISTRY, TASKS, _check_rationale, _fields

GENERATOR_VERSION = "1"
_IMAGE_SHARE = 0.4  # Video-R1-260k is ~55% image; the brief asks 40% image / 60% video


@dataclass(frozen=True)
class SynthSummary:
    """What `generate` wrote: file paths and row counts per split and per task."""

    out_dir: Path
    train_json: Path
    test_json: Path
    meta_json: Path
    n_train: int
    n_test: int
    counts: dict[str, dict[str, int]]  # split -> task -> rows


def _apportion(total: int, weights: Sequence[float]) -> list[int]:
    """Split total into integer parts proportional to weights (largest remainder, ties by position)."""
    exact = np.asarray(weights, dtype=float) / sum(weights) * total
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: total - counts.sum()]:
        counts[i] += 1
    return [int(c) for c in counts]


def _quotas(n: int, names: Sequence[str]) -> dict[str, int]:
    """Rows per task: 40% image / 60% video when both kinds are asked for, equal within a kind."""
    kinds = [k for k in ("image", "video") if any(TASKS[t].data_type == k for t in names)]
    share = {"image": _IMAGE_SHARE, "video": 1 - _IMAGE_SHARE}
    # Kinds first, then tasks within a kind, so the image/video ratio is as close to 40/60 as n allows.
    quotas: dict[str, int] = {}
    for kind, rows in zip(kinds, _apportion(n, [share[k] for k in kinds]), strict=True):
        members = [t for t in names if TASKS[t].data_type == kind]
        quotas.update(zip(members, _apportion(rows, [1.0] * len(members)), strict=True))
    return {t: quotas[t] for t in names}


def _balanced(rng: np.random.Generator, m: int, k: int) -> np.ndarray:
    """m labels in range(k), each used floor(m/k) or ceil(m/k) times, in random order."""
    extra = rng.permutation(k)[: m % k]  # which classes get the leftover rows is random, not always the first
    labels = np.concatenate([np.repeat(np.arange(k), m // k), extra])
    return rng.permutation(labels)


def _plan(rng: np.random.Generator, n: int, names: Sequence[str]) -> list[tuple[str, int, int]]:
    """Shuffled (task, class, letter) triples for one split, with balanced classes and letters."""
    rows: list[tuple[str, int, int]] = []
    for name, m in _quotas(n, names).items():
        entry = _REGISTRY[name]
        classes = _balanced(rng, m, entry.n_classes)
        letters = _balanced(rng, m, max(entry.n_options, 1))
        rows += [(name, int(c), int(x)) for c, x in zip(classes, letters, strict=True)]
    return [rows[i] for i in rng.permutation(len(rows))]


def _write_media(out_dir: Path, problem_id: int, item: _Item, data_type: str, fps: float) -> str:
    """Write the row's image/video and return its Video-R1 style relative path."""
    if data_type == "video":
        rel = f"videos/{problem_id:06d}.mp4"
        write_video(out_dir / rel, item.media, fps)
    else:
        rel = f"images/{problem_id:06d}.png"
        (out_dir / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(item.media).save(out_dir / rel)
    return "./" + rel


def _write_split(
    out_dir: Path,
    plan: list[tuple[str, int, int]],
    *,
    seed: int,
    split_index: int,
    first_id: int,
    canvas: _Canvas,
    shuffle_options: bool,
    rationale: str,
    on_row: Callable[[], None],
) -> list[dict[str, object]]:
    """Build and write every row of one split; problem ids count up from first_id."""
    rows = []
    for row_index, (name, label, letter) in enumerate(plan):
        entry = _REGISTRY[name]
        # One generator per row: a row's scene depends only on (seed, split, row), not on earlier rows.
        rng = np.random.default_rng([seed, split_index, row_index])
        item = entry.build(rng, canvas, label, letter if shuffle_options and entry.n_options else None)
        problem_id = first_id + row_index
        rows.append(
            {
                "problem_id": problem_id,
                **_fields(item, entry.spec, rationale),
                "path": _write_media(out_dir, problem_id, item, entry.spec.data_type, canvas.fps),
                "data_source": f"synthetic/{name}",
                "task": name,
                "order_dependent": entry.spec.order_dependent,
            }
        )
        on_row()
    return rows


def generate(
    out_dir: Path,
    *,
    n: int,
    seed: int,
    n_test: int | None = None,
    size: int = 112,
    fps: float = 4.0,
    seconds: float = 2.0,
    tasks: Sequence[str] | None = None,
    shuffle_options: bool = True,
    rationale: str = "detailed",
    progress: Callable[[int, int], None] | None = None,
) -> SynthSummary:
    """Write train.json, test.json, synth.json and the media of a synthetic Video-R1 dataset to out_dir.

    `rationale` picks the `process` text: "detailed" (positions, timestamps and decimals) or "brief" (one short
    sentence with the decisive observation, learnable by a tiny model); media and answers are the same for both.
    """
    out_dir = Path(out_dir)
    n_test = max(1, n // 4) if n_test is None else n_test
    n_frames = int(round(fps * seconds))
    names = list(TASKS) if tasks is None else list(tasks)
    _validate(n=n, n_test=n_test, seed=seed, size=size, n_frames=n_frames, names=names)
    _check_rationale(rationale)
    canvas = _Canvas(size, n_frames, fps)
    done = 0

    def on_row() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, n + n_test)

    splits: dict[str, list[dict[str, object]]] = {}
    for split_index, (split, count) in enumerate((("train", n), ("test", n_test))):
        plan = _plan(np.random.default_rng([seed, split_index]), count, names)
        splits[split] = _write_split(
            out_dir, plan, seed=seed, split_index=split_index, first_id=0 if split == "train" else n,
            canvas=canvas, shuffle_options=shuffle_options, rationale=rationale, on_row=on_row,
        )  # fmt: skip
    counts = {split: dict(sorted(Counter(r["task"] for r in rows).items())) for split, rows in splits.items()}
    meta = {
        "generator": "videor1.data.synthetic", "version": GENERATOR_VERSION, "seed": seed, "n": n,
        "n_test": n_test, "size": size, "fps": fps, "seconds": seconds, "n_frames": n_frames,
        "tasks": names, "shuffle_options": shuffle_options, "rationale": rationale, "counts": counts,
    }  # fmt: skip
    # JSON last: a run that dies half-way leaves no train.json pointing at missing media.
    paths = {name: out_dir / f"{name}.json" for name in ("train", "test", "synth")}
    for split, rows in splits.items():
        paths[split].write_text(json.dumps(rows, indent=1) + "\n")
    paths["synth"].write_text(json.dumps(meta, indent=1) + "\n")
    return SynthSummary(out_dir, paths["train"], paths["test"], paths["synth"], n, n_test, counts)


def _validate(*, n: int, n_test: int, seed: int, size: int, n_frames: int, names: Sequence[str]) -> None:
    """Reject settings that would write unusable or unlearnable data, naming the argument."""
    if n < 1 or n_test < 1:
        raise ValueError(f"n and n_test must be >= 1, got n={n}, n_test={n_test}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if size < 56 or size % 2:
        raise ValueError(f"size must be even and >= 56 (yuv420p, and the model's smallest view), got {size}")
    if n_frames < 4:
        raise ValueError(f"fps * seconds must give >= 4 frames (the sampler's minimum), got {n_frames}")
    unknown = [t for t in names if t not in TASKS]
    if unknown or not names:
        raise ValueError(f"unknown or empty tasks {unknown}; choose from {', '.join(TASKS)}")
