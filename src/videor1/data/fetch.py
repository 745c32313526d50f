"""`videor1 data fetch`: download a registry name from the Hugging Face hub into DIR/<name>, resumably.

The files come through huggingface_hub's `snapshot_download` in local-dir mode, pinned to the commit the revision
resolves to. It keeps per-file metadata in DIR/<name>/.cache/huggingface, so a rerun skips every file already
complete at that commit without a request. A file cut off mid-way is fetched again whole: huggingface_hub 2.x
writes each download to a temporary file of its own and never reuses it (within one run, a dropped connection is
resumed with a Range request). The temporaries a killed run leaves behind are removed when the next run starts.

HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE are huggingface_hub's settings and only it reads them (the endpoint and
offline mode when it is imported); nothing here overrides them. Offline, fetch downloads nothing: it checks what
DIR/<name> holds against the listing recorded by the last online fetch. Every fetch writes DIR/<name>/fetch.json:
the repo, the commit, the patterns, each file with its size and whether all of them arrived (`complete`).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from videor1.atomic import atomic_write_text
from videor1.data.sources import Source, UnknownSourceError, UnknownSubsetError, get_source
from videor1.progress import INTERVAL_S, Clock, PlainLines, hms

MANIFEST = "fetch.json"
MANIFEST_VERSION = 1
_HF_DIR = Path(".cache") / "huggingface"  # huggingface_hub's metadata folder inside a local_dir


class FetchInputError(ValueError):
    """Bad input: an unknown name or subset, patterns that match no file, a target folder that cannot exist."""


class FetchError(RuntimeError):
    """A fetch that failed (gated, not found, unreachable, interrupted) or, offline, files that are not there."""


@dataclass(frozen=True)
class FetchedFile:
    """One repo file in DIR/<name>: its path in the repo and its size in bytes."""

    path: str
    size: int


@dataclass(frozen=True)
class FetchResult:
    """What a fetch left in DIR/<name>: every selected file, and what this call had to download."""

    name: str
    repo_id: str
    commit: str
    local_dir: Path
    patterns: tuple[str, ...]
    files: tuple[FetchedFile, ...]
    downloaded: int  # files this call downloaded (the rest were already complete)
    downloaded_bytes: int
    removed_partials: int  # temporaries of an interrupted earlier run, deleted before downloading
    offline: bool
    manifest: Path

    @property
    def total_bytes(self) -> int:
        """Bytes of all selected files."""
        return sum(f.size for f in self.files)


def select(
    name: str, subset: str | Sequence[str] | None = None, allow_patterns: Iterable[str] | None = None
) -> tuple[Source, tuple[str, ...]]:
    """The registry entry for `name` and the patterns to fetch; FetchInputError for an unknown name or subset."""
    try:
        source = get_source(name)
        subsets = [subset] if isinstance(subset, str) else list(subset or ())
        return source, source.patterns(subsets, allow_patterns or ())
    except (UnknownSourceError, UnknownSubsetError) as exc:
        raise FetchInputError(str(exc)) from None


def fetch(
    name: str,
    to: Path,
    *,
    subset: str | Sequence[str] | None = None,
    allow_patterns: Iterable[str] | None = None,
    revision: str | None = None,
    repo_id: str | None = None,
    token: str | None = None,
    workers: int = 8,
    console: Console | None = None,
    terminal: bool | None = None,
    interval: float = INTERVAL_S,
    clock: Clock = time.monotonic,
) -> FetchResult:
    """Download `name` (or its `subset`s, plus `allow_patterns`) into `to`/NAME and verify it; see the module doc.

    `revision` and `repo_id` replace the registry's (another branch, a mirror). Progress goes to `console`
    (stderr by default): huggingface_hub's bars on a terminal, plain lines elsewhere (`terminal` overrides).
    """
    from huggingface_hub import constants

    source, patterns = select(name, subset, allow_patterns)
    console = console or Console(stderr=True)
    say = _writer(console)
    repo = repo_id or source.repo_id
    rev = revision or source.revision
    local = _local_dir(Path(to), source.name, create=not constants.is_offline_mode())
    if constants.is_offline_mode():
        return _verify_offline(source, repo, local, patterns, say)
    for note in _notes(source, Path(to), patterns):
        say(f"{source.name}: note: {note}")
    try:
        return _fetch_online(
            source,
            repo,
            local,
            patterns,
            revision=rev,
            token=token,
            workers=workers,
            say=say,
            interactive=terminal if terminal is not None else console.is_interactive,
            interval=interval,
            clock=clock,
        )
    except (FetchError, FetchInputError):
        raise
    except Exception as exc:
        message = _describe(exc, source, repo, rev, local)
        if message is None:
            raise
        raise FetchError(message) from exc


def _fetch_online(
    source: Source,
    repo: str,
    local: Path,
    patterns: tuple[str, ...],
    *,
    revision: str,
    token: str | None,
    workers: int,
    say: Callable[[str], None],
    interactive: bool,
    interval: float,
    clock: Clock,
) -> FetchResult:
    from huggingface_hub import HfApi, get_token, snapshot_download
    from huggingface_hub.hf_api import RepoFile
    from huggingface_hub.utils import filter_repo_objects

    from videor1 import __version__

    api = HfApi(token=token, library_name="videor1", library_version=__version__)
    info = api.repo_info(repo, repo_type=source.repo_type, revision=revision)
    commit = info.sha
    if info.gated and not (token or get_token()):
        # the listing of a gated repo is public, its files are not: say so before anything is attempted
        raise FetchError(f"{repo} is gated: {_gated_advice(repo, source.repo_type)}")
    tree = [
        f
        for f in api.list_repo_tree(repo, recursive=True, revision=commit, repo_type=source.repo_type)
        if isinstance(f, RepoFile)
    ]
    selected = sorted(
        (
            FetchedFile(f.path, _file_size(f))
            for f in filter_repo_objects(tree, allow_patterns=list(patterns), key=_path)
        ),
        key=_path,
    )
    if not selected:
        raise FetchInputError(f"{repo}@{commit[:7]}: no file matches {', '.join(patterns)}")
    wanted = [f for f in selected if not _complete(local, f)]
    for f in wanted:
        here = local / f.path
        if here.is_file():
            # huggingface_hub trusts a file its metadata marks as complete: one of the wrong size goes first
            say(f"{source.name}: {f.path}: {here.stat().st_size} bytes here, {f.size} in the repo; fetching it again")
            here.unlink()
    removed = _remove_partials(local)
    if removed:
        say(f"{source.name}: removed {removed} partial download(s) an interrupted run left in {local / _HF_DIR}")
    earlier = _earlier(local, repo, commit)
    _write_manifest(source, repo, local, revision, commit, patterns, selected, earlier, finished=False)
    wanted_bytes = sum(f.size for f in wanted)
    say(
        f"{source.name}: {len(selected)} files ({_size(sum(f.size for f in selected))}) of {repo}@{commit[:7]} "
        f"into {local}; {len(wanted)} to download ({_size(wanted_bytes)})"
    )
    if wanted:
        reporter = None if interactive else _Reporter(source.name, wanted_bytes, len(selected), say, interval, clock)
        snapshot_download(
            repo,
            repo_type=source.repo_type,
            revision=commit,
            allow_patterns=list(patterns),
            local_dir=local,
            token=token,
            max_workers=workers,
            library_name="videor1",
            library_version=__version__,
            tqdm_class=reporter.bar_class() if reporter else None,
        )
        if reporter:
            reporter.finish()
    wrong = [f for f in selected if not _complete(local, f)]
    if wrong:
        raise FetchError(f"{local}: after the download {_listing(wrong, local)}; run the fetch again")
    manifest = _write_manifest(source, repo, local, revision, commit, patterns, selected, earlier, finished=True)
    return FetchResult(
        name=source.name,
        repo_id=repo,
        commit=commit,
        local_dir=local,
        patterns=patterns,
        files=tuple(selected),
        downloaded=len(wanted),
        downloaded_bytes=wanted_bytes,
        removed_partials=removed,
        offline=False,
        manifest=manifest,
    )


def _verify_offline(
    source: Source,
    repo: str,
    local: Path,
    patterns: tuple[str, ...],
    say: Callable[[str], None],
) -> FetchResult:
    """Offline: the files the last online fetch listed for these patterns must all be in `local`, whole."""
    from huggingface_hub import get_cached_repo_tree
    from huggingface_hub.errors import CachedRepoTreeNotFoundError
    from huggingface_hub.utils import filter_repo_objects

    manifest_path = local / MANIFEST
    offline = "offline (HF_HUB_OFFLINE is set)"
    if not manifest_path.is_file():
        held = "holds files but no " + MANIFEST if local.is_dir() and any(local.iterdir()) else "does not exist"
        raise FetchError(
            f"{offline}: nothing fetched for {source.name} ({repo}): {local} {held}; fetch it online first"
        )
    manifest = _read_manifest(manifest_path)
    if manifest.get("repo_id") != repo:
        raise FetchError(f"{offline}: {manifest_path} records {manifest.get('repo_id')!r}, not {repo}")
    commit = str(manifest.get("commit", ""))
    try:
        # huggingface_hub's own record of the whole repo at that commit, written by the online fetch
        listing = [
            FetchedFile(f.path, f.size)
            for f in get_cached_repo_tree(repo, repo_type=source.repo_type, revision=commit, local_dir=local)
        ]
    except (CachedRepoTreeNotFoundError, ValueError):
        listing = [FetchedFile(str(f["path"]), int(f["size"])) for f in manifest.get("files", [])]
    selected = sorted(filter_repo_objects(listing, allow_patterns=list(patterns), key=_path), key=_path)
    if not selected:
        raise FetchError(
            f"{offline}: the last fetch of {repo}@{commit[:7]} listed no file matching {', '.join(patterns)}"
        )
    missing = [f for f in selected if not _complete(local, f)]
    if missing:
        raise FetchError(
            f"{offline}: {local} lacks {len(missing)} of {len(selected)} files of {repo}@{commit[:7]}: "
            f"{_listing(missing, local)}"
        )
    say(f"{source.name}: offline; all {len(selected)} files of {repo}@{commit[:7]} are in {local}")
    return FetchResult(
        name=source.name,
        repo_id=repo,
        commit=commit,
        local_dir=local,
        patterns=patterns,
        files=tuple(selected),
        downloaded=0,
        downloaded_bytes=0,
        removed_partials=0,
        offline=True,
        manifest=manifest_path,
    )


def _describe(exc: BaseException, source: Source, repo: str, revision: str, local: Path) -> str | None:
    """One line for an error of huggingface_hub or the network; None for anything else (a bug keeps its trace)."""
    import httpx2
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    endpoint = constants.ENDPOINT

    def unreachable(reason: str) -> str:
        return (
            f"cannot reach the hub at {endpoint} ({reason}); check the network or HF_ENDPOINT, or set "
            f"HF_HUB_OFFLINE=1 to check what {local} already holds"
        )

    if isinstance(exc, GatedRepoError):
        return f"{repo} is gated and the token has no access: {_gated_advice(repo, source.repo_type)}"
    if isinstance(exc, RevisionNotFoundError):
        return f"{repo}: no such revision {revision!r}"
    if isinstance(exc, RepositoryNotFoundError):
        return (
            f"{repo}: no such {source.repo_type} repo at {endpoint}, or it is private and the token has no "
            f"access (HF_TOKEN, --token)"
        )
    if isinstance(exc, OfflineModeIsEnabled):
        return f"{repo}: offline mode was switched on during the fetch ({_first_line(exc)})"
    if isinstance(exc, httpx2.TransportError):
        return unreachable(f"{type(exc).__name__}: {_first_line(exc)}")
    if isinstance(exc, LocalEntryNotFoundError):
        cause = exc.__cause__ or exc.__context__
        reason = f"{type(cause).__name__}: {_first_line(cause)}" if cause else _first_line(exc)
        return unreachable(reason)
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else "?"
        if status == 401:
            return f"{repo}: 401 unauthorized: {_gated_advice(repo, source.repo_type)}"
        return f"{repo}: the hub answered {status}: {_first_line(exc)}; run the fetch again to resume"
    if isinstance(exc, OSError):
        return f"{repo}: download into {local} failed: {_first_line(exc)}; run the fetch again to resume"
    return None


def _gated_advice(repo: str, repo_type: str) -> str:
    from huggingface_hub import constants

    folder = {"dataset": "datasets/", "space": "spaces/"}.get(repo_type, "")
    return f"set HF_TOKEN (or --token) and accept the terms at {constants.ENDPOINT}/{folder}{repo}"


def _notes(source: Source, to: Path, patterns: tuple[str, ...]) -> list[str]:
    """Hints worth a line before a download: another name of the same repo already fetched into `to`."""
    from videor1.data.sources import SOURCES

    notes = []
    for other in SOURCES.values():
        if other.name != source.name and other.repo_id == source.repo_id and (to / other.name / MANIFEST).is_file():
            if set(patterns) & set(other.allow_patterns):
                notes.append(f"{to / other.name} was fetched from {source.repo_id} too; " + " ".join(source.notes))
    return notes


def _local_dir(to: Path, name: str, *, create: bool) -> Path:
    """`to`/NAME (created when `create`); FetchInputError when `to` or the folder is a file."""
    local = to / name
    for path in (to, local):
        if path.exists() and not path.is_dir():
            raise FetchInputError(f"{path}: not a folder")
    if create:
        local.mkdir(parents=True, exist_ok=True)
    return local


def _complete(local: Path, f: FetchedFile) -> bool:
    here = local / f.path
    return here.is_file() and here.stat().st_size == f.size


def _listing(files: Sequence[FetchedFile], local: Path, shown: int = 3) -> str:
    """ "a.zip (missing), b.zip (10 of 20 bytes) and 4 more"."""
    parts = []
    for f in files[:shown]:
        here = local / f.path
        parts.append(f"{f.path} ({here.stat().st_size} of {f.size} bytes)" if here.is_file() else f"{f.path} (missing)")
    more = f" and {len(files) - shown} more" if len(files) > shown else ""
    return ", ".join(parts) + more


def _remove_partials(local: Path) -> int:
    """Delete the `*.incomplete` temporaries of downloads no process holds; how many were deleted.

    huggingface_hub locks `<file>.lock` beside them while it downloads; a folder whose locks are all free has no
    download running, so its temporaries are leftovers of a killed run that no later run will reuse.
    """
    from filelock import FileLock, Timeout

    removed = 0
    root = local / _HF_DIR / "download"
    if not root.is_dir():
        return 0
    for folder in {p.parent for p in root.rglob("*.incomplete")}:
        locks = [FileLock(str(p)) for p in folder.glob("*.lock")]
        held = []
        try:
            for lock in locks:
                lock.acquire(timeout=0)
                held.append(lock)
        except Timeout:
            continue  # a download is running in this folder: leave its temporaries alone
        finally:
            for lock in held:
                lock.release()
        for partial in folder.glob("*.incomplete"):
            partial.unlink(missing_ok=True)
            removed += 1
    return removed


def _earlier(local: Path, repo: str, commit: str) -> tuple[dict[str, int], list[str]]:
    """Files and patterns of an earlier complete fetch of the same commit into `local`: they stay listed."""
    path = local / MANIFEST
    try:
        previous = _read_manifest(path) if path.is_file() else {}
    except FetchError:
        return {}, []  # an unreadable manifest is rewritten from this fetch alone
    if previous.get("repo_id") != repo or previous.get("commit") != commit or not previous.get("complete"):
        return {}, []
    return {str(f["path"]): int(f["size"]) for f in previous.get("files", [])}, list(previous.get("patterns", []))


def _write_manifest(
    source: Source,
    repo: str,
    local: Path,
    revision: str,
    commit: str,
    patterns: tuple[str, ...],
    selected: Sequence[FetchedFile],
    earlier: tuple[dict[str, int], list[str]],
    *,
    finished: bool,
) -> Path:
    """DIR/NAME/fetch.json: complete when the fetch finished and every file it lists is there, whole."""
    from huggingface_hub import __version__ as hub_version
    from huggingface_hub import constants

    from videor1 import __version__

    files = {**earlier[0], **{f.path: f.size for f in selected}}
    complete = finished and all(_complete(local, FetchedFile(p, s)) for p, s in files.items())
    manifest = {
        "version": MANIFEST_VERSION,
        "name": source.name,
        "kind": source.kind,
        "repo_id": repo,
        "repo_type": source.repo_type,
        "revision": revision,
        "commit": commit,
        "patterns": list(dict.fromkeys([*earlier[1], *patterns])),
        "complete": complete,
        "files": [{"path": p, "size": s} for p, s in sorted(files.items())],
        "bytes": sum(files.values()),
        "fetched_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "endpoint": constants.ENDPOINT,
        "huggingface_hub": hub_version,
        "videor1": __version__,
    }
    path = local / MANIFEST
    atomic_write_text(path, json.dumps(manifest, indent=1) + "\n")
    return path


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FetchError(f"{path}: unreadable manifest ({exc}); delete it and fetch online") from exc
    if not isinstance(data, dict):
        raise FetchError(f"{path}: not a fetch manifest (expected a JSON object)")
    return data


class _Reporter:
    """Plain progress lines for a download off a terminal, fed by huggingface_hub's progress-bar calls.

    snapshot_download creates its bars from the class it is given: the files bar (one update per selected file,
    those already here included) and two byte bars that count the same bytes over plain HTTP (network and disk;
    with Xet the disk one is ahead), so the bytes shown are the larger of the two.
    """

    def __init__(self, label: str, total: int, files: int, say: Callable[[str], None], interval: float, clock: Clock):
        self.label, self.total, self.files_total, self.say, self.clock = label, total, files, say, clock
        self.lines = PlainLines(total, interval=interval, clock=clock)
        self.began = clock()
        self.bytes: dict[int, float] = {}
        self.files_done = 0
        self.last: tuple[int, int] | None = None  # (bytes, files) of the last line written
        self.lock = threading.Lock()

    def bar_class(self) -> type:
        """A class snapshot_download can use as its tqdm class; its bars report here."""
        reporter = self

        class PlainBar:
            def __init__(self, *args: Any, **kwargs: Any):
                self.unit = kwargs.get("unit", "it")
                self.total = kwargs.get("total")
                self.n = kwargs.get("initial") or 0
                self.disable = False

            def update(self, n: float | None = 1) -> None:
                reporter.add(self, n or 0)

            def __enter__(self) -> PlainBar:
                return self

            def __exit__(self, *exc: object) -> None:
                return None

            def close(self) -> None:
                return None

            def refresh(self, *args: Any, **kwargs: Any) -> None:
                return None

            set_description = set_description_str = set_postfix = set_postfix_str = clear = refresh

            @property
            def format_dict(self) -> dict[str, Any]:
                return {"n": self.n, "total": self.total, "rate": None}

        return PlainBar

    def add(self, bar: Any, n: float) -> None:
        """Count `n` more units on `bar` (called from the download threads) and write a line when one is due."""
        with self.lock:
            bar.n += n
            if bar.unit == "B":
                self.bytes[id(bar)] = bar.n
            else:
                self.files_done = int(bar.n)
            done = self._done()
            if self.lines.due(done):
                self._write(done)

    def finish(self) -> None:
        with self.lock:
            done = self._done()
            if self.last != (done, self.files_done):
                self._write(done)

    def _done(self) -> int:
        return int(max(self.bytes.values(), default=0))

    def _write(self, done: int) -> None:
        now = self.clock()
        elapsed = now - self.began
        pct = 100 * done // self.total if self.total else 100
        parts = [
            f"{self.label}: {_size(done)}/{_size(self.total)} ({pct}%)",
            f"{self.files_done}/{self.files_total} files",
        ]
        if elapsed > 0 and done > 0:
            parts.append(f"{_size(done / elapsed)}/s")
        parts.append(f"elapsed {hms(elapsed)}")
        if 0 < done < self.total:
            parts.append(f"ETA {hms(elapsed * (self.total - done) / done)}")
        self.lines.timing(done, "B")  # marks the line as written for the when-to-write rules
        self.last = (done, self.files_done)
        self.say(" · ".join(parts))


def _writer(console: Console) -> Callable[[str], None]:
    def say(line: str) -> None:
        console.print(line, markup=False, highlight=False, soft_wrap=True)

    return say


def _size(n: float) -> str:
    """Bytes in decimal units, as the hub shows them: "418 MB", "1.81 GB"."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" or n >= 100 else f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} TB"


def _path(f: Any) -> str:
    return f.path


def _file_size(f: Any) -> int:
    """A listed file's size: its LFS object's where it has one (the hub gives both; they agree)."""
    return f.lfs.size if getattr(f, "lfs", None) is not None else f.size


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
