"""One command-line language: every media flag means the same in every command, and README's table is --help's."""

from pathlib import Path

import typer

from videor1.cli import app
from videor1.cli_reference import BEGIN, END, IO, MEDIA_FLAGS, commands, markdown, option_names
from videor1.config import MediaConfig, SFTConfig, TrainConfig, inference_media, load_config

ROOT = typer.main.get_command(app)
DECODES_MEDIA = {"eval", "infer", "serve", "annotate", "data validate", "data prepare"}
RUNS_A_MODEL_ON_CPU = {"eval", "eval run", "infer", "serve", "annotate", "demo"}


def _options(command):
    return {p.opts[0]: p for p in command.params if p.param_type_name == "option"}


def test_every_command_that_decodes_media_has_the_same_media_flags_and_help():
    found = {name: _options(command) for name, command in commands(ROOT)}
    with_media = {name for name, options in found.items() if MEDIA_FLAGS & set(options)}
    assert with_media == DECODES_MEDIA
    for flag in MEDIA_FLAGS:
        field = flag[2:].replace("-", "_")
        helps = {found[name][flag].help.rsplit(" (default: ", 1)[0] for name in DECODES_MEDIA}
        assert helps == {MediaConfig.model_fields[field].description}, flag
        for name in DECODES_MEDIA - {"data validate", "data prepare"}:  # the answering commands: inference defaults
            assert found[name][flag].help.endswith(f"(default: {_shown(getattr(inference_media(), field))})")
    assert "--frames" in found["eval"]["--max-frames"].opts  # the older spelling still parses


def _shown(value):
    return "none" if value is None else value


def test_torch_threads_wherever_a_model_runs_on_the_cpu():
    found = dict(commands(ROOT))
    for name in RUNS_A_MODEL_ON_CPU:
        assert "--torch-threads" in option_names(found[name]), name
    # train and sft take everything from their config: the same setting is a key there
    assert load_config(TrainConfig, "configs/tgrpo_tiny.yaml", ["torch_threads=1"]).torch_threads == 1
    assert load_config(SFTConfig, "configs/sft_tiny.yaml", ["torch_threads=1"]).torch_threads == 1


def test_every_command_says_what_it_reads_and_writes():
    assert {name for name, _ in commands(ROOT)} <= set(IO)


def test_readme_command_table_is_the_one_help_gives():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = readme[readme.index(BEGIN) + len(BEGIN) : readme.index(END)].strip()
    assert block == markdown(app), "README is stale: run python -m videor1.cli_reference --write"
