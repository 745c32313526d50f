"""Shared fixtures: one synthetic dataset and one tiny model per family for the whole session."""

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """A small synthetic dataset (24 train rows, 8 test rows) with real mp4s and PNGs."""
    from videor1.data.synthetic import generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, n=24, n_test=8, seed=1)
    return root


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, synth_root):
    """Build tiny models lazily, one folder per family, tokenizers trained on the synthetic rows."""
    from videor1.models.tiny import build_tiny, dataset_corpus

    built = {}
    corpus = dataset_corpus(synth_root / "train.json")

    def get(family: str = "qwen2_5_vl"):
        if family not in built:
            built[family] = build_tiny(tmp_path_factory.mktemp(family), family=family, corpus=corpus)
        return built[family]

    return get
