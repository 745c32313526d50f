"""Rewards for GRPO / T-GRPO: answer parsing, accuracy, format, length and temporal rewards.

`accuracy_reward` and `format_reward` keep TRL's reward signature `f(prompts, completions, **columns)`, so a
user reward plugs in the same way, by name or as "package.module:function" (see `resolve_reward`). The
length and temporal rewards are tensor functions over a [B, G] batch, called by the trainer.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from videor1.rewards.accuracy import PROBLEM_TYPES, accuracy_reward, accuracy_score, word_error_rate
from videor1.rewards.answers import completion_text, extract_answer, parse_choice, parse_number
from videor1.rewards.format import format_reward, is_well_formed
from videor1.rewards.length import length_bonus, length_bonus_batch
from videor1.rewards.temporal import (
    PRESETS,
    TemporalPreset,
    TemporalStats,
    is_correct,
    temporal_bonus,
    temporal_stats,
)

RewardFn = Callable[..., list[float]]

BUILTIN_REWARDS: dict[str, RewardFn] = {"accuracy": accuracy_reward, "format": format_reward}


def resolve_reward(name: str) -> RewardFn:
    """A reward function from a built-in name ("accuracy", "format") or a "package.module:function" path."""
    if name in BUILTIN_REWARDS:
        return BUILTIN_REWARDS[name]
    module_name, sep, attribute = name.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(
            f"unknown reward {name!r}: expected one of {sorted(BUILTIN_REWARDS)} or 'package.module:function'"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"reward {name!r}: cannot import module {module_name!r} ({error})") from error
    function = getattr(module, attribute, None)
    if function is None:
        raise ValueError(f"reward {name!r}: module {module_name!r} has no attribute {attribute!r}")
    if not callable(function):
        raise ValueError(f"reward {name!r}: {module_name}.{attribute} is not callable")
    return function


__all__ = [
    "BUILTIN_REWARDS",
    "PRESETS",
    "PROBLEM_TYPES",
    "RewardFn",
    "TemporalPreset",
    "TemporalStats",
    "accuracy_reward",
    "accuracy_score",
    "completion_text",
    "extract_answer",
    "format_reward",
    "is_correct",
    "is_well_formed",
    "length_bonus",
    "length_bonus_batch",
    "parse_choice",
    "parse_number",
    "resolve_reward",
    "temporal_bonus",
    "temporal_stats",
    "word_error_rate",
]
