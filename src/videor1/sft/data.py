"""SFT batches with assistant-only labels, decoded in DataLoader worker processes.

The assistant turn is `process + "\\n" + solution`, as in Video-R1's SFT script, appended to the same
prompt RL and evaluation use (one prompt builder, `videor1.models.inputs.prompt_text`). Labels cover
exactly the assistant's tokens and its `<|im_end|>`; the system and user turns, the chat template's
markup and every vision placeholder token are -100 (the original computed loss on all of them, ~1k
`<|video_pad|>` tokens per video).

Batch j of an epoch is a fixed slice of that epoch's permutation, so a batch never depends on which
earlier media failed: a failing sample is dropped from its batch, reported and counted, never replaced.
Resuming starts the sampler at the saved batch index; nothing before it is decoded again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from videor1.config import MediaConfig
from videor1.data.media import MediaError
from videor1.data.schema import Sample
from videor1.models.inputs import load_sample_media, processor_inputs, prompt_text, vision_factor

IGNORE_INDEX = -100


def assistant_text(sample: Sample) -> str:
    """The target of SFT: the rationale then the answer, as Video-R1 trained its cold start."""
    return sample.process + "\n" + sample.solution


def assistant_labels(input_ids: torch.Tensor, header_ids: list[int], end_id: int) -> torch.Tensor:
    """Labels [B, L]: input ids inside the last assistant turn (after its header, through <|im_end|>), else -100."""
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    header = torch.tensor(header_ids)
    for row, ids in enumerate(input_ids):
        starts = [i for i in range(len(ids) - len(header) + 1) if torch.equal(ids[i : i + len(header)], header)]
        if not starts:
            raise ValueError(f"row {row}: no assistant header in the tokenized conversation")
        start = starts[-1] + len(header)
        ends = (ids[start:] == end_id).nonzero()
        if len(ends) == 0:
            raise ValueError(f"row {row}: the assistant turn has no end-of-turn token")
        end = start + int(ends[0])
        labels[row, start : end + 1] = ids[start : end + 1]
    return labels


def assistant_header_ids(tokenizer: Any) -> list[int]:
    """Token ids of the assistant turn's header, as the chat template writes it for generation."""
    return tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]


def sft_batch(processor: Any, samples: list[Sample], media: list[Any]) -> dict[str, Any]:
    """Processor inputs of full conversations (right-padded) plus their assistant-only labels."""
    tokenizer = processor.tokenizer
    end = "<|im_end|>"
    texts = [prompt_text(processor, s) + assistant_text(s) + end + "\n" for s in samples]
    inputs = dict(processor_inputs(processor, texts, media, padding_side="right"))
    inputs["labels"] = assistant_labels(
        inputs["input_ids"], assistant_header_ids(tokenizer), tokenizer.convert_tokens_to_ids(end)
    )
    return inputs


@dataclass
class BatchPlan:
    """Which samples form global batch g: epoch = g // batches_per_epoch, a slice of that epoch's order."""

    num_samples: int
    batch_size: int
    seed: int
    shuffle: bool
    rank: int = 0
    world_size: int = 1

    @property
    def batches_per_epoch(self) -> int:
        """Full batches each rank gets per epoch (the uneven tail is dropped)."""
        return self.num_samples // (self.batch_size * self.world_size)

    def indices(self, g: int) -> list[int]:
        """Sample indices of global batch g on this rank."""
        if self.batches_per_epoch == 0:
            raise ValueError(f"{self.num_samples} samples cannot fill one batch of {self.batch_size} per process")
        epoch, j = divmod(g, self.batches_per_epoch)
        if self.shuffle:
            order = torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(self.seed * 7919 + epoch))
        else:
            order = torch.arange(self.num_samples)
        per_step = self.batch_size * self.world_size
        start = j * per_step + self.rank * self.batch_size
        return order[start : start + self.batch_size].tolist()


class SFTBatches(Dataset):
    """Map-style dataset over global batch indices: decoding and processing happen in the worker."""

    def __init__(self, samples: list[Sample], processor: Any, media: MediaConfig, plan: BatchPlan, num_batches: int):
        self.samples, self.processor, self.media, self.plan = samples, processor, media, plan
        self.factor = vision_factor(processor)
        self.num_batches = num_batches

    def __len__(self) -> int:
        return self.num_batches

    def __getitem__(self, g: int) -> dict[str, Any]:
        kept, media, failures = [], [], []
        for index in self.plan.indices(g):
            sample = self.samples[index]
            try:
                media.append(load_sample_media(sample, self.media, self.factor))
                kept.append(sample)
            except MediaError as exc:
                failures.append({"row": sample.row, "path": str(sample.media_path), "error": str(exc)})
        batch = sft_batch(self.processor, kept, media) if kept else {}
        return {"inputs": batch, "failures": failures, "batch": g, "size": len(kept)}


def identity_collate(item: dict[str, Any]) -> dict[str, Any]:
    """The dataset already returns whole batches."""
    return item
