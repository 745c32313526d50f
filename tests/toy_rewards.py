"""Toy reward functions for trainer tests, loaded by `module:function` like a user's own."""

TARGET = "<answer>"


def contains_target(prompts, completions, **columns):
    """1.0 when the completion contains the target token, else 0.0: a signal a tiny model can learn fast."""
    return [1.0 if TARGET in text else 0.0 for text in completions]


def prefers_short(prompts, completions, **columns):
    """Minus the completion's length in characters / 100: never constant across a group, so every step learns."""
    return [-len(text) / 100 for text in completions]


def varies_on_video_only(prompts, completions, data_type, **columns):
    """Minus the length / 100 for video questions, a constant 0 for images: image groups carry no signal."""
    return [-len(text) / 100 if kind == "video" else 0.0 for text, kind in zip(completions, data_type, strict=True)]
