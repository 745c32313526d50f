"""Bad input ends a command with one line naming the file or key and exit code 2, never a Python traceback.

Exit codes of every command: 0 done; 1 the command ran and found problems (`data validate`) or stopped on
its data (a training run past its failure budget); 2 bad input: arguments, config, unreadable, empty or
too deeply nested files, a path that is not a regular file, a model path that does not exist, a truncated
or corrupt weights file. `videor1 --debug …` shows the traceback instead. Exceptions that are not about
input (bugs) keep their traceback: hiding them would only make them harder to report.
"""

from __future__ import annotations

import sys
from typing import Any

import click
import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from videor1.config_errors import validation_message

EXIT_PROBLEMS = 1
EXIT_BAD_INPUT = 2

_err = Console(stderr=True, soft_wrap=True)


def input_error_message(exc: BaseException) -> str | None:
    """The one-line message of an input error; None when the exception is not about input."""
    from videor1.data.dataset import DatasetError
    from videor1.data.media import MediaError

    # an exception of a module never imported cannot have been raised: skip importing torch to ask
    checkpoint_error = _loaded_type("videor1.models.load", "CheckpointError")
    safetensor_error = _loaded_type("safetensors", "SafetensorError")

    if isinstance(exc, ValidationError):
        return validation_message(exc, whole="value")
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text (byte {exc.start}): {exc.reason}"
    if isinstance(exc, OSError):
        if exc.filename is not None and exc.strerror:
            return f"{exc.filename}: {exc.strerror}"
        return str(exc) or type(exc).__name__
    if isinstance(exc, (ValueError, DatasetError, MediaError, checkpoint_error, yaml.YAMLError)):
        return str(exc) or type(exc).__name__
    if isinstance(exc, safetensor_error):
        # a weights file read outside `load_model` (a LoRA adapter, say), which names no file: still not a bug
        return f"truncated or corrupt safetensors file ({exc})"
    return None


def _loaded_type(module: str, name: str) -> tuple[type, ...]:
    """The exception class `module.name` when that module is imported, else no class (matches nothing)."""
    loaded = sys.modules.get(module)
    found = getattr(loaded, name, None)
    return (found,) if isinstance(found, type) else ()


class FriendlyGroup(TyperGroup):
    """The root command group: input errors from any sub-command become one line and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; turn input errors into a one-line message unless --debug was given."""
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            message = input_error_message(exc)
            if message is None or ctx.params.get("debug"):
                raise
            _err.print(Text.assemble(("error:", "red"), " ", message), highlight=False)
            _err.print("(videor1 --debug … shows the traceback)", style="dim", highlight=False)
            raise typer.Exit(EXIT_BAD_INPUT) from exc
