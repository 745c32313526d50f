"""Typed configuration shared by every stage. Defaults live here and nowhere else.

Frame and pixel budgets are per stage (training and evaluation use different ones in the paper), so
each stage's config holds its own `MediaConfig` instead of reading module constants.
"""

from __future__ import annotations

import copy
import shlex
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ModelWrapValidatorHandler, ValidationError, model_validator

from videor1.config_errors import Loc, dotted, error_lines, rule, unknown_locs, valid_keys
from videor1.data.sampling import MAX_DECODE_PIXELS, FrameSampling, PixelBudget

M = TypeVar("M", bound=BaseModel)

# The paper's pixel unit: one merged 2x2 group of 14-px patches (Qwen2/2.5-VL).
PIXEL_UNIT = 28 * 28


class StrictModel(BaseModel):
    """A config section: unknown keys, wrong types and non-finite numbers fail at load time with the key's name."""

    # inf and nan pass every bound (inf > 0), so `gt=0` alone let optim.lr=inf through to a run of NaN losses
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# A folder of frames has no header to say its rate; MVBench's TVQA frames (frames_fps3_hq) are 3 fps.
FRAME_FOLDER_FPS = 3.0


class MediaConfig(StrictModel):
    """How images and videos are decoded and resized for one stage (training defaults of the paper)."""

    fps: float = Field(2.0, gt=0, description="video frames sampled per second")
    min_frames: int = Field(4, ge=2, description="fewest frames sampled from a video")
    max_frames: int = Field(16, ge=2, description="most frames sampled from a video")
    nframes: int | None = Field(None, ge=2, description="explicit frame count; overrides fps")
    video_min_pixels: int = Field(4 * PIXEL_UNIT, gt=0, description="per-frame pixel floor")
    video_max_pixels: int = Field(128 * PIXEL_UNIT, gt=0, description="per-frame pixel budget")
    image_min_pixels: int = Field(4 * PIXEL_UNIT, gt=0, description="image pixel floor")
    image_max_pixels: int = Field(256 * PIXEL_UNIT, gt=0, description="image pixel budget")
    frame_fps: float = Field(
        FRAME_FOLDER_FPS,
        gt=0,
        description="frame rate of a folder of image frames whose row has no fps column",
    )
    max_decode_pixels: int = Field(
        MAX_DECODE_PIXELS,
        gt=0,
        description="largest width x height of an image or video frame decoded at all, read from the header "
        "first (a video is also refused past 100,000 times this in frames x width x height)",
    )

    @model_validator(mode="after")
    def _ordered(self) -> MediaConfig:
        if self.min_frames > self.max_frames:
            raise ValueError(f"min_frames ({self.min_frames}) exceeds max_frames ({self.max_frames})")
        if self.video_min_pixels > self.video_max_pixels:
            raise ValueError("video_min_pixels exceeds video_max_pixels")
        if self.image_min_pixels > self.image_max_pixels:
            raise ValueError("image_min_pixels exceeds image_max_pixels")
        return self

    def sampling(self) -> FrameSampling:
        """Frame sampling for videos."""
        return FrameSampling(
            fps=self.fps, min_frames=self.min_frames, max_frames=self.max_frames, nframes=self.nframes
        )

    def video_budget(self, factor: int) -> PixelBudget:
        """Per-frame pixel budget; factor = patch size x merge size of the model's processor."""
        return PixelBudget(
            min_pixels=self.video_min_pixels,
            max_pixels=self.video_max_pixels,
            factor=factor,
            max_decode_pixels=self.max_decode_pixels,
        )

    def image_budget(self, factor: int) -> PixelBudget:
        """Image pixel budget; factor = patch size x merge size of the model's processor."""
        return PixelBudget(
            min_pixels=self.image_min_pixels,
            max_pixels=self.image_max_pixels,
            factor=factor,
            max_decode_pixels=self.max_decode_pixels,
        )


class ConfigError(ValueError):
    """A config file or override that does not fit the typed config: one line naming each key and its fix."""

    def __init__(self, message: str, problems: Sequence[str] = ()):
        super().__init__(message)
        self.problems: list[str] = list(problems) or [message]


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Merge dotted `key.sub=value` overrides into a nested dict; values are parsed as YAML scalars/lists."""
    merged = copy.deepcopy(data)
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {override!r} is not key=value")
        node = merged
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {override!r}: {part} is not a section")
            node = child
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            reason = getattr(exc, "problem", None) or type(exc).__name__
            raise ConfigError(f"override {override!r}: the value is not YAML ({reason})") from exc
    return merged


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML parse error in one line, with where it is (PyYAML's own message spans several)."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"not valid YAML{where}: {getattr(exc, 'problem', None) or exc}"


def _set_by_file(loc: Loc, file_data: dict[str, Any], overrides: list[str]) -> bool:
    """Whether the value at loc came from the file (and no override replaced it or a key under it)."""
    key = dotted(loc)
    for override in overrides:
        given = override.partition("=")[0].strip()
        if given == key or given.startswith(f"{key}.") or key.startswith(f"{given}."):
            return False
    node: Any = file_data
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            return False
    return True


def _unknown_keys(cls: type[BaseModel], data: dict[str, Any]) -> set[str]:
    """The dotted keys of data that cls does not have (its other errors aside)."""
    try:
        cls.model_validate(data)
    except ValidationError as exc:
        return {dotted(loc) for loc in unknown_locs(exc)}
    return set()


def _other_recipe(
    cls: type[BaseModel], path: str | Path, file_data: dict[str, Any], overrides: list[str]
) -> str | None:
    """The line for a file written for another recipe (`videor1 train` given an SFT config); None otherwise."""
    if cls not in RECIPES or not issubclass(cls, RecipeConfig):
        return None
    mine = _unknown_keys(cls, file_data)
    for other in RECIPES:
        if other is cls or not mine:
            continue
        theirs = _unknown_keys(other, file_data)
        # the other recipe knows some keys this one refuses, and refuses none that this one knows
        if theirs < mine:
            keys = sorted(mine - theirs)
            owned = f"{', '.join(keys)} {'are keys' if len(keys) > 1 else 'is a key'} of `videor1 {other.command}`"
            command = shlex.join(["videor1", other.command, str(path), *overrides])
            return f"{path} is {other.kind} ({owned}, not of `videor1 {cls.command}`): run `{command}`"
    return None


def _explain(
    exc: ValidationError, cls: type[BaseModel], path: str | Path | None, file_data: dict[str, Any], overrides: list[str]
) -> ConfigError:
    """One ConfigError for a failed validation: each problem on its own clause, the file named where it set the key."""
    if path is not None:
        wrong_recipe = _other_recipe(cls, path, file_data, overrides)
        if wrong_recipe is not None:
            return ConfigError(wrong_recipe)
    command, elsewhere = "videor1", None
    if issubclass(cls, RecipeConfig) and cls in RECIPES:
        command = f"videor1 {cls.command}"
        # to say whose key it is when a key belongs to the other recipe
        elsewhere = {f"videor1 {r.command}": frozenset(valid_keys(r)) for r in RECIPES if r is not cls}
    lines = [
        f"{path}: {problem.message}" if path is not None and _set_by_file(problem.loc, file_data, overrides)
        else problem.message
        for problem in error_lines(exc, cls, command, elsewhere)
    ]
    return ConfigError("; ".join(lines), lines)


def load_config(cls: type[M], path: str | Path | None = None, overrides: list[str] | None = None) -> M:
    """Load a YAML file into a typed config, apply dotted overrides; each error is one line naming the key and fix."""
    data: dict[str, Any] = {}
    if path is not None:
        from videor1.data.dataset import DatasetError, open_regular_file

        try:
            with open_regular_file(path) as file:  # a FIFO or a device is refused, never waited on
                text = file.read().decode("utf-8")
            loaded = yaml.safe_load(text)
        except DatasetError as exc:
            raise ConfigError(str(exc)) from exc
        except RecursionError:
            # PyYAML's parser recurses once per level: "[" * 200_000 is a config nobody wrote
            raise ConfigError(f"{path}: YAML nested too deeply to be a config") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); a config is a YAML file") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: {_yaml_problem(exc)}") from exc
        except OSError as exc:
            raise ConfigError(f"{path}: {exc.strerror or exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        data = loaded or {}
    file_data = data
    data = apply_overrides(data, overrides or [])
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise _explain(exc, cls, path, file_data, overrides or []) from exc


def save_config(config: BaseModel, path: str | Path) -> None:
    """Write the resolved config as YAML (every default spelled out) for the run directory."""
    from videor1.atomic import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))


class LoraConfig(StrictModel):
    """LoRA adapters on the language model (peft); the vision tower is never adapted."""

    enabled: bool = False
    r: int = Field(16, gt=0, description="adapter rank")
    alpha: int = Field(32, gt=0, description="scaling numerator (scale = alpha / r)")
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="projection names inside the language model's layers",
    )


class TinyModelConfig(StrictModel):
    """Build a tiny offline model at `model.name_or_path` when that folder does not exist yet."""

    family: str = Field("qwen2_5_vl", description="qwen2_vl, qwen2_5_vl or qwen3_vl")
    seed: int = 0
    corpus_from_train_file: bool = Field(True, description="train the tokenizer on the training rows' text")


class ModelConfig(StrictModel):
    """Which model to train and how to hold it."""

    name_or_path: str = Field("Qwen/Qwen2.5-VL-7B-Instruct", description="hub id or local folder")
    dtype: str = Field("bfloat16", description="float32, bfloat16 or float16")
    attn_implementation: str | None = Field(None, description="e.g. sdpa or flash_attention_2; None = default")
    freeze_vision: bool = Field(True, description="keep the vision tower (and merger) frozen")
    gradient_checkpointing: bool = False
    logit_chunk_tokens: int | None = Field(
        1024,
        ge=1,
        description="tokens per chunk of the vocabulary projection (lm_head, temperature, log-softmax) when scoring "
        "completions and in SFT's loss, recomputed in backward, so no [tokens, vocabulary] tensor exists; null: all "
        "tokens at once and kept for backward (memory grows with tokens x vocabulary)",
    )
    lora: LoraConfig = Field(default_factory=LoraConfig)
    tiny: TinyModelConfig | None = Field(None, description="build a tiny model if name_or_path is missing")


class SyntheticDataConfig(StrictModel):
    """Write synthetic data at `data.media_root` when `data.train_file` does not exist yet."""

    n: int = Field(200, gt=0, description="training rows")
    n_test: int | None = None
    seed: int = 0
    size: int = Field(112, gt=0, description="frame and image side in pixels")
    tasks: list[str] | None = Field(None, description="subset of synthetic task names; None = all")


class DataConfig(StrictModel):
    """Training data in the Video-R1 schema."""

    train_file: str = Field(
        ..., description="the training rows in the Video-R1 schema, as JSON, JSONL, parquet or a datasets folder"
    )
    media_root: str = Field(..., description="folder the rows' paths are relative to")
    shuffle: bool = True
    max_failure_fraction: float = Field(
        0.05, ge=0, le=1, description="stop with an error once this fraction of loaded samples failed"
    )
    num_workers: int = Field(
        0, ge=0, description="media-decoding workers: SFT's DataLoader processes; RL's threads, which decode the "
        "next batch while a step computes (worth it when the model runs on a GPU; on a small CPU they take its "
        "cores); 0: decode in the main process when a batch is needed",
    )
    synthetic: SyntheticDataConfig | None = None


class VLLMOptions(StrictModel):
    """The colocated vLLM engine (generation.engine: vllm)."""

    gpu_memory_utilization: float = Field(0.3, gt=0, le=1, description="share of GPU memory vLLM may take")
    enforce_eager: bool = Field(False, description="no torch.compile / CUDA graphs: fast start, slower decoding")
    max_model_len: int | None = Field(None, gt=0, description="longest prompt + completion; None = the model's")
    enable_sleep_mode: bool = Field(False, description="GPU: free vLLM's memory during each update")
    check_prompts: bool = Field(True, description="stop when vLLM's first prompts differ from the HF processor's")
    importance_cap: float | None = Field(
        None, gt=0, description="truncated importance sampling: token weights min(pi_old / pi_vllm, cap); None = off"
    )


def inference_media() -> MediaConfig:
    """Media for answering (eval, infer, serve, annotate): the paper's evaluation budgets, 16 frames at 2 fps of
    at most 256·28·28 pixels each; training keeps MediaConfig's own 128·28·28."""
    return MediaConfig(max_frames=16, video_max_pixels=256 * PIXEL_UNIT)


class GenerationConfig(StrictModel):
    """Sampling of rollouts (paper: temperature 1.0, top_p 0.95, 768 new tokens)."""

    max_new_tokens: int = Field(768, gt=0)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(0.95, gt=0, le=1)
    top_k: int | None = Field(None, gt=0)
    max_prompt_tokens: int = Field(16384, gt=0, description="longer prompts are skipped and counted")
    engine: Literal["hf", "hf-generate", "vllm"] = Field(
        "hf",
        description="hf: videor1's sampler on the HF model (each prompt prefilled once, ordered and shuffled rows "
        "in one decode loop); hf-generate: HF generate, the reference; vllm: a colocated vLLM",
    )
    vllm: VLLMOptions = Field(default_factory=VLLMOptions)


class RewardSpec(StrictModel):
    """One reward function (built-in name or `module:function`) and its weight."""

    name: str
    weight: float = 1.0


class LengthRewardConfig(StrictModel):
    """Video-R1's length reward: +bonus to correct answers of length in [min_tokens, max_tokens]."""

    enabled: bool = True
    min_tokens: int = Field(320, ge=0)
    max_tokens: int = Field(512, ge=0)
    bonus: float = 0.2

    @model_validator(mode="after")
    def _window(self) -> LengthRewardConfig:
        if self.enabled and self.min_tokens > self.max_tokens:
            raise rule(
                "algorithm.length.min_tokens",
                f"algorithm.length.min_tokens ({self.min_tokens}) exceeds algorithm.length.max_tokens "
                f"({self.max_tokens}): no completion can earn the length bonus; swap them, or set "
                "algorithm.length.enabled=false",
            )
        return self


@dataclass(frozen=True)
class TemporalPreset:
    """Knobs of the T-GRPO temporal reward (Video-R1, arXiv 2503.21776, eq. 1-2)."""

    alpha: float
    """Reward α added to each correct ordered answer when the question passes the temporal test."""
    mu: float
    """Margin μ: the test is p ≥ μ·p̃ (1.0 in the paper, 0.8 in the released code)."""
    threshold: float
    """An answer is correct when its accuracy reward is above this (continuous rewards)."""
    group_accuracy: str
    """What p and p̃ average: correct_fraction (answers above the threshold, the paper) or mean_reward (the
    accuracy rewards themselves, as the released code's `acc_mean >= 0.8 * shuffled_acc_mean`)."""


GROUP_ACCURACY: tuple[str, ...] = ("correct_fraction", "mean_reward")

PRESETS: dict[str, TemporalPreset] = {
    "paper": TemporalPreset(alpha=0.3, mu=1.0, threshold=0.5, group_accuracy="correct_fraction"),
    "video-r1-code": TemporalPreset(alpha=0.3, mu=0.8, threshold=0.1, group_accuracy="mean_reward"),
}
"""`algorithm.preset`: the paper's values, and those the released Video-R1 model was trained with."""


class ClipRange(NamedTuple):
    """A loss type's default clip range: the importance ratio is kept in [1 − clip_low, 1 + clip_high]."""

    clip_low: float
    clip_high: float


LOSS_DEFAULTS: dict[str, ClipRange] = {
    "grpo": ClipRange(0.2, 0.2),  # PPO's ε (DeepSeekMath, arXiv 2402.03300)
    "dapo": ClipRange(0.2, 0.28),  # clip-higher (arXiv 2503.14476)
    "dr_grpo": ClipRange(0.2, 0.2),  # arXiv 2503.20783
    "gspo": ClipRange(3e-4, 4e-4),  # a sequence-level ratio needs a small ε (arXiv 2507.18071)
    # CISPO bounds the importance weight above only (arXiv 2506.13585): the lower bound 1 − 1.0 = 0 is never
    # reached by a positive ratio, so clip_low 1.0 is exactly "no lower bound"; clip_high 0.28 as in verl
    "cispo": ClipRange(1.0, 0.28),
}
"""`algorithm.loss_type` -> its default clip range; `videor1.rl.losses.POLICY_LOSSES` reads it from here."""

SHUFFLE_MODES: tuple[str, ...] = ("frame", "patch")
"""How T-GRPO shuffles a video: every frame (the original) or whole temporal patches (frame pairs kept)."""
ADVANTAGES: tuple[str, ...] = ("grpo", "rloo", "reinforce_pp")
"""`algorithm.advantage`: the estimators of `videor1.rl.advantages.ADVANTAGE_ESTIMATORS`, by name."""
SCALE_REWARDS: tuple[str, ...] = ("group", "batch", "none")
"""`algorithm.scale_rewards`: what the grpo estimator divides the centred rewards by."""

_ALGORITHM_CHOICES: dict[str, tuple[str, ...]] = {
    "preset": tuple(PRESETS),
    "group_accuracy": GROUP_ACCURACY,
    "shuffle_mode": SHUFFLE_MODES,
    "advantage": ADVANTAGES,
    "scale_rewards": SCALE_REWARDS,
    "loss_type": tuple(LOSS_DEFAULTS),
}


def _check_choice(key: str, value: Any) -> None:
    """Raise, naming the key, unless value is one of the algorithm key's choices."""
    allowed = _ALGORITHM_CHOICES[key]
    if value not in allowed:
        raise rule(f"algorithm.{key}", f"algorithm.{key} must be one of {', '.join(allowed)}, not {value!r}")


class DynamicSamplingConfig(StrictModel):
    """DAPO dynamic sampling (arXiv 2503.14476): groups whose rewards are all equal carry no signal."""

    enabled: bool = False
    max_rounds: int = Field(
        3,
        ge=1,
        description="extra generation rounds per micro-batch to replace groups whose rewards are all equal; "
        "past it the batch is filled with the dropped groups",
    )


class OverlongConfig(StrictModel):
    """DAPO soft overlong punishment (arXiv 2503.14476, eq. 13), added to the reward of long completions."""

    enabled: bool = False
    cache_tokens: int = Field(
        128,
        ge=0,
        description="soft overlong punishment interval (DAPO eq. 13): penalty 0 up to max_new_tokens − "
        "cache_tokens, falling to −1 at max_new_tokens",
    )


class AlgorithmConfig(StrictModel):
    """GRPO / T-GRPO. A knob left out (or null) resolves at load time from the preset, G or the loss type,
    so every field holds a concrete value and a saved config records the values a run used."""

    temporal: bool = Field(True, description="T-GRPO: score a shuffled-frame group for each video question")
    preset: str = Field(
        "paper", description="temporal knobs: paper (alpha 0.3, mu 1.0, threshold 0.5, fraction correct) or "
        "video-r1-code (0.3, 0.8, 0.1, mean accuracy reward)"
    )
    alpha: float = Field(description="temporal reward; default: the preset's alpha")
    mu: float = Field(description="margin in p >= mu * p_shuffled; default: the preset's mu")
    threshold: float = Field(description="accuracy above this counts as correct; default: the preset's threshold")
    group_accuracy: str = Field(
        description="p and p~ as the fraction of correct answers (correct_fraction) or the mean accuracy reward "
        "(mean_reward); default: the preset's (paper: correct_fraction, video-r1-code: mean_reward)"
    )
    temporal_signal: Literal["bonus", "joint", "ema_std"] = Field(
        "bonus",
        description="how T-GRPO's ordered-vs-shuffled comparison reaches the advantages: bonus (as published: +alpha "
        "on correct ordered answers, which per-group std scaling cancels for 0/1 accuracy), joint (no bonus; "
        "ordered rewards centred and scaled by the ordered and shuffled rewards together, after STRIVE) or "
        "ema_std (the bonus, with each group scaled by its task's running reward std instead of its own, after "
        "EMA-GRPO); docs/temporal.md",
    )
    ema_decay: float = Field(0.9, ge=0, lt=1, description="temporal_signal=ema_std: the running std's decay per step")
    shuffle_mode: str = Field(
        "frame", description="frame (the original) or patch (keeps frame pairs: the shuffled prompts reuse the "
        "ordered ones' pixels and frozen vision features, no second processor call or tower pass)",
    )
    num_generations: int = Field(8, ge=1, description="G: ordered completions per prompt")
    num_shuffled: int = Field(ge=1, description="G~: shuffled completions per video; default: max(1, G // 2)")
    advantage: str = Field("grpo", description="grpo, rloo or reinforce_pp")
    scale_rewards: str = Field(
        description="group, batch or none (grpo estimator); default: none for loss_type dr_grpo, else group"
    )
    loss_type: str = Field("grpo", description="grpo, dapo, dr_grpo, gspo or cispo")
    kl_coef: float = Field(0.04, ge=0, description="beta; 0 drops the reference model")
    clip_low: float = Field(
        ge=0, description="ratio clipped below at 1 - clip_low; default: the loss type's (LOSS_DEFAULTS)"
    )
    clip_high: float = Field(
        ge=0, description="ratio clipped above at 1 + clip_high; default: the loss type's (LOSS_DEFAULTS)"
    )
    num_iterations: int = Field(1, ge=1, description="optimizer updates per rollout batch")
    disable_dropout: bool = Field(
        True,
        description="dropout off in the policy (LoRA's and the model's), so old and new log-probs of a batch come "
        "from one network and the first importance ratio is exactly 1 (as verl and OpenRLHF)",
    )
    scoring: Literal["shared_prefix", "full"] = Field(
        "shared_prefix",
        description="log-probs with each prompt run once under its G completions (shared_prefix, needs SDPA "
        "attention) or over G full prompt+completion sequences (full, the reference); the numbers are the same",
    )
    length: LengthRewardConfig = Field(default_factory=LengthRewardConfig)
    dynamic_sampling: DynamicSamplingConfig = Field(default_factory=DynamicSamplingConfig)
    overlong: OverlongConfig = Field(default_factory=OverlongConfig)

    @classmethod
    def _resolution(cls, data: dict[str, Any]) -> dict[str, Any]:
        """What each resolvable knob is when left out, given the rest of the section."""
        fields = cls.model_fields
        preset = data.get("preset", fields["preset"].default)
        loss_type = data.get("loss_type", fields["loss_type"].default)
        _check_choice("preset", preset)  # checked before use as a key, so the error names it
        _check_choice("loss_type", loss_type)
        resolved: dict[str, Any] = {
            **asdict(PRESETS[preset]),  # alpha, mu, threshold, group_accuracy
            **LOSS_DEFAULTS[loss_type]._asdict(),  # clip_low, clip_high
            # Dr.GRPO is defined without std scaling of the advantages (arXiv 2503.20783)
            "scale_rewards": "none" if loss_type == "dr_grpo" else "group",
        }
        try:
            num_generations = int(data.get("num_generations", fields["num_generations"].default))
        except (TypeError, ValueError):
            # num_generations itself fails validation; a stand-in keeps a second, misleading "missing" error away
            resolved["num_shuffled"] = 1
        else:
            resolved["num_shuffled"] = max(1, num_generations // 2)  # G~ = G/2 in the paper
        return resolved

    @model_validator(mode="before")
    @classmethod
    def _resolve_defaults(cls, data: Any) -> Any:
        """Fill each knob that is missing or null from the preset, G and the loss type; given values win."""
        if not isinstance(data, dict):
            return data
        resolved = cls._resolution(data)
        return {**data, **{key: value for key, value in resolved.items() if data.get(key) is None}}

    @model_validator(mode="wrap")
    @classmethod
    def _given_knobs_matter(cls, data: Any, handler: ModelWrapValidatorHandler[AlgorithmConfig]) -> AlgorithmConfig:
        """Refuse a knob given explicitly that the rest of the section ignores.

        Declared after `_resolve_defaults`, so it wraps it and sees the data as given. A value equal to the one the
        knob resolves to passes: a saved config spells out every resolved knob, and must load again.
        """
        config = handler(data)
        if not isinstance(data, dict):
            return config
        resolved = cls._resolution(data)
        given = {key: data[key] for key in ("num_shuffled", "scale_rewards") if data.get(key) is not None}
        if "num_shuffled" in given and not config.temporal and config.num_shuffled != resolved["num_shuffled"]:
            raise rule(
                "algorithm.num_shuffled",
                f"algorithm.num_shuffled={config.num_shuffled} has no effect with algorithm.temporal=false (only "
                "T-GRPO samples shuffled-frame completions): drop it, or set algorithm.temporal=true",
            )
        scaled = config.scale_rewards != resolved["scale_rewards"]
        if "scale_rewards" in given and config.advantage != "grpo" and scaled:
            raise rule(
                "algorithm.scale_rewards",
                f"algorithm.scale_rewards={config.scale_rewards} has no effect with algorithm.advantage="
                f"{config.advantage} (only the grpo estimator scales rewards): drop it, or set "
                "algorithm.advantage=grpo",
            )
        return config

    @model_validator(mode="after")
    def _known(self) -> AlgorithmConfig:
        for key in _ALGORITHM_CHOICES:
            _check_choice(key, getattr(self, key))
        return self

    @model_validator(mode="after")
    def _meaningful(self) -> AlgorithmConfig:
        if self.num_generations < 2:
            raise rule(
                "algorithm.num_generations",
                f"algorithm.num_generations={self.num_generations}: a group of one has no advantage (each completion "
                "is scored against its group's mean, so every advantage is 0 and nothing is learned); GRPO needs "
                "2 or more, e.g. algorithm.num_generations=8",
            )
        if self.temporal_signal != "bonus" and not (self.temporal and self.advantage == "grpo"
                                                     and self.scale_rewards == "group"):
            raise rule(
                "algorithm.temporal_signal",
                f"algorithm.temporal_signal={self.temporal_signal} reshapes GRPO's per-group normalisation of the "
                "ordered and shuffled groups: it needs algorithm.temporal=true, advantage=grpo and "
                f"scale_rewards=group (here temporal={str(self.temporal).lower()}, advantage={self.advantage}, "
                f"scale_rewards={self.scale_rewards})",
            )
        if self.clip_low > 1:
            raise rule(
                "algorithm.clip_low",
                f"algorithm.clip_low={self.clip_low}: the ratio is clipped below at 1 - clip_low, and a ratio is "
                "never negative, so 1.0 already means no lower bound: use a value from 0 to 1 (e.g. 0.2)",
            )
        return self


class OptimConfig(StrictModel):
    """AdamW and the learning-rate schedule (sized to the run's max_steps)."""

    lr: float = Field(1e-6, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float = Field(5.0, gt=0)
    scheduler: str = Field("cosine", description="any transformers scheduler name: cosine, linear, constant...")
    warmup_ratio: float = Field(0.0, ge=0, lt=1)


class DistributedConfig(StrictModel):
    """How the model is spread over processes: replicated (DDP, or what the accelerate launch config says) or
    sharded with torch's FSDP2 (`fully_shard`, per decoder block), the same on gloo (CPU) and NCCL (GPU)."""

    sharding: Literal["none", "fsdp2"] = Field(
        "none", description="none (each process holds the whole model) or fsdp2 (parameters, gradients and "
        "optimizer state sharded over the processes)"
    )
    reshard_after_forward: bool = Field(
        True, description="fsdp2: free each block's gathered weights after its forward (less memory, one more "
        "all-gather in backward)"
    )
    cpu_offload: bool = Field(False, description="fsdp2: keep the parameter and optimizer shards in CPU memory")
    param_dtype: Literal["float32", "bfloat16", "float16"] | None = Field(
        None, description="fsdp2 mixed precision: dtype of the gathered weights in forward/backward (none: as loaded)"
    )
    reduce_dtype: Literal["float32", "bfloat16", "float16"] | None = Field(
        None, description="fsdp2 mixed precision: dtype of the gradient reduce-scatter (none: as the parameters)"
    )


class RecipeConfig(StrictModel):
    """What every training recipe shares (`videor1 sft`, `videor1 train`): run dir, steps, model, data, optim."""

    command: ClassVar[str] = ""
    """The `videor1` sub-command that runs this recipe."""
    kind: ClassVar[str] = "a training config"
    """What a config file of this recipe is, in an error message."""

    output_dir: str = "runs/train"
    seed: int = 0
    max_steps: int = Field(1000, gt=0, description="training steps; each ends with one optimizer update")
    gradient_accumulation_steps: int = Field(1, ge=1, description="micro-batches per optimizer update")
    mixed_precision: str = Field("no", description="accelerate mixed precision: no, bf16 or fp16")
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig
    media: MediaConfig = Field(default_factory=MediaConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    save_every: int = Field(100, gt=0, description="checkpoint every N steps (and at the end)")
    save_total_limit: int | None = Field(3, ge=1, description="keep the newest N checkpoints")
    torch_threads: int | None = Field(
        None, ge=1, description="CPU threads for torch (none: torch's own choice); 1 is often fastest on a busy machine"
    )
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=lambda: ["tensorboard"],
        description="metric trackers besides metrics.jsonl: tensorboard, wandb, mlflow (each an optional extra); "
        "[] for none",
    )

    @model_validator(mode="before")
    @classmethod
    def _tensorboard_switch(cls, data: Any) -> Any:
        """`tensorboard: true/false` (older configs and saved runs) adds TensorBoard to or drops it from report_to."""
        if not isinstance(data, dict) or "tensorboard" not in data:
            return data
        data = dict(data)
        enabled = data.pop("tensorboard")
        trackers = [t for t in data.get("report_to", ["tensorboard"]) if t != "tensorboard"]
        data["report_to"] = (["tensorboard"] + trackers) if enabled in (True, "true", "True", 1) else trackers
        return data


class TrainConfig(RecipeConfig):
    """A `videor1 train` run."""

    command: ClassVar[str] = "train"
    kind: ClassVar[str] = "a GRPO / T-GRPO config"

    max_steps: int = Field(1000, gt=0, description="rollout batches per process (x num_iterations updates)")
    prompts_per_device: int = Field(1, ge=1, description="P: prompts per process per micro-batch")
    gradient_accumulation_steps: int = Field(1, ge=1, description="rollout micro-batches per optimizer update")
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    rewards: list[RewardSpec] = Field(
        default_factory=lambda: [RewardSpec(name="accuracy"), RewardSpec(name="format")]
    )
    log_rollouts: int = Field(2, ge=0, description="rollouts per step written to rollouts.jsonl")

    @model_validator(mode="after")
    def _temporal_needs_accuracy(self) -> TrainConfig:
        if self.algorithm.temporal and "accuracy" not in {r.name for r in self.rewards}:
            raise rule(
                "algorithm.temporal",
                "algorithm.temporal needs the accuracy reward in rewards: add {name: accuracy} to rewards, or set "
                "algorithm.temporal=false",
            )
        return self

    @model_validator(mode="after")
    def _overlong_fits_generation(self) -> TrainConfig:
        overlong, max_new_tokens = self.algorithm.overlong, self.generation.max_new_tokens
        if overlong.enabled and overlong.cache_tokens > max_new_tokens:
            raise rule(
                "algorithm.overlong.cache_tokens",
                f"algorithm.overlong.cache_tokens ({overlong.cache_tokens}) exceeds generation.max_new_tokens "
                f"({max_new_tokens}): lower it to at most {max_new_tokens}",
            )
        return self


class HeldOutConfig(StrictModel):
    """Periodic held-out evaluation during training: greedy answers scored by the rewards' rules."""

    file: str = Field(..., description="a Video-R1-format file (e.g. the synthetic test.json)")
    media_root: str | None = Field(None, description="defaults to data.media_root")
    every: int = Field(0, ge=0, description="steps between evaluations; 0 = only before and after training")
    max_samples: int = Field(64, gt=0)
    max_new_tokens: int = Field(128, gt=0)
    batch_size: int = Field(8, gt=0)


class SFTConfig(RecipeConfig):
    """A `videor1 sft` run (the same override keys as `videor1 train` where they mean the same)."""

    command: ClassVar[str] = "sft"
    kind: ClassVar[str] = "an SFT config"

    output_dir: str = "runs/sft"
    max_steps: int = Field(1000, gt=0, description="optimizer steps")
    batch_size: int = Field(1, ge=1, description="samples per process per micro-batch")
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=1e-6))
    eval: HeldOutConfig | None = None
    save_every: int = Field(500, gt=0, description="checkpoint every N steps (and at the end)")
    save_total_limit: int | None = Field(2, ge=1, description="keep the newest N checkpoints")


RECIPES: tuple[type[RecipeConfig], ...] = (TrainConfig, SFTConfig)
"""The recipe configs, each run by `videor1 <command>`; a file written for one is recognised by the others."""
