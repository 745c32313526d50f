"""eval's and infer's options come from EvalConfig as serve's come from ServeConfig: each default lives once."""

import typer

from videor1.cli import app
from videor1.cli_options import or_default
from videor1.cli_reference import commands
from videor1.eval.config import DecodingConfig, EvalConfig, EvalVLLMOptions

FOUND = dict(commands(typer.main.get_command(app)))
FIELDS = {
    "eval": {EvalConfig: ["batch_size", "dtype", "device", "attn_implementation", "system_prompt", "engine", "label",
                          "limit", "out"],
             DecodingConfig: ["temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens", "seed"],
             EvalVLLMOptions: ["enforce_eager", "gpu_memory_utilization", "max_model_len"]},
    "infer": {EvalConfig: ["dtype", "device", "engine"], DecodingConfig: ["temperature", "top_p", "max_new_tokens"],
              EvalVLLMOptions: ["enforce_eager"]},
}


def _help(command: str, name: str) -> str:
    flag = f"--{name.replace('_', '-')}"
    return next(p.help for p in FOUND[command].params if p.opts[0] == flag)


def test_eval_and_infer_help_is_the_fields_description_and_default():
    for command, models in FIELDS.items():
        for model, names in models.items():
            for name in names:
                info = model.model_fields[name]
                shown = "none" if info.default is None else info.default
                assert _help(command, name) == f"{info.description} (default: {shown})", (command, name)


def test_an_option_not_given_takes_the_configs_default():
    assert or_default(EvalConfig, "engine", None) == "hf"
    assert or_default(EvalConfig, "dtype", "float32") == "float32"
