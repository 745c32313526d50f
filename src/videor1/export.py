"""`videor1 export`: a plain Auto-loadable checkpoint (model + processor) from a run's checkpoint or a peft adapter.

With `--merge` the LoRA adapter (a checkpoint's adapter/ folder, or a bare peft adapter folder) is loaded
onto its base model (adapter_config.json's base_model_name_or_path, or `--base`) and merged into it. Without
it the checkpoint's own model is written without the training state. OUT is written under a hidden temporary
name and renamed once complete; an existing non-empty OUT is replaced only with `--force`, and never when it is,
holds or lies inside what the export reads (the checkpoint, or a local base model): replacing it would delete that.
"""

from __future__ import annotations

import errno
import json
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from videor1.runlog import ADAPTER_DIR, publish_checkpoint

ADAPTER_CONFIG = "adapter_config.json"

err_console = Console(stderr=True, soft_wrap=True)


def find_adapter(checkpoint: Path) -> Path | None:
    """The peft adapter folder of `checkpoint` (its adapter/, or the folder itself), or None."""
    for folder in (checkpoint / ADAPTER_DIR, checkpoint):
        if (folder / ADAPTER_CONFIG).is_file():
            return folder
    return None


def adapter_base(adapter: Path) -> str:
    """The base model an adapter was trained on, as its adapter_config.json names it."""
    base = json.loads((adapter / ADAPTER_CONFIG).read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{adapter / ADAPTER_CONFIG} names no base_model_name_or_path; give the base with --base")
    return str(base)


def export_checkpoint(
    checkpoint: str | Path, out: str | Path, *, merge: bool, base: str | None = None, dtype: str = "auto",
    force: bool = False, say: Callable[[str], None] = print,
) -> Path:
    """Write OUT: the adapter merged into its base (merge) or the checkpoint's model, with a processor."""
    from videor1.models.load import load_model, load_processor

    checkpoint, out = Path(checkpoint), Path(out)
    if not checkpoint.is_dir():
        raise FileNotFoundError(errno.ENOENT, "no such folder", str(checkpoint))
    refuse_overlap(checkpoint, out, "CHECKPOINT")
    if out.is_file():
        raise FileExistsError(errno.EEXIST, "is a file; give a folder", str(out))
    if out.is_dir() and any(out.iterdir()) and not force:
        raise FileExistsError(errno.EEXIST, "exists and is not empty; pass --force to replace it", str(out))
    adapter = find_adapter(checkpoint)
    if merge:
        if adapter is None:
            raise ValueError(f"{checkpoint}: no LoRA adapter (no {ADAPTER_DIR}/{ADAPTER_CONFIG}): nothing to merge")
        source = base or adapter_base(adapter)
        if Path(source).is_dir():  # a local base: the export reads it as it reads the checkpoint
            refuse_overlap(Path(source), out, "the base model")
        say(f"loading base model {source}")
        model = load_model(source, dtype=dtype)
        say(f"merging adapter {adapter}")
        model = merge_adapter(model, adapter)
    elif adapter == checkpoint:
        raise ValueError(f"{checkpoint} is a bare peft adapter: pass --merge to merge it into its base model")
    else:
        source = str(checkpoint)
        say(f"loading {checkpoint}")
        model = load_model(checkpoint, dtype=dtype)
    # a run's checkpoint carries the processor it trained with; a bare adapter folder has only its base's
    processor = load_processor(checkpoint if adapter != checkpoint else source)
    write_pretrained(model, processor, out)
    say(f"wrote {out}")
    return out


def refuse_overlap(source: Path, out: Path, name: str) -> None:
    """Refuse, in one line, an OUT that is `source`, holds it or lies inside it: writing OUT (with --force, deleting
    what is there first) would destroy what the export reads, or write into it."""
    source_path, out_path = source.resolve(), out.resolve()
    if out_path == source_path:
        raise ValueError(f"{out}: OUT is {name} itself; give another folder")
    if out_path in source_path.parents:
        raise ValueError(f"{out}: OUT holds {name} ({source}), which replacing OUT would delete; give a folder "
                         "outside it")
    if source_path in out_path.parents:
        raise ValueError(f"{out}: OUT lies inside {name} ({source}); give a folder outside it")


def merge_adapter(model: Any, adapter: Path) -> Any:
    """`model` with the peft adapter at `adapter` folded into its weights (a plain transformers model)."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()


def write_pretrained(model: Any, processor: Any, out: Path) -> None:
    """`save_pretrained` of both into a hidden sibling of `out`, renamed to `out` once complete."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        publish_checkpoint(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def export(
    checkpoint: Annotated[Path, typer.Argument(help="a run's checkpoint-N folder, or a peft adapter folder")],
    out: Annotated[Path, typer.Argument(help="folder to write the plain checkpoint (model + processor) to")],
    merge: Annotated[
        bool, typer.Option("--merge", help="merge the LoRA adapter (CHECKPOINT/adapter or CHECKPOINT) into its base")
    ] = False,
    base: Annotated[
        str | None, typer.Option(help="base model for --merge (default: adapter_config.json's base_model_name_or_path)")
    ] = None,
    dtype: Annotated[str, typer.Option(help="load and save in: auto (as stored), float32, bfloat16, float16")] = "auto",
    force: Annotated[bool, typer.Option("--force", help="replace OUT when it exists and is not empty")] = False,
) -> None:
    """Write a plain checkpoint loadable by AutoModelForImageTextToText, e.g. a LoRA run's adapter merged."""
    export_checkpoint(
        checkpoint, out, merge=merge, base=base, dtype=dtype, force=force,
        say=lambda line: err_console.print(line, markup=False, highlight=False),
    )


def register(app: typer.Typer) -> None:
    """Add the `export` command to the main app."""
    app.command("export")(export)
