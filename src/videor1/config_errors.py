"""Config errors that teach: each problem of a config becomes one line that names the dotted key and the fix.

Pure functions over pydantic config classes and their ValidationErrors; `videor1.config.load_config` joins the
lines into one `ConfigError`. Users arrive from TRL, HF Trainer, ms-swift and Video-R1's own scripts with those
projects' names for the same settings, so an unknown key is looked up in `ALIASES` before it is matched against
the config's own dotted keys.

`validation_message` is the plain one-line form of any pydantic error (`key: reason; …`), the one that command
options, the command line's error handler and the server's 400 answers share.
"""

from __future__ import annotations

import difflib
import functools
import typing
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

RULE = "config_rule"
"""Error type of a validator's refusal (`rule`); its message is the whole line."""

NOTHING: Any = object()
"""No value given (distinct from a YAML null)."""

Loc = tuple[str | int, ...]


class ConfigProblem(NamedTuple):
    """One line of a config error, and where the value at fault is (to say whether a file or an override set it)."""

    loc: Loc
    message: str


def rule(key: str, message: str) -> PydanticCustomError:
    """A validator's refusal: `message` is the whole line (it names `key`, the dotted key at fault, and the fix)."""
    return PydanticCustomError(RULE, "{message}", {"message": message, "key": key})


# ------------------------------------------------------------------------------------------------ the key space


def _submodel(annotation: Any) -> type[BaseModel] | None:
    """The config class a field holds (X, X | None or list[X]); None for a plain value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _submodel(arg)
        if found is not None:
            return found
    return None


@functools.cache
def config_fields(model: type[BaseModel]) -> dict[str, FieldInfo]:
    """Every dotted key of a config class, sections included (a list's items without an index) -> its field."""
    fields: dict[str, FieldInfo] = {}
    for name, info in model.model_fields.items():
        fields[name] = info
        sub = _submodel(info.annotation)
        if sub is not None:
            fields.update({f"{name}.{key}": child for key, child in config_fields(sub).items()})
    return fields


def valid_keys(model: type[BaseModel]) -> list[str]:
    """Every dotted key of a config class, sections included, in declaration order."""
    return list(config_fields(model))


def dotted(loc: Loc) -> str:
    """A pydantic location as the key a user writes: `rewards.0.name`."""
    return ".".join(str(part) for part in loc)


def _normal(loc: Loc) -> str:
    """A location as a key of `config_fields`: list indices dropped (`rewards.name`)."""
    return ".".join(str(part) for part in loc if not isinstance(part, int))


def _children(key: str, keys: Collection[str]) -> list[str]:
    """The keys directly under section `key` ("" = the top level), without their prefix."""
    prefix = f"{key}." if key else ""
    return [k[len(prefix):] for k in keys if k.startswith(prefix) and "." not in k[len(prefix):]]


def show(value: Any, limit: int = 60) -> str:
    """A value as it would be written after `key=` (YAML scalars, flow-style collections), shortened past `limit`."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, str | int | float):
        text = str(value)
    else:
        try:
            text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
        except yaml.YAMLError:
            text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ------------------------------------------------------------------------------------------------ one line


def error_reason(error: Mapping[str, Any]) -> str:
    """What one pydantic error says is wrong, without its key: a rule's whole line, or pydantic's message."""
    ctx = error.get("ctx") or {}
    if error["type"] == RULE:
        return str(ctx.get("message", error["msg"]))
    if error["type"] == "json_invalid":
        return f"invalid JSON: {ctx.get('error', error['msg'])}"
    # pydantic prefixes a validator's own ValueError with "Value error, "; the reason reads better without it
    return error["msg"].removeprefix("Value error, ")


def error_line(error: Mapping[str, Any], whole: str = "", drop: Collection[Any] = ()) -> str:
    """`key: reason` for one pydantic error; `whole` is the key of a location-less one (empty: just the reason).

    `drop` leaves location parts out of the key (FastAPI's "body"). A rule's line names its key itself, and text
    that is not JSON has no key, so those two are their reason alone.
    """
    reason = error_reason(error)
    if error["type"] in (RULE, "json_invalid"):
        return reason
    key = dotted(tuple(part for part in error.get("loc", ()) if part not in drop)) or whole
    return f"{key}: {reason}" if key else reason


class HasErrors(Protocol):
    """A pydantic ValidationError, or FastAPI's RequestValidationError (which wraps pydantic's errors)."""

    def errors(self) -> Sequence[Any]: ...


def validation_message(exc: HasErrors, whole: str = "", drop: Collection[Any] = ()) -> str:
    """One line for a validation error: each of its errors' `key: reason`, joined by "; "."""
    return "; ".join(error_line(error, whole, drop) for error in exc.errors())


# ------------------------------------------------------------------------------------------------ unknown keys


def suggest_key(key: str, valid_keys: Collection[str]) -> str | None:
    """The valid dotted key closest to an unknown one (`algorithm.kl_coeff` -> `algorithm.kl_coef`), or None."""
    parent, _, leaf = key.rpartition(".")
    # the sections holding the key are valid but no answer: `algorithm.foo` is not a misspelt `algorithm`
    leaf_of = {k: k.rpartition(".")[2] for k in valid_keys if not key.startswith(f"{k}.")}
    # a bare or misplaced name that exists elsewhere (`kl_coef` -> `algorithm.kl_coef`)
    same_leaf = [k for k, name in leaf_of.items() if name == leaf and k != key]
    if same_leaf:
        return (difflib.get_close_matches(key, same_leaf, n=1, cutoff=0) or same_leaf)[0]
    siblings = {name: k for k, name in leaf_of.items() if k.rpartition(".")[0] == parent}
    close = difflib.get_close_matches(leaf, list(siblings), n=1, cutoff=0.6)
    if close:
        return siblings[close[0]]
    # a shortened name (`overlong.cache` -> `overlong.cache_tokens`), when only one key starts with it
    started = [k for name, k in siblings.items() if len(leaf) >= 2 and name.startswith(leaf)]
    if len(started) == 1:
        return started[0]
    # a misspelt section (`algoritm.kl_coeff`); siblings were matched by name above, as a shared prefix says little
    elsewhere = [k for k in leaf_of if k.rpartition(".")[0] != parent]
    close = difflib.get_close_matches(key, elsewhere, n=1, cutoff=0.8)
    if close:
        return close[0]
    # a misspelt name in the wrong section, or bare: match it against every key's last part
    by_leaf: dict[str, list[str]] = {}
    for k, name in leaf_of.items():
        by_leaf.setdefault(name, []).append(k)
    close = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.75)
    if close:
        return (difflib.get_close_matches(key, by_leaf[close[0]], n=1, cutoff=0) or by_leaf[close[0]])[0]
    return None


def _same(value: Any) -> Any:
    return value


def _truthy(value: Any) -> bool:
    return value in (True, 1, "true", "True", "yes", "on")


class Target(NamedTuple):
    """A videor1 key that another project's name maps to."""

    key: str
    value: Callable[[Any], Any] | None = _same
    """The other project's value -> videor1's; None when it does not carry over as is."""
    note: str = ""


class Alias(NamedTuple):
    """Another project's name for a setting: the videor1 keys it maps to (the first this command has wins)."""

    origin: str
    targets: tuple[Target, ...] = ()
    note: str = ""
    """Said after the mapping, or instead of it when videor1 has no such setting."""


def _to(key: str, value: Callable[[Any], Any] | None = _same, note: str = "") -> tuple[Target, ...]:
    return (Target(key, value, note),)


_PROMPTS = "prompts per process, each sampled algorithm.num_generations times; newer TRL counts completions"

ALIASES: dict[str, Alias] = {
    # TRL's GRPOConfig / SFTConfig (HF TrainingArguments included) and ModelConfig
    "learning_rate": Alias("TRL", _to("optim.lr")),
    "per_device_train_batch_size": Alias(
        "TRL", (Target("prompts_per_device", None, _PROMPTS), Target("batch_size"))
    ),
    "beta": Alias("TRL", _to("algorithm.kl_coef")),
    "num_generations": Alias("TRL", _to("algorithm.num_generations")),
    "max_completion_length": Alias("TRL", _to("generation.max_new_tokens")),
    "max_prompt_length": Alias(
        "TRL", _to("generation.max_prompt_tokens", note="longer prompts are skipped and counted, not truncated")
    ),
    "temperature": Alias("TRL", _to("generation.temperature")),
    "top_p": Alias("TRL", _to("generation.top_p")),
    "top_k": Alias("TRL", _to("generation.top_k")),
    "epsilon": Alias(
        "TRL",
        _to("algorithm.clip_low", note="TRL's epsilon also sets the upper bound: set algorithm.clip_high too"),
    ),
    "epsilon_high": Alias("TRL", _to("algorithm.clip_high")),
    "loss_type": Alias("TRL", _to("algorithm.loss_type")),
    "num_iterations": Alias("TRL", _to("algorithm.num_iterations")),
    "scale_rewards": Alias(
        "TRL",
        _to("algorithm.scale_rewards", lambda v: ("group" if v else "none") if isinstance(v, bool) else v),
    ),
    "warmup_ratio": Alias("TRL", _to("optim.warmup_ratio")),
    "warmup_steps": Alias(
        "TRL", _to("optim.warmup_ratio", None, "a fraction of max_steps: warmup_steps / max_steps")
    ),
    "weight_decay": Alias("TRL", _to("optim.weight_decay")),
    "max_grad_norm": Alias("TRL", _to("optim.max_grad_norm")),
    "adam_beta1": Alias("TRL", _to("optim.betas", None, "both betas as one pair: optim.betas=[0.9, 0.999]")),
    "adam_beta2": Alias("TRL", _to("optim.betas", None, "both betas as one pair: optim.betas=[0.9, 0.999]")),
    "lr_scheduler_type": Alias("TRL", _to("optim.scheduler")),
    "save_steps": Alias("TRL", _to("save_every")),
    "dataloader_num_workers": Alias("TRL", _to("data.num_workers")),
    "eval_steps": Alias("TRL", _to("eval.every")),
    "dataset_name": Alias("TRL", _to("data.train_file", note="with data.media_root, the folder its paths start from")),
    "model_name_or_path": Alias("TRL", _to("model.name_or_path")),
    "torch_dtype": Alias("TRL", _to("model.dtype")),
    "gradient_checkpointing": Alias("TRL", _to("model.gradient_checkpointing")),
    "bf16": Alias("TRL", _to("mixed_precision", lambda v: "bf16" if _truthy(v) else "no")),
    "fp16": Alias("TRL", _to("mixed_precision", lambda v: "fp16" if _truthy(v) else "no")),
    "use_vllm": Alias("TRL", _to("generation.engine", lambda v: "vllm" if _truthy(v) else "hf")),
    "vllm_gpu_memory_utilization": Alias("TRL", _to("generation.vllm.gpu_memory_utilization")),
    "vllm_enable_sleep_mode": Alias("TRL", _to("generation.vllm.enable_sleep_mode")),
    "vllm_max_model_length": Alias("TRL", _to("generation.vllm.max_model_len")),
    "vllm_importance_sampling_cap": Alias("TRL", _to("generation.vllm.importance_cap")),
    "disable_dropout": Alias("TRL", _to("algorithm.disable_dropout")),
    "use_peft": Alias("TRL", _to("model.lora.enabled")),
    "lora_r": Alias("TRL", _to("model.lora.r")),
    "lora_alpha": Alias("TRL", _to("model.lora.alpha")),
    "lora_dropout": Alias("TRL", _to("model.lora.dropout")),
    "lora_target_modules": Alias("TRL", _to("model.lora.target_modules")),
    "logging_steps": Alias("TRL", note="videor1 logs every step (metrics.jsonl and report_to): drop it"),
    "num_train_epochs": Alias("TRL", note="videor1 counts steps, not epochs: set max_steps instead"),
    "deepspeed": Alias(
        "TRL", note="videor1 takes DeepSpeed from accelerate: accelerate launch --config_file your_zero3.yaml "
        "-m videor1.cli train …"
    ),
    # Video-R1's own training scripts
    "freeze_vision_modules": Alias("Video-R1", _to("model.freeze_vision")),
    "len_control": Alias("Video-R1", _to("algorithm.length.enabled")),
    # ms-swift
    "lora_rank": Alias("ms-swift", _to("model.lora.r")),
    "freeze_vit": Alias("ms-swift", _to("model.freeze_vision")),
    "attn_impl": Alias("ms-swift", _to("model.attn_implementation")),
    "train_type": Alias("ms-swift", _to("model.lora.enabled", lambda v: v == "lora")),
    # the other recipe's name for the batch
    "batch_size": Alias("videor1 sft", (Target("prompts_per_device", None, _PROMPTS),)),
    "prompts_per_device": Alias("videor1 train", _to("batch_size", None, "samples per process per micro-batch")),
}
"""Another project's name (the last part of an unknown key) -> what videor1 calls it."""


def trl_alias(
    key: str,
    value: Any = NOTHING,
    valid_keys: Collection[str] | None = None,
    elsewhere: Mapping[str, Collection[str]] | None = None,
) -> str | None:
    """The line for a TRL / HF Trainer / ms-swift / Video-R1 name (`learning_rate=1e-6` -> `optim.lr=1e-6`), or None.

    valid_keys: the keys of the config being loaded (None: any target will do); elsewhere: other commands
    (`videor1 sft`) -> their keys, to say whose key a target is when this config has none of them.
    """
    alias = ALIASES.get(key.rpartition(".")[2])
    if alias is None:
        return None
    elsewhere = elsewhere or {}
    own = alias.origin.startswith("videor1")
    said = f"{key} is a key of `{alias.origin}`" if own else f"{key} is {alias.origin}'s name"
    target = next((t for t in alias.targets if valid_keys is None or t.key in valid_keys), None)
    if target is None and alias.targets:
        owner = next((cmd for t in alias.targets for cmd, keys in elsewhere.items() if t.key in keys), None)
        # a config with none of the targets (eval's, say) is better served by its own closest key
        return f"{said} for {alias.targets[0].key}, a key of `{owner}` only" if owner else None
    if target is None:
        return f"{said}: {alias.note}"
    line = f"{said}: {'this config has' if own else 'videor1 calls it'} {target.key}"
    if target.value is not None and value is not NOTHING:
        line += f" ({target.key}={show(target.value(value))})"
    note = target.note or alias.note
    return f"{line}; {note}" if note else line


def unknown_key_message(
    key: str, value: Any, valid_keys: Collection[str], command: str = "videor1",
    elsewhere: Mapping[str, Collection[str]] | None = None,
) -> str:
    """The line for one unknown dotted key: another project's name, another command's key, or the closest key."""
    elsewhere = elsewhere or {}
    aliased = trl_alias(key, value, valid_keys, elsewhere)
    if aliased is not None:
        return aliased
    normal = ".".join(part for part in key.split(".") if not part.isdigit())
    owner = next((cmd for cmd, keys in elsewhere.items() if normal in keys), None)
    suggestion = suggest_key(normal, valid_keys)
    if suggestion is not None:
        parent = key.rpartition(".")[0]
        # keep the list index the user wrote (`rewards.0.nam` -> `rewards.0.name`)
        if parent and suggestion.rpartition(".")[0] == normal.rpartition(".")[0]:
            suggestion = f"{parent}.{suggestion.rpartition('.')[2]}"
    if owner is not None:
        line = f"{key} is a key of `{owner}`, not of `{command}`"
        return f"{line}: did you mean {suggestion}?" if suggestion else line
    if suggestion is not None:
        return f"unknown key {key}: did you mean {suggestion}?"
    parent = normal.rpartition(".")[0]
    while parent and parent not in valid_keys:
        parent = parent.rpartition(".")[0]
    where = f"{parent}'s keys are" if parent else "the top-level keys are"
    return f"unknown key {key}: {where} {', '.join(_children(parent, valid_keys))}"


def _leaves(loc: Loc, value: Any) -> list[tuple[Loc, Any]]:
    """An unknown section's keys, each with its value (`algoritm: {kl_coef: 0.1}` -> `algoritm.kl_coef`)."""
    if isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
        return [leaf for k, v in value.items() for leaf in _leaves((*loc, k), v)]
    return [(loc, value)]


def unknown_locs(exc: ValidationError) -> list[Loc]:
    """The locations of the keys a config class does not have."""
    return [tuple(e["loc"]) for e in exc.errors() if e["type"] == "extra_forbidden"]


# ------------------------------------------------------------------------------------------------ other errors


def _required_message(key: str, info: FieldInfo | None, fields: Mapping[str, FieldInfo]) -> str:
    """`data.train_file is required: <its description> (data.train_file=…)`; a section names its required keys."""
    normal = ".".join(part for part in key.split(".") if not part.isdigit())
    sub = _submodel(info.annotation) if info is not None else None
    if sub is not None:
        needed = [
            f"{key}.{name} ({child.description})" if child.description else f"{key}.{name}"
            for name, child in sub.model_fields.items()
            if child.is_required()
        ]
        return f"{key} is required: set {' and '.join(needed)}" if needed else f"{key} is required"
    description = fields[normal].description if normal in fields else None
    return f"{key} is required: {description} ({key}=…)" if description else f"{key} is required ({key}=…)"


def _value_message(error: Any, fields: Mapping[str, FieldInfo]) -> str:
    """`key=value: reason` for a wrong type, an out-of-range number or a value not among the choices."""
    key = dotted(error["loc"])
    if error["type"] in ("model_type", "model_attributes_type", "dict_type"):
        info = fields.get(_normal(error["loc"]))
        sub = _submodel(info.annotation) if info is not None else None
        if sub is not None:
            # a string where a section goes is usually its first, string, key (`model=Qwen/…`, `data=rows.json`)
            first, first_info = next(iter(sub.model_fields.items()))
            plain = isinstance(error["input"], str) and first_info.annotation is str
            example = f"{key}.{first}={show(error['input'])}" if plain else ""
            return (
                f"{key} is a section, not a value: set its keys ({', '.join(sub.model_fields)})"
                + (f", e.g. {example}" if example else "")
            )
    if not key or error["type"] in ("value_error", "assertion_error"):
        return error_line(error)  # the whole config's or a section's own check: its message names the keys
    return f"{key}={show(error['input'])}: {error_reason(error)}"


def error_lines(
    exc: ValidationError, model: type[BaseModel], command: str = "videor1",
    elsewhere: Mapping[str, Collection[str]] | None = None,
) -> list[ConfigProblem]:
    """One problem per error of `exc` (raised by `model`), each naming its dotted key and the fix, in order."""
    fields = config_fields(model)
    keys = list(fields)
    problems: list[ConfigProblem] = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        if error["type"] == "extra_forbidden":
            problems.extend(
                ConfigProblem(leaf, unknown_key_message(dotted(leaf), value, keys, command, elsewhere))
                for leaf, value in _leaves(loc, error["input"])
            )
        elif error["type"] == RULE:
            rule_key = str((error.get("ctx") or {}).get("key", ""))
            problems.append(ConfigProblem(tuple(rule_key.split(".")) if rule_key else (), error_reason(error)))
        elif error["type"] == "missing":
            problems.append(ConfigProblem(loc, _required_message(dotted(loc), fields.get(_normal(loc)), fields)))
        else:
            problems.append(ConfigProblem(loc, _value_message(error, fields)))
    # the same line twice (two list items, say) says nothing new
    return list({p.message: p for p in problems}.values())
