"""Safe, resumable extraction of the zip and tar archives that benchmark and training releases ship media in.

Every archive is unpacked into its own folder (as Video-R1's `src/unzip.py` and lmms-eval's `api/task.py`
do), one member at a time: each file is written to a hidden temporary name in its folder and renamed into
place when complete, so a killed run never leaves a half-written file under its real name. An archive that
finished is recorded in `<root>/.prepare/<archive>.done` (its size, mtime and member list); a rerun skips it,
and for an interrupted one skips the members already present with the right size.

Refused, with one line naming the archive and the member: absolute paths and drive letters, `..`
components, paths that resolve outside the archive's folder (through a symlink already there), symlinks and
hard links (tar) or zip entries whose mode bits say symlink, devices and FIFOs, encrypted zip entries,
members that would overwrite the archive being read or the `.prepare/` records,
more members or more unpacked bytes than `Limits` allow (declared sizes are checked before anything is
written, actual bytes while writing, so a zip whose headers lie stops at its declared size), and members
compressed beyond `Limits.max_ratio` (zip bombs; a tar stream is checked as a whole while it is written).

Split archives: `name.zip.001`, `name.zip.002`… (and `.partaa`/`.part_aa`) are the byte stream of one
archive cut in pieces and are read as one. Numbered archives that are each complete (Video-MME's
`videos_chunked_01.zip`…, LLaVA-Video-178K's `…_videos_1.tar.gz`) are separate archives. PKWARE spanned
zips (`.z01`…) are refused: join them with `zip -s 0` first.
"""

from __future__ import annotations

import io
import json
import os
import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO
from urllib.parse import quote

from videor1.atomic import atomic_write_text
from videor1.data.dataset import DatasetError, open_regular_file

STATE_DIR = ".prepare"
PARTIAL_SUFFIX = ".vr1-partial"
_CHUNK = 1 << 20
# the ratio guard looks only at zip members this large: a small, very compressible text file is no bomb
_RATIO_MIN_BYTES = 1 << 20
# and at a tar stream once it has unpacked this much: gzip buffers make small streams' ratios noisy
TAR_RATIO_FLOOR = 64 << 20
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
_SPLIT = re.compile(r"^(?P<base>.+\.(?:zip|tar|tar\.gz|tgz|tar\.bz2|tar\.xz))\.(?:part_?)?(?P<part>\d{2,4}|[a-z]{2})$")
_SPANNED = re.compile(r"\.z\d{2}$", re.IGNORECASE)

Progress = Callable[[int, int], None]


class ArchiveError(Exception):
    """An archive refused or unreadable; the message is one line naming the archive and the member."""


@dataclass(frozen=True)
class Limits:
    """Bounds on what one archive may unpack."""

    # The largest real archives are tens of GB (Video-R1-data's folders, 310 GB in all; Video-MME's ~5 GB
    # chunks): 1 TiB per archive leaves room and still stops a bomb long before a disk fills.
    max_unpacked_bytes: int = 1 << 40
    # Video-R1-data's image folders hold hundreds of thousands of files per zip
    max_members: int = 2_000_000
    # Video and JPEG members compress ~1:1, text ~1:10; zeros deflate ~1:1000. 0 turns the guard off.
    max_ratio: float = 100.0


@dataclass(frozen=True)
class Archive:
    """One logical archive: a single file, or the parts of a split one in order."""

    name: str
    """Path relative to the root, as recorded in the marker (`video/star.zip`, `big.zip` for big.zip.001…)."""
    parts: tuple[Path, ...]
    kind: str  # "zip" or "tar"

    @property
    def folder(self) -> Path:
        """Where it unpacks: the folder it lies in."""
        return self.parts[0].parent


@dataclass
class Extracted:
    """What one `extract` call did."""

    archive: str
    skipped: bool = False
    """Complete from an earlier run (its marker matches), nothing read."""
    members: int = 0
    written: int = 0
    present: int = 0
    """Members already on disk with the right size (an interrupted run's work)."""
    bytes: int = 0
    files: list[tuple[str, int]] = field(default_factory=list)


def _shown(name: str) -> str:
    return name if name.isprintable() else repr(name)


def _kind(name: str) -> str | None:
    lower = name.lower()
    if lower.endswith(".zip"):
        return "zip"
    return "tar" if lower.endswith(_TAR_SUFFIXES) else None


def find_archives(root: Path) -> list[Archive]:
    """Every archive under `root` (hidden folders and files unpacked from recorded archives left out), sorted."""
    unpacked = set()
    for marker in _markers(root):
        unpacked.update(name for name, _ in marker.get("files", []))
    single: list[Path] = []
    split: dict[str, list[tuple[str, Path]]] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for file in files:
            path = Path(folder) / file
            rel = path.relative_to(root).as_posix()
            if file.startswith(".") or rel in unpacked:
                continue
            if _SPANNED.search(file):
                raise ArchiveError(f"{path}: a spanned zip (.z01 …) is not supported; join it with `zip -s 0` first")
            if _kind(file):
                single.append(path)
            elif match := _SPLIT.match(file):
                split.setdefault(str(Path(folder) / match["base"]), []).append((match["part"], path))
    archives = [Archive(p.relative_to(root).as_posix(), (p,), _kind(p.name) or "") for p in single]
    for base, parts in split.items():
        ordered = tuple(p for _, p in sorted(parts, key=lambda kv: (len(kv[0]), kv[0])))
        archives.append(Archive(Path(base).relative_to(root).as_posix(), ordered, _kind(base) or ""))
    return sorted(archives, key=lambda a: a.name)


def clean_partials(root: Path) -> int:
    """Remove the temporary files an interrupted extraction left under `root`; return how many."""
    removed = 0
    for folder, _, files in os.walk(root):
        for file in files:
            if file.endswith(PARTIAL_SUFFIX):
                os.unlink(os.path.join(folder, file))
                removed += 1
    return removed


def _marker_path(root: Path, archive: Archive) -> Path:
    return root / STATE_DIR / (quote(archive.name, safe="") + ".done")  # one marker per archive, reversibly named


def _markers(root: Path) -> Iterator[dict]:
    state = root / STATE_DIR
    if state.is_dir():
        for path in sorted(state.glob("*.done")):
            try:
                yield json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # a damaged marker only costs a re-extraction, which skips present files


def _identity(archive: Archive) -> dict:
    stats = [p.stat() for p in archive.parts]
    return {"size": sum(s.st_size for s in stats), "mtime_ns": max(s.st_mtime_ns for s in stats)}


def is_complete(root: Path, archive: Archive) -> bool:
    """Whether the archive's marker records this very archive (same size and mtime) as fully unpacked."""
    try:
        marker = json.loads(_marker_path(root, archive).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return {k: marker.get(k) for k in ("size", "mtime_ns")} == _identity(archive)


class _Parts(io.RawIOBase):
    """The parts of a split archive read as one seekable file (zip needs its central directory at the end)."""

    def __init__(self, paths: tuple[Path, ...]):
        self._files = [open_regular_file(p) for p in paths]
        self._sizes = [os.fstat(f.fileno()).st_size for f in self._files]
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: sum(self._sizes)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer) -> int:  # type: ignore[override]
        start = 0
        for file, size in zip(self._files, self._sizes, strict=True):
            if self._pos < start + size:
                file.seek(self._pos - start)
                count = file.readinto(memoryview(buffer)[: start + size - self._pos])
                self._pos += count
                return count
            start += size
        return 0

    def close(self) -> None:
        for file in self._files:
            file.close()
        super().close()


def _open(archive: Archive) -> IO[bytes]:
    try:
        if len(archive.parts) == 1:
            return open_regular_file(archive.parts[0])
        return io.BufferedReader(_Parts(archive.parts), _CHUNK)
    except (DatasetError, OSError) as exc:
        raise ArchiveError(f"{archive.parts[0]}: cannot read: {exc}") from exc


class _Extractor:
    """The checks and the writing shared by zip and tar members."""

    def __init__(self, root: Path, archive: Archive, limits: Limits):
        self.archive, self.limits = archive, limits
        self.dest = archive.folder
        self.real_dest = os.path.realpath(self.dest)
        # never to be written over: the archive being read, and the markers that say what is complete
        self.reserved = {os.path.realpath(p) for p in archive.parts}
        self.state = os.path.realpath(root / STATE_DIR)
        self.done = Extracted(archive.name)
        self.declared = 0

    def error(self, member: str, reason: str) -> ArchiveError:
        return ArchiveError(f"{self.archive.parts[0]}: {_shown(member)}: {reason}")

    def target(self, name: str) -> Path:
        """The safe path of a member inside the archive's folder; ArchiveError when it is not safe."""
        if not name or "\x00" in name:
            raise self.error(name, "empty name or NUL byte")
        posix = name.replace("\\", "/")  # zips written on Windows may use backslashes
        if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
            raise self.error(name, "absolute path")
        parts = [p for p in PurePosixPath(posix).parts if p != "."]
        if ".." in parts:
            raise self.error(name, "path with a '..' component")
        if not parts:
            raise self.error(name, "names the archive's folder itself")
        path = self.dest.joinpath(*parts)
        # a folder already there may be a symlink: what the member's folder really is must stay inside
        existing = path.parent
        while not existing.exists() and existing != self.dest:
            existing = existing.parent
        real = os.path.realpath(existing)
        if real != self.real_dest and not real.startswith(self.real_dest + os.sep):
            raise self.error(name, f"resolves outside {self.dest} (through {existing})")
        if path.is_symlink():
            raise self.error(name, f"would replace the symlink {path}")
        real = os.path.realpath(path)
        if real in self.reserved or real == self.state or real.startswith(self.state + os.sep):
            raise self.error(name, "would overwrite the archive itself or prepare's records")
        return path

    def count(self, name: str, size: int) -> None:
        self.done.members += 1
        if self.done.members > self.limits.max_members:
            raise self.error(name, f"more than {self.limits.max_members} members (--max-members)")
        self.declared += size
        if self.declared > self.limits.max_unpacked_bytes:
            raise self.error(name, f"unpacks past {self.limits.max_unpacked_bytes} bytes (--max-unpacked-bytes)")

    def write(
        self,
        name: str,
        path: Path,
        size: int,
        source: Callable[[], IO[bytes]],
        watch: Callable[[int], None] | None = None,
    ) -> None:
        """Write a member of `size` declared bytes to `path` via a temporary name; skip it when already there.

        `watch(bytes written so far)` is called before each chunk is written; what it raises stops the member.
        """
        rel = path.relative_to(self.dest).as_posix()
        self.done.files.append((rel, size))
        try:
            present = path.lstat()
        except FileNotFoundError:
            present = None
        if present is not None and stat.S_ISREG(present.st_mode) and present.st_size == size:
            self.done.present += 1
            return
        tmp = path.with_name(f".{path.name}{PARTIAL_SUFFIX}")
        written = 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o666)
            with os.fdopen(fd, "wb") as out, source() as data:
                while chunk := data.read(_CHUNK):
                    written += len(chunk)
                    if written > size:
                        raise self.error(name, f"holds more than the {size} bytes its header declares")
                    if watch is not None:
                        watch(written)
                    out.write(chunk)
                # durable before it gets its real name: a crash then leaves a temporary, never a short file
                out.flush()
                os.fsync(out.fileno())
            if written != size:
                raise self.error(name, f"holds {written} bytes, its header declares {size}")
            os.replace(tmp, path)
        except ArchiveError:
            tmp.unlink(missing_ok=True)
            raise
        except (zipfile.BadZipFile, zlib.error) as exc:
            tmp.unlink(missing_ok=True)
            reason = f"data does not match its header (corrupt, or a bomb lying about its size): {exc}"
            raise self.error(name, reason) from exc
        except (tarfile.TarError, EOFError, OSError) as exc:
            tmp.unlink(missing_ok=True)
            raise self.error(name, f"cannot unpack: {exc}") from exc
        except BaseException:
            tmp.unlink(missing_ok=True)  # a kill or an interrupt: nothing half-written stays behind
            raise
        self.done.written += 1
        self.done.bytes += written

    def mkdir(self, name: str, path: Path) -> None:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self.error(name, f"cannot create the folder: {exc}") from exc


def _zip_kind(info: zipfile.ZipInfo) -> str | None:
    """Why a zip entry is not a plain file or folder, from the Unix mode bits some zips carry; else None."""
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if kind in (0, stat.S_IFREG, stat.S_IFDIR):  # 0: no type bits (DOS-made zips, Python's writestr)
        return None
    return "a symlink" if kind == stat.S_IFLNK else "a special file (device, FIFO or socket)"


def _extract_zip(job: _Extractor, file: IO[bytes], progress: Progress | None) -> None:
    try:
        with zipfile.ZipFile(file) as zf:
            infos = zf.infolist()
            targets = []
            # every member is checked before the first byte is written: a hostile zip writes nothing
            for info in infos:
                path = job.target(info.filename)
                if (kind := _zip_kind(info)) is not None:
                    raise job.error(info.filename, f"{kind}; only files and folders are unpacked")
                if info.flag_bits & 0x1:
                    raise job.error(info.filename, "encrypted")
                job.count(info.filename, info.file_size)
                ratio = job.limits.max_ratio
                if ratio and info.file_size > _RATIO_MIN_BYTES and info.file_size > ratio * max(info.compress_size, 1):
                    raise job.error(
                        info.filename,
                        f"compressed {info.file_size // max(info.compress_size, 1)}:1, more than "
                        f"{ratio:g}:1 (a zip bomb?)",
                    )
                targets.append(path)
            total = sum(i.compress_size for i in infos) or 1
            done = 0
            for info, path in zip(infos, targets, strict=True):
                if info.is_dir():
                    job.mkdir(info.filename, path)
                else:
                    job.write(info.filename, path, info.file_size, lambda info=info: zf.open(info))
                done += info.compress_size
                if progress is not None:
                    progress(done, total)
    except zipfile.BadZipFile as exc:
        raise ArchiveError(f"{job.archive.parts[0]}: not a readable zip archive: {exc}") from exc


def _tar_kind(member: tarfile.TarInfo) -> str | None:
    if member.isreg() or member.isdir():
        return None
    if member.issym():
        return f"a symlink (to {_shown(member.linkname)})"
    if member.islnk():
        return f"a hard link (to {_shown(member.linkname)})"
    return "a special file (device, FIFO or socket)"


def _ratio_watch(job: _Extractor, member: tarfile.TarInfo, file: IO[bytes]) -> Callable[[int], None] | None:
    """A check, while a tar member is written, that the stream has not expanded past `max_ratio` to one.

    A tar member has no compressed size of its own: what counts is the stream's bytes unpacked so far
    against the compressed bytes read so far, checked as the data comes (a header read before its data
    would make any large first member look like a bomb).
    """
    ratio = job.limits.max_ratio
    if not ratio:
        return None
    before = job.declared - member.size

    def watch(written: int) -> None:
        if before + written > max(ratio * file.tell(), TAR_RATIO_FLOOR):
            raise job.error(member.name, f"the archive expands more than {ratio:g}:1 (a bomb?)")

    return watch


def _extract_tar(job: _Extractor, file: IO[bytes], progress: Progress | None) -> None:
    total = _identity(job.archive)["size"] or 1
    try:
        # streaming mode reads each compressed byte once; members are checked as they come
        with tarfile.open(fileobj=file, mode="r|*") as tf:
            for member in tf:
                path = job.target(member.name)
                if (kind := _tar_kind(member)) is not None:
                    raise job.error(member.name, f"{kind}; only files and folders are unpacked")
                job.count(member.name, member.size if member.isreg() else 0)
                if member.isdir():
                    job.mkdir(member.name, path)
                else:
                    source = lambda member=member: tf.extractfile(member)  # noqa: E731
                    job.write(member.name, path, member.size, source, watch=_ratio_watch(job, member, file))
                if progress is not None:
                    progress(min(file.tell(), total), total)
    except (tarfile.TarError, zlib.error, EOFError, OSError) as exc:
        raise ArchiveError(f"{job.archive.parts[0]}: not a readable tar archive: {exc}") from exc


def extract(
    root: Path, archive: Archive, *, limits: Limits | None = None, progress: Progress | None = None
) -> Extracted:
    """Unpack `archive` into its folder under the rules above; skip it when its marker says it is complete.

    `progress(done, total)` is called after each member with the compressed bytes read so far; an exception it
    raises stops the extraction cleanly (the next call resumes).
    """
    if is_complete(root, archive):
        return Extracted(archive.name, skipped=True)
    job = _Extractor(root, archive, limits or Limits())
    with _open(archive) as file:
        (_extract_zip if archive.kind == "zip" else _extract_tar)(job, file, progress)
    prefix = PurePosixPath(archive.name).parent
    marker = {
        "archive": archive.name,
        "parts": [p.name for p in archive.parts],
        **_identity(archive),
        "members": job.done.members,
        "bytes": job.declared,
        "files": [[(prefix / name).as_posix(), size] for name, size in job.done.files],
    }
    _marker_path(root, archive).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(_marker_path(root, archive), json.dumps(marker))
    return job.done
