"""One device choice for eval, infer, serve and annotate: a named device, else the accelerator, else the CPU."""

from pathlib import Path

import pytest
import torch

import videor1.annotate
from videor1.devices import pick_device


def test_a_named_device_is_used_as_named():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("cuda:1") == torch.device("cuda", 1)  # chosen, not checked: loading the model says so


@pytest.mark.parametrize("name", [None, "auto"])
def test_auto_is_any_accelerator_torch_knows_else_the_cpu(monkeypatch, name):
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    assert pick_device(name) == torch.device("cpu")
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda: torch.device("mps"))
    assert pick_device(name) == torch.device("mps")  # not only CUDA


def test_annotate_does_not_reach_into_serve():
    sources = Path(videor1.annotate.__file__).parent.glob("*.py")
    assert [path.name for path in sources if "videor1.serve" in path.read_text(encoding="utf-8")] == []
