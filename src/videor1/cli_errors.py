"""Bad input ends a command with one line naming the file or key and exit code 2, never a Python traceback.

Exit codes of every command: 0 done; 1 the command ran and found problems (`data validate`) or stopped on
its data (a training run past its failure budget); 2 bad input: arguments, config, unreadable or empty
files, a model path that does not exist. `videor1 --debug …` shows the traceback instead. Exceptions that
are not about input (bugs) keep their traceback: hiding them would only make them harder to report.
"""

from __future__ import annotations

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

    if isinstance(exc, ValidationError):
        return validation_message(exc, whole="value")
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text (byte {exc.start}): {exc.reason}"
    if isinstance(exc, OSError):
        if exc.filename is not None and exc.strerror:
            return f"{exc.filename}: {exc.strerror}"
        return str(exc) or type(exc).__name__
    if isinstance(exc, (ValueError, DatasetError, MediaError, yaml.YAMLError)):
        return str(exc) or type(exc).__name__
    return None


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
