"""OpenAI chat messages -> our chat-template messages and decoded media.

Accepted content parts: `text`, `image_url` and `video_url` (`{"url": ...}` or the URL as a string), where
a URL is a base64 `data:` URL or a local file (`file://` URL, absolute path, or a path relative to the
allowed directory). Local files are served only from under `--allowed-media-dir`, checked after resolving
symlinks, because a client is not trusted to name files on the server. The check is not trusted to hold
until the decode: the file is opened by walking down from the allowed directory one name at a time without
following links (`open_under`), and that handle is what is decoded, so a folder swapped for a link to
elsewhere between the check and the decode is refused, never followed. Remote http(s) URLs are refused:
the server makes no outbound requests.

Media is decoded with the server's `MediaConfig` through the same `load_video` / `load_image` as training,
so frames, budgets and the sampled fps (hence temporal positions) match what the model was trained on. Those
open only allowed formats, recognised by content (never by a data URL's MIME type or a file's name): videos
in mp4/mov, webm/mkv, avi or mpeg-ts, images in PNG, JPEG, GIF, WebP, BMP or TIFF; an HLS playlist or an
ffconcat script, which would make FFmpeg read other files, is refused like any other unknown bytes. A file
whose header size is over `max_decode_pixels` is refused with a 413 before it is decoded; one that needs more
decoding than the server's `DecodeLimits` allow (packets, seconds) is stopped and refused with a 413, and
one whose client has left (`cancelled`) is stopped and answered 499, which only logs see.

Errors name only what the client sent (cut to `_SHOWN_CHARS`), never a path on the server.
"""

from __future__ import annotations

import base64
import binascii
import errno
import os
import stat
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, Literal
from urllib.parse import unquote, urlparse

from videor1.config import MediaConfig
from videor1.data.media import (
    FORMAT_SUFFIXES,
    DecodeBudgetExceeded,
    DecodeCancelled,
    DecodeLimits,
    MediaError,
    MediaTooLarge,
    load_image,
    load_video,
    sniff_image,
    sniff_video,
)
from videor1.models.inputs import SampleMedia
from videor1.serve.errors import RequestError
from videor1.serve.worker import CLIENT_LEFT

MediaKind = Literal["image", "video"]
_PART_KINDS: dict[str, MediaKind] = {"image_url": "image", "video_url": "video"}
_ROLES: dict[str, str] = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
_SHOWN_CHARS = 200


def _cut(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else f"{text[:_SHOWN_CHARS]}... ({len(text)} characters)"


def _shown(value: Any) -> str:
    """A client's value for an error message: its repr, cut to _SHOWN_CHARS."""
    return _cut(repr(value))


@dataclass(frozen=True)
class MediaRef:
    """One image or video of a request: inline bytes or a checked local path."""

    kind: MediaKind
    data: bytes | None = None
    path: Path | None = None
    suffix: str = ""
    """File extension for the inline bytes, from their sniffed format ("" when none is allowed)."""
    name: str = ""
    """What the client sent, for error messages in place of any server path."""
    root: Path | None = None
    """The resolved allowed directory `path` was checked under; the decode opens `path` down from it."""

    def __post_init__(self) -> None:
        if self.path is not None and (self.root is None or not self.path.is_relative_to(self.root)):
            raise ValueError(f"a local media path needs the allowed directory it was checked under, got {self.root}")


@dataclass
class ParsedChat:
    """Messages in the chat template's form (media as placeholders) and the media in order of appearance."""

    messages: list[dict[str, Any]]
    media: list[MediaRef]


def parse_data_url(url: str, kind: MediaKind, param: str) -> MediaRef:
    """Decode a `data:<mime>;base64,<payload>` URL."""
    header, comma, payload = url.partition(",")
    if not comma or not header.endswith(";base64"):
        raise RequestError(400, "a data URL must look like data:<mime type>;base64,<payload>", param=param)
    mime = header[len("data:") : -len(";base64")]
    top = mime.split("/", 1)[0]
    if top in ("image", "video") and top != kind:
        raise RequestError(400, f"{param} is a {kind} part but its data URL holds {mime[:_SHOWN_CHARS]}", param=param)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(400, f"{param}: invalid base64 payload ({exc})", param=param) from exc
    if not data:
        raise RequestError(400, f"{param}: empty data URL", param=param)
    # the bytes say what they are, not the MIME type: the decoders refuse what has no allowed format
    fmt = (sniff_video if kind == "video" else sniff_image)(data)
    return MediaRef(kind, data=data, suffix=FORMAT_SUFFIXES.get(fmt or "", ""), name=f"<{kind} data URL>")


def local_media_path(url: str, allowed_dir: Path | None, param: str) -> Path:
    """Resolve a file:// URL or path; only files under `allowed_dir` (symlinks resolved) are served.

    The answer holds only now: decode the file through `open_under`, which refuses it if it has moved out.
    """
    if allowed_dir is None:
        raise RequestError(
            403, f"{param}: local media paths are disabled; start the server with --allowed-media-dir", param=param
        )
    raw = unquote(urlparse(url).path) if url.startswith("file://") else url
    root = allowed_dir.resolve()
    try:
        path = (root / raw).resolve()  # an absolute `raw` replaces root; relative ones are under it
        if not path.is_relative_to(root):
            raise RequestError(403, f"{param}: {_shown(raw)} is outside the allowed media directory", param=param)
        found = path.is_file()
    except (OSError, ValueError) as exc:
        # a NUL byte, a name too long: the OS error would name the server's directory, so it is not passed on
        raise RequestError(400, f"{param}: {_shown(raw)} is not a usable file name", param=param) from exc
    if not found:
        raise RequestError(400, f"{param}: no such file {_shown(raw)} in the allowed media directory", param=param)
    return path


def parse_media_url(url: Any, kind: MediaKind, allowed_dir: Path | None, param: str) -> MediaRef:
    """A media reference from a part's URL: data URL or allowed local file."""
    if not isinstance(url, str) or not url.strip():
        raise RequestError(400, f"{param}: the url must be a non-empty string", param=param)
    try:
        scheme = urlparse(url).scheme.lower()
    except ValueError as exc:  # e.g. an unclosed "[" in the host
        raise RequestError(400, f"{param}: {_shown(url)} is not a URL or path ({exc})", param=param) from exc
    if scheme == "data":
        return parse_data_url(url, kind, param)
    if scheme in ("http", "https"):
        raise RequestError(400, f"{param}: remote URLs are not fetched; send a base64 data URL", param=param)
    if scheme not in ("", "file"):
        raise RequestError(400, f"{param}: unsupported URL scheme {_shown(scheme)}", param=param)
    path = local_media_path(url, allowed_dir, param)
    return MediaRef(kind, path=path, name=_cut(url), root=allowed_dir.resolve() if allowed_dir else None)


def _part_url(part: dict[str, Any], key: str, param: str) -> Any:
    value = part.get(key)
    if isinstance(value, dict):
        return value.get("url")
    if isinstance(value, str):
        return value
    raise RequestError(400, f"{param}: {key} must be an object with a url", param=param)


def _parse_content(
    content: Any, role: str, allowed_dir: Path | None, param: str, media: list[MediaRef]
) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise RequestError(400, f"{param}: content must be a string or a list of parts", param=param)
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        where = f"{param}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(kind, str | None):  # a list or object is no type (and cannot be looked up)
            raise RequestError(400, f"{where}: a content part's type must be a string, got {_shown(kind)}", param=where)
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise RequestError(400, f"{where}: a text part needs a string 'text'", param=where)
            parts.append({"type": "text", "text": part["text"]})
        elif kind in _PART_KINDS:
            if role != "user":
                raise RequestError(400, f"{where}: only user messages may carry images or videos", param=where)
            ref = parse_media_url(_part_url(part, kind, where), _PART_KINDS[kind], allowed_dir, where)
            media.append(ref)
            parts.append({"type": ref.kind})
        else:
            raise RequestError(
                400, f"{where}: unsupported content part type {_shown(kind)}; expected text, image_url or video_url",
                param=where,
            )
    return parts


def parse_messages(messages: Sequence[Any], *, allowed_dir: Path | None, max_media: int) -> ParsedChat:
    """Validate OpenAI chat messages; media parts become placeholders plus `MediaRef`s (nothing decoded yet)."""
    if not messages:
        raise RequestError(400, "messages must be a non-empty list", param="messages")
    parsed: list[dict[str, Any]] = []
    media: list[MediaRef] = []
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        if not isinstance(message, dict):
            raise RequestError(400, f"{param} must be an object", param=param)
        name = message.get("role")
        role = _ROLES.get(name) if isinstance(name, str) else None
        if role is None:
            raise RequestError(
                400, f"{param}.role {_shown(name)} is not supported; expected system, user or assistant",
                param=param,
            )
        parts = _parse_content(message.get("content"), role, allowed_dir, f"{param}.content", media)
        parsed.append({"role": role, "content": parts})
        if len(media) > max_media:
            raise RequestError(400, f"more than {max_media} images and videos in one request", param=param)
    return ParsedChat(parsed, media)


def open_under(root: Path, path: Path) -> BinaryIO:
    """Open `path` (resolved, under `root`) for reading by walking down from `root` without following links.

    The walk is the check and the open at once: a folder on the way that became a link after `path` was
    resolved fails with ELOOP or ENOTDIR instead of leading out of `root`, and the handle returned is the
    file that was checked, whatever the names point to afterwards. Raises OSError.
    """
    parts = path.relative_to(root).parts
    if not parts:
        raise IsADirectoryError(errno.EISDIR, "the allowed media directory itself is not a file")
    no_links = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
    fd = os.open(root, os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            parent, fd = fd, os.open(part, no_links | os.O_DIRECTORY, dir_fd=fd)  # on failure fd stays the parent
            os.close(parent)
        # O_NONBLOCK: a FIFO put in the file's place must not hold a decode thread in open()
        file_fd = os.open(parts[-1], no_links | os.O_NONBLOCK, dir_fd=fd)
    finally:
        os.close(fd)
    try:
        if not stat.S_ISREG(os.fstat(file_fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        return os.fdopen(file_fd, "rb")
    except BaseException:
        os.close(file_fd)
        raise


def _open_local(ref: MediaRef, name: str) -> BinaryIO:
    """The checked file of a local reference, opened once; a RequestError naming what the client sent if not."""
    assert ref.path is not None and ref.root is not None  # MediaRef refuses a path without its root
    try:
        return open_under(ref.root, ref.path)
    except OSError as exc:
        # ELOOP: a link now stands where a folder or the file was (EMLINK on the BSDs); ENOTDIR: a file
        # stands where a folder was. Either way the path no longer names what was checked.
        if exc.errno in (errno.ELOOP, errno.EMLINK, errno.ENOTDIR):
            raise RequestError(
                403, f"{name!r} is outside the allowed media directory (its path changed after it was checked)"
            ) from exc
        if exc.errno == errno.ENOENT:
            raise RequestError(400, f"no such file {name!r} in the allowed media directory") from exc
        # strerror only: the OS message would name the server's directory
        raise RequestError(400, f"{name!r} cannot be opened ({exc.strerror})") from exc


def _with_cancel(limits: DecodeLimits | None, cancelled: Callable[[], bool] | None) -> DecodeLimits | None:
    """`limits` with `cancelled` polled too (either callback saying True stops the decode)."""
    if cancelled is None:
        return limits
    if limits is None or limits.cancelled is None:
        return replace(limits or DecodeLimits(), cancelled=cancelled)
    first = limits.cancelled
    return replace(limits, cancelled=lambda: first() or cancelled())


def _load(
    ref: MediaRef,
    path: Path,
    media: MediaConfig,
    factor: int,
    limits: DecodeLimits | None,
    file: BinaryIO | None = None,
) -> SampleMedia:
    if ref.kind == "video":
        video = load_video(path, media.sampling(), media.video_budget(factor), limits=limits, file=file)
        return SampleMedia(video=video)
    return SampleMedia(image=load_image(path, media.image_budget(factor), limits=limits, file=file))


def decode_one(
    ref: MediaRef,
    media: MediaConfig,
    factor: int,
    *,
    cancelled: Callable[[], bool] | None = None,
    limits: DecodeLimits | None = None,
) -> SampleMedia:
    """Decode one reference under the server's budgets and `limits`; MediaError names the part, never a server path.

    A local file is opened once, down from its allowed directory (`open_under`), and that handle is decoded;
    a path that has changed since `local_media_path` checked it is a RequestError (403), not a decode.
    """
    name = ref.name or f"<{ref.kind}>"
    limits = _with_cancel(limits, cancelled)
    if ref.path is not None:
        with _open_local(ref, name) as file:
            try:
                return _load(ref, ref.path, media, factor, limits, file)
            except MediaError as exc:  # MediaTooLarge and the decode limits' errors stay what they are
                raise exc.relabel(name, exc.reason.replace(str(ref.path), name)) from exc
    # PyAV and PIL read files; the bytes live in a private temp file for the decode only, opened as what
    # they are by content (the suffix is the sniffed format's, for anyone looking at the temp directory)
    with tempfile.NamedTemporaryFile(suffix=ref.suffix) as handle:
        handle.write(ref.data or b"")
        handle.flush()
        try:
            return _load(ref, Path(handle.name), media, factor, limits)
        except MediaError as exc:
            raise exc.relabel(name, exc.reason.replace(handle.name, name)) from exc


def decode_refs(
    refs: Sequence[MediaRef],
    media: MediaConfig,
    factor: int,
    *,
    cancelled: Callable[[], bool] | None = None,
    limits: DecodeLimits | None = None,
) -> list[SampleMedia]:
    """Decode every reference; a bad file is a 400 naming the part and the reason, one over the limits a 413.

    `limits` bound each file's decode (packets, seconds); `cancelled` is polled while decoding, and once it
    says True the decode stops with a 499 (the client has gone: only logs see it).
    """
    decoded = []
    for i, ref in enumerate(refs):
        try:
            decoded.append(decode_one(ref, media, factor, cancelled=cancelled, limits=limits))
        except DecodeCancelled as exc:
            raise RequestError(CLIENT_LEFT, f"{ref.kind} {i + 1} of the request: {exc.reason}") from exc
        except MediaError as exc:
            status = 413 if isinstance(exc, MediaTooLarge | DecodeBudgetExceeded) else 400
            raise RequestError(status, f"{ref.kind} {i + 1} of the request cannot be used: {exc.reason}") from exc
    return decoded
