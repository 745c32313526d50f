"""`videor1 eval`: batched, resumable, isolated generation on the benchmarks, then their reports.

Layout of the output folder:
    config.yaml, eval.log, results.json, results.md      the run: arguments, log, Table 1 and breakdowns
    <benchmark>/predictions.jsonl                         one line per finished sample, appended and fsynced
    <benchmark>/config.yaml, results.json, results.md     that benchmark's settings and metrics
Resume: a rerun reads predictions.jsonl and generates only the samples not in it, so a run killed midway
loses nothing it finished (a line cut by the kill is dropped and redone). Failed samples (an invalid row,
media that will not decode, a generate error) count as finished (scored 0, with their error and its
kind) unless `retry_failed`. A rerun with other settings (model, engine, frames, decoding…) into the same
folder is refused rather than mixing two runs' predictions.
Engines: `hf` loads the model and generates with transformers (the reference); `vllm` loads only the
processor and builds a `VLLMEngine` over the checkpoint, fed the same prompt texts and decoded media.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import yaml

from videor1.atomic import atomic_write_lines, atomic_write_text
from videor1.config import save_config
from videor1.data.schema import Sample
from videor1.devices import pick_device
from videor1.eval.benchmarks import Benchmark, Category, category_of, get_benchmark
from videor1.eval.config import RESUME_KEYS, BenchmarkRun, Engine, EvalConfig, EvalVLLMOptions
from videor1.eval.data import BenchmarkData, EvalError, invalid_record, load_benchmark, row_category, sample_key
from videor1.eval.generate import Generation, generate_batch
from videor1.eval.report import RESULTS_JSON, write_benchmark, write_combined
from videor1.eval.scoring import rescore, summarize

PREDICTIONS = "predictions.jsonl"
CONFIG = "config.yaml"
LOG = "eval.log"

Progress = Callable[[str, int, int], None]
VLLM_INSTALL = 'pip install -e ".[vllm]" on GPUs, or the CPU venv of constraints-vllm.txt'


class PredictionStore:
    """predictions.jsonl of one benchmark: finished records by sample key, appended durably line by line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[str, dict[str, Any]] = {}
        self.dropped = 0
        if path.exists():
            self._load()

    def _load(self) -> None:
        text = self.path.read_text(encoding="utf-8")
        lines = text.split("\n")
        # a run killed while writing leaves a last line without its newline: that sample is redone
        complete, partial = lines[:-1], lines[-1]
        kept = []
        for number, line in enumerate(complete, start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                self.dropped += 1
                continue
            if not isinstance(record, dict) or "id" not in record:
                raise EvalError(f"{self.path}:{number}: prediction line without an id; fix or remove the line")
            self.records[sample_key(record["id"])] = record
            kept.append(line)
        self.dropped += bool(partial.strip())
        if self.dropped:
            atomic_write_lines(self.path, (line + "\n" for line in kept))

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def append(self, records: list[dict[str, Any]]) -> None:
        """Append records and force them to disk before returning."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                self.records[sample_key(record["id"])] = record
            f.flush()
            os.fsync(f.fileno())

    def drop_failed(self) -> int:
        """Forget the failed records (to generate them again); returns how many."""
        failed = [key for key, record in self.records.items() if record.get("error")]
        for key in failed:
            del self.records[key]
        if failed:
            atomic_write_lines(self.path, (json.dumps(r, ensure_ascii=False) + "\n" for r in self.records.values()))
        return len(failed)


def prediction_record(bench: Benchmark, sample: Sample, category: Category, generation: Generation) -> dict[str, Any]:
    """The predictions.jsonl line of one sample: inputs needed to rescore it, output, answer, score, error."""
    record = {
        "id": sample.problem_id, "row": sample.row, "path": sample.path, "data_type": sample.data_type,
        "problem_type": sample.problem_type, "category": category.name, "category_source": category.source,
        "options": list(sample.options), "truth": sample.answer, "output": generation.text,
        "error": generation.error, "error_kind": generation.error_kind,
    }
    return rescore(bench, record)


def _resume_settings(cfg: EvalConfig, run: BenchmarkRun) -> dict[str, Any]:
    """What a benchmark's finished predictions depend on (not where the media folder happens to be)."""
    data = cfg.model_dump(mode="json", include=set(RESUME_KEYS))
    benchmark = {"name": get_benchmark(run.name).key, "data": str(Path(run.data).resolve()),
                 "category_field": run.category_field}
    return {**data, "benchmark": benchmark}


def _saved_settings(path: Path) -> dict[str, Any]:
    """A benchmark folder's config.yaml; one written before `engine` was a setting came from the HF engine."""
    saved = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return {"engine": "hf", **saved}


def check_resumable(bench_dir: Path, settings: dict[str, Any]) -> None:
    """Refuse to add predictions to a folder whose earlier predictions came from other settings."""
    saved_path = bench_dir / CONFIG
    if not (bench_dir / PREDICTIONS).exists() or not saved_path.exists():
        return
    saved = _saved_settings(saved_path)
    differ = sorted(key for key in settings.keys() | saved.keys() if settings.get(key) != saved.get(key))
    if differ:
        raise EvalError(
            f"{bench_dir} holds predictions made with other settings ({', '.join(differ)}); "
            "use another --out, or --overwrite to start this benchmark again"
        )


@contextmanager
def _run_log(out: Path) -> Iterator[logging.Logger]:
    """A logger writing to out/eval.log for the duration of the run."""
    logger = logging.getLogger(f"videor1.eval.{out.resolve()}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = logging.FileHandler(out / LOG, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    try:
        yield logger
    finally:
        logger.removeHandler(handler)
        handler.close()


def evaluate_benchmark(
    model: Any, processor: Any, bench: Benchmark, samples: list[Sample], categories: list[Category], bench_dir: Path,
    cfg: EvalConfig, *, invalid: list[dict[str, Any]] | None = None, retry_failed: bool = False,
    progress: Progress | None = None, log: logging.Logger | None = None,
) -> list[dict[str, Any]]:
    """Record invalid rows, generate the samples not yet in predictions.jsonl; return all records in row order."""
    log = log or logging.getLogger(__name__)
    invalid = invalid or []
    store = PredictionStore(bench_dir / PREDICTIONS)
    if store.dropped:
        log.warning(f"{bench.key}: dropped {store.dropped} unfinished line(s) of {store.path}; redoing them")
    if retry_failed and (count := store.drop_failed()):
        log.info(f"{bench.key}: retrying {count} failed sample(s)")
    if new := [record for record in invalid if sample_key(record["id"]) not in store]:
        store.append(new)
    for record in new:
        log.warning(f"{bench.key}: row {record['row']} recorded as failed: {record['error']}")
    category = {sample_key(s.problem_id): c for s, c in zip(samples, categories, strict=True)}
    todo = [s for s in samples if sample_key(s.problem_id) not in store]
    total = len(samples) + len(invalid)
    done = total - len(todo)
    log.info(f"{bench.key}: {total} rows ({len(invalid)} invalid), {done} already finished, {len(todo)} to generate")
    decoding = cfg.decoding.model_dump(exclude={"seed"})
    if progress is not None:
        progress(bench.key, done, total)
    for start in range(0, len(todo), cfg.batch_size):
        batch = todo[start : start + cfg.batch_size]
        began = time.perf_counter()
        generations = generate_batch(model, processor, batch, cfg.media, system_prompt=cfg.system_prompt, **decoding)
        records = [prediction_record(bench, g.sample, category[sample_key(g.sample.problem_id)], g)
                   for g in generations]
        store.append(records)
        for record in records:
            if record["error"]:
                log.warning(f"{bench.key}: sample {record['id']} failed: {record['error']}")
        done += len(batch)
        log.info(f"{bench.key}: {done}/{total} ({time.perf_counter() - began:.1f} s for {len(batch)})")
        if progress is not None:
            progress(bench.key, done, total)
    keys = [sample_key(s.problem_id) for s in samples] + [sample_key(r["id"]) for r in invalid]
    return sorted((store.records[key] for key in keys), key=lambda record: record["row"])


def vllm_missing() -> str | None:
    """Why the vllm engine cannot run here (the package is not installed), or None."""
    if importlib.util.find_spec("vllm") is None:
        return f"--engine vllm needs the vllm package, which is not installed: {VLLM_INSTALL}"
    return None


@contextmanager
def load_generator(
    model: str, engine: Engine, *, dtype: str, seed: int, device: str | None = None,
    attn_implementation: str | None = None, vllm: EvalVLLMOptions | None = None,
) -> Iterator[tuple[Any, Any]]:
    """(generator, processor): the HF model on its device, or a vLLM engine over the checkpoint, closed on exit."""
    from videor1.models.load import load_model_and_processor, load_processor

    if engine == "hf":
        loaded, processor = load_model_and_processor(model, dtype=dtype, attn_implementation=attn_implementation,
                                                     device=pick_device(device))
        torch.manual_seed(seed)
        yield loaded, processor
        return
    if (missing := vllm_missing()) is not None:
        raise EvalError(missing)
    from videor1.models.vllm_engine import VLLMEngine, VLLMSettings

    processor = load_processor(model)
    settings = VLLMSettings(**(vllm or EvalVLLMOptions()).model_dump())
    generator = VLLMEngine(model, processor, dtype=dtype, seed=seed, settings=settings)
    try:
        yield generator, processor
    finally:
        generator.close()


def combined_results(
    cfg: EvalConfig, out: Path, summaries: dict[str, dict[str, Any]], excluded: dict[str, int]
) -> dict[str, Any]:
    """The run's results: this run's benchmarks plus finished ones in `out` made with the same settings."""
    benchmarks = dict(summaries)
    current = cfg.model_dump(mode="json")
    for bench_dir in sorted(p for p in out.iterdir() if p.is_dir()):
        if bench_dir.name in benchmarks or not (bench_dir / RESULTS_JSON).exists():
            continue
        saved_path = bench_dir / CONFIG
        saved = _saved_settings(saved_path) if saved_path.exists() else {}
        if saved and all(saved.get(k) == current.get(k) for k in RESUME_KEYS):
            benchmarks[bench_dir.name] = json.loads((bench_dir / RESULTS_JSON).read_text(encoding="utf-8"))
    frames = cfg.media.nframes or cfg.media.max_frames
    return {"model": cfg.model, "label": cfg.row_label(), "frames": frames, "benchmarks": benchmarks,
            "excluded": excluded}


def _run_benchmark(
    model: Any, processor: Any, cfg: EvalConfig, run: BenchmarkRun, data: BenchmarkData, bench_dir: Path,
    log: logging.Logger, *, retry_failed: bool, progress: Progress | None,
) -> dict[str, Any]:
    """One benchmark of a run: settings, categories, generation (resumed), then its summary and reports."""
    bench = data.bench
    bench_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(bench_dir / CONFIG, yaml.safe_dump(_resume_settings(cfg, run), sort_keys=False))
    if data.excluded:
        log.info(f"{bench.key}: {data.excluded} rows outside the evaluated subset (multiple choice only)")
    categories = [category_of(bench, s, run.category_field) for s in data.samples]
    invalid = [rescore(bench, invalid_record(row, row_category(bench, row, run.category_field)))
               for row in data.invalid]
    unknown = sum(c.source == "unknown" for c in categories)
    if unknown:
        looked = run.category_field or ", ".join((*bench.category_fields, "data_source", "the path"))
        log.warning(f"{bench.key}: {unknown} samples without a category (looked at {looked}); "
                    "pass --category-field to name the column")
    records = evaluate_benchmark(model, processor, bench, data.samples, categories, bench_dir, cfg, invalid=invalid,
                                 retry_failed=retry_failed, progress=progress, log=log)
    summary = summarize(bench, records)
    write_benchmark(bench_dir, summary)
    log.info(f"{bench.key}: overall {summary['overall']}")
    return summary


def run_eval(
    cfg: EvalConfig, *, overwrite: bool = False, retry_failed: bool = False, strict: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Evaluate the model on every configured benchmark; write predictions, results and logs under cfg.out.

    Invalid rows become failed predictions; with `strict` any invalid row stops the run before the model loads.
    """
    if cfg.engine == "vllm" and (missing := vllm_missing()) is not None:
        raise EvalError(missing)  # before any folder is written
    out = Path(cfg.out)
    loaded = [(run, load_benchmark(run, cfg.limit, strict=strict)) for run in cfg.benchmarks]
    for run, data in loaded:
        bench_dir = out / data.bench.key
        if overwrite and bench_dir.exists():
            shutil.rmtree(bench_dir)
        check_resumable(bench_dir, _resume_settings(cfg, run))
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / CONFIG)
    with _run_log(out) as log:
        where = pick_device(cfg.device) if cfg.engine == "hf" else "vllm engine"
        log.info(f"evaluating {cfg.model} on {', '.join(data.bench.key for _, data in loaded)} ({where})")
        with load_generator(cfg.model, cfg.engine, dtype=cfg.dtype, seed=cfg.decoding.seed, device=cfg.device,
                            attn_implementation=cfg.attn_implementation, vllm=cfg.vllm) as (model, processor):
            summaries = {
                data.bench.key: _run_benchmark(model, processor, cfg, run, data, out / data.bench.key, log,
                                               retry_failed=retry_failed, progress=progress)
                for run, data in loaded
            }
        results = combined_results(cfg, out, summaries, {data.bench.key: data.excluded for _, data in loaded})
        write_combined(out, results)
    return results
