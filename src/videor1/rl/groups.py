"""Scored groups of a rollout micro-batch, and DAPO's dynamic sampling over them (arXiv 2503.14476, §3.2).

A group is one prompt with its G completions and their total rewards. Dynamic sampling drops groups whose
rewards are all equal (every answer right or every answer wrong: zero advantage, no policy gradient) and
samples further prompts to take their place. Unlike DAPO, which samples until the batch is full, the number
of extra rounds is bounded (`algorithm.dynamic_sampling.max_rounds`): past it the micro-batch is filled with
dropped groups, so every process keeps the same shapes and a hard dataset cannot stall a run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from videor1.models.generation import Completions
from videor1.rl.data import Loaded


def choose_groups(informative: list[bool], size: int) -> list[int]:
    """Indices of the groups to train on: the first `size` informative ones, then uninformative ones in order."""
    if len(informative) < size:
        raise ValueError(f"{len(informative)} groups cannot fill a micro-batch of {size}")
    useful = [i for i, keep in enumerate(informative) if keep]
    filler = [i for i, keep in enumerate(informative) if not keep]
    return (useful + filler)[:size]


def select_completions(completions: Completions, groups: list[int], group_size: int) -> Completions:
    """The completions of the chosen groups, in that order (rows g·G … g·G + G − 1 of each)."""
    rows = torch.tensor([g * group_size + j for g in groups for j in range(group_size)], dtype=torch.long)
    logprobs = completions.logprobs
    return Completions(
        ids=completions.ids[rows], mask=completions.mask[rows], texts=[completions.texts[r] for r in rows.tolist()],
        prompt_mismatches=completions.prompt_mismatches, logprobs=logprobs[rows] if logprobs is not None else None,
    )


def concat_completions(parts: list[Completions], pad_token_id: int) -> Completions:
    """Completions of several generation rounds as one batch, right-padded to the longest."""
    length = max(part.ids.shape[1] for part in parts)

    def pad(tensor: torch.Tensor, value: float) -> torch.Tensor:
        return torch.nn.functional.pad(tensor, (0, length - tensor.shape[1]), value=value)

    with_logprobs = all(part.logprobs is not None for part in parts)
    return Completions(
        ids=torch.cat([pad(p.ids, pad_token_id) for p in parts]), mask=torch.cat([pad(p.mask, 0) for p in parts]),
        texts=[text for p in parts for text in p.texts], prompt_mismatches=sum(p.prompt_mismatches for p in parts),
        logprobs=torch.cat([pad(p.logprobs, 0.0) for p in parts]) if with_logprobs else None,
    )


@dataclass
class Groups:
    """P prompts with G scored completions each (N = P*G, prompt-major)."""

    items: list[Loaded]
    texts: list[str]  # [P] prompt texts
    inputs: Any  # processor outputs of the P prompts, or None once regrouped (rebuilt before scoring)
    completions: Completions  # N
    totals: torch.Tensor  # [P, G] total rewards
    shuffled_totals: torch.Tensor | None = None
    """[P, G~] the shuffled completions' rewards (NaN rows for questions without them); only with
    algorithm.temporal_signal=joint, whose advantages compare the two groups."""
    vision: dict[str, Any] | None = None
    """The P prompts' media through the frozen vision tower, when the rollout encoded it (None once regrouped)."""

    @property
    def group_size(self) -> int:
        """G, completions per prompt."""
        return self.totals.shape[1]

    def select(self, groups: list[int]) -> Groups:
        """The chosen groups, in that order (itself when that is all of them, in order: its inputs are kept)."""
        if groups == list(range(len(self.items))):
            return self
        return Groups(
            [self.items[g] for g in groups], [self.texts[g] for g in groups], None,
            select_completions(self.completions, groups, self.group_size), self.totals[groups],
            None if self.shuffled_totals is None else self.shuffled_totals[groups],
        )

    @staticmethod
    def concat(parts: list[Groups], pad_token_id: int) -> Groups:
        """Groups of several generation rounds as one."""
        if len(parts) == 1:
            return parts[0]
        return Groups(
            [item for p in parts for item in p.items], [text for p in parts for text in p.texts], None,
            concat_completions([p.completions for p in parts], pad_token_id), torch.cat([p.totals for p in parts]),
            None if parts[0].shuffled_totals is None else torch.cat([p.shuffled_totals for p in parts]),
        )
