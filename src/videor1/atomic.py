"""Whole-file writes that a kill or a crash can never leave half done.

Each writes a temporary file in the target's folder (same filesystem, so the rename is atomic), flushes and
fsyncs it, `os.replace`s it over the target and fsyncs the folder so the rename itself survives a crash.
Until the replace the original is untouched; on any error (a KeyboardInterrupt included) the temporary
file is removed.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from pathlib import Path


def atomic_write_text(path: str | Path, text: str) -> None:
    """Replace `path` with `text` (UTF-8) atomically and durably."""
    atomic_write_lines(path, [text])


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Replace `path` with `data` atomically and durably."""
    _atomic_write(Path(path), "xb", [data], None)


def atomic_write_lines(path: str | Path, lines: Iterable[str]) -> None:
    """Replace `path` with the strings of `lines` (UTF-8, written as given: each brings its own newline)."""
    _atomic_write(Path(path), "x", lines, "utf-8")


def fsync_dir(path: str | Path) -> None:
    """Make the entries of folder `path` (a rename into it) durable, where the OS allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # e.g. Windows cannot open a folder
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse to fsync a folder; the rename is still atomic
    finally:
        os.close(fd)


def fsync_tree(path: str | Path) -> None:
    """fsync every file under folder `path`, then its folders, so renaming `path` publishes durable contents."""
    for folder, _, files in os.walk(path, topdown=False):
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(folder)


def _atomic_write(path: Path, mode: str, chunks: Iterable[str] | Iterable[bytes], encoding: str | None) -> None:
    # mode "x" creates the file exclusively with the umask's permissions (mkstemp would make it 0600)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, mode, encoding=encoding) as f:
            f.writelines(chunks)
            f.flush()
            os.fsync(f.fileno())
        _keep_mode(path, tmp)
        os.replace(tmp, path)
    except BaseException:
        # the original is untouched; do not leave the half-written copy behind either
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _keep_mode(path: Path, tmp: Path) -> None:
    # a rewrite keeps the permissions someone gave the file
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return
    if tmp.stat().st_mode & 0o7777 != mode:
        os.chmod(tmp, mode)
