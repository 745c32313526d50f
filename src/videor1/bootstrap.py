"""Create what a tiny config needs on a fresh clone: synthetic data and a tiny model, when missing."""

from __future__ import annotations

from pathlib import Path

from videor1.config import DataConfig, ModelConfig


def ensure_data(data: DataConfig) -> None:
    """Write synthetic data into `data.media_root` if `data.train_file` is missing and synthesis is configured."""
    if Path(data.train_file).exists() or data.synthetic is None:
        return
    from videor1.data.synthetic import generate

    synth = data.synthetic
    summary = generate(
        Path(data.media_root), n=synth.n, n_test=synth.n_test, seed=synth.seed, size=synth.size, tasks=synth.tasks
    )
    if summary.train_json.resolve() != Path(data.train_file).resolve():
        raise ValueError(
            f"data.train_file {data.train_file} is not where synthesis writes ({summary.train_json}); "
            "point train_file at media_root/train.json"
        )


def ensure_model(model: ModelConfig, train_file: str | None = None) -> None:
    """Build a tiny model at `model.name_or_path` if that folder is missing and `model.tiny` is set."""
    if model.tiny is None or Path(model.name_or_path).exists():
        return
    from videor1.models.tiny import build_tiny, dataset_corpus

    corpus = dataset_corpus(train_file) if model.tiny.corpus_from_train_file and train_file else []
    build_tiny(model.name_or_path, family=model.tiny.family, corpus=corpus, seed=model.tiny.seed)  # type: ignore[arg-type]
