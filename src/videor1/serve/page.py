"""The try-it page of `videor1 serve` at `GET /`, and the two small API routes it needs.

`GET /` and its script and style sheet are static files shipped in `videor1/serve/static/` (no build step,
nothing fetched from elsewhere) and are public: they embed no secret, and the page asks for the API key
itself when `GET /v1/videor1/info` answers 401. The `/v1/videor1/*` routes sit behind the same API-key
guard as the rest of `/v1/`:

- `GET /v1/videor1/info`: the served model name, the default sampling settings and limits, the media
  settings, whether local paths are allowed (never the directory itself) and Video-R1's prompt templates, so
  the page builds the same prompts as training without a copy of them.
- `POST /v1/videor1/frames`: one `image_url` / `video_url` content part, decoded exactly as a chat request's
  media is (same parsing, same `MediaConfig`, same grid factor), answered with the sampled frames as small
  JPEG data URLs and their timestamps in seconds: what the model will see.
"""

from __future__ import annotations

import base64
import io
from importlib.resources import files
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI
from fastapi.responses import Response
from PIL import Image

from videor1.data.prompts import QUESTION_TEMPLATE, TYPE_TEMPLATES
from videor1.models.inputs import SampleMedia
from videor1.serve.errors import RequestError
from videor1.serve.messages import _PART_KINDS, _part_url, decode_refs, parse_media_url

THUMBNAIL_PX = 192
"""Longest side of a frame thumbnail: enough to recognise the frame, small enough for 16+ frames per answer."""
JPEG_QUALITY = 80

_STATIC: dict[str, str] = {
    "index.html": "text/html; charset=utf-8",
    "page.js": "text/javascript; charset=utf-8",
    "page.css": "text/css; charset=utf-8",
}
# the page loads only its own files and talks only to this server; data:/blob: are the thumbnails and uploads
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
    "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def static_file(name: str) -> bytes:
    """The bytes of one of the page's files shipped in `videor1/serve/static/`."""
    return (files("videor1.serve") / "static" / name).read_bytes()


def jpeg_data_url(image: Image.Image, max_side: int = THUMBNAIL_PX) -> str:
    """A thumbnail of `image` (longest side at most `max_side`) as a base64 JPEG data URL."""
    thumb = image.convert("RGB")
    thumb.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def frames_body(media: SampleMedia) -> dict[str, Any]:
    """The frames answer for one decoded image or video: thumbnails, timestamps and the size the model sees."""
    if media.video is not None:
        video = media.video
        count, _, height, width = video.frames.shape
        arrays = video.frames.permute(0, 2, 3, 1).contiguous().numpy()
        frames = [
            {"index": int(index), "timestamp": round(float(t), 3), "image": jpeg_data_url(Image.fromarray(array))}
            for array, index, t in zip(arrays, video.frame_indices, video.timestamps, strict=True)
        ]
        return {
            "kind": "video", "width": int(width), "height": int(height), "count": int(count), "frames": frames,
            "sample_fps": float(video.sample_fps), "video_fps": float(video.video_fps),
            "duration": float(video.duration), "total_frames": int(video.total_frames),
        }
    assert media.image is not None
    width, height = media.image.size
    return {
        "kind": "image", "width": width, "height": height, "count": 1,
        "frames": [{"index": 0, "timestamp": None, "image": jpeg_data_url(media.image)}],
    }


def decode_part(state: Any, part: Any) -> dict[str, Any]:
    """Decode one image_url / video_url part with the server's media settings (runs in a worker thread)."""
    kind = part.get("type") if isinstance(part, dict) else None
    if kind not in _PART_KINDS:
        raise RequestError(400, "send one content part: {'type': 'video_url' or 'image_url', ...: {'url': ...}}",
                           param="type")
    cfg = state.cfg
    allowed = Path(cfg.allowed_media_dir) if cfg.allowed_media_dir else None
    ref = parse_media_url(_part_url(part, kind, kind), _PART_KINDS[kind], allowed, kind)
    (media,) = decode_refs([ref], cfg.media, state.factor, limits=cfg.decode_limits())
    return frames_body(media)


def info_body(state: Any) -> dict[str, Any]:
    """What the page shows and needs: model, default sampling, limits, media settings and prompt templates."""
    cfg = state.cfg
    return {
        "model": state.name,
        "auth_required": cfg.api_key is not None,
        "sampling": {
            "temperature": cfg.default_temperature, "top_p": cfg.default_top_p,
            "max_tokens": cfg.default_max_tokens, "max_tokens_limit": cfg.max_tokens_limit,
        },
        "media": cfg.media.model_dump(mode="json"),
        "max_body_bytes": cfg.max_body_bytes,
        "local_media": cfg.allowed_media_dir is not None,  # the directory itself is the server's business
        "prompts": {"question_template": QUESTION_TEMPLATE, "type_templates": TYPE_TEMPLATES},
    }


def register_page(app: FastAPI, state: Any) -> None:
    """Add `GET /`, the page's script and style sheet, and `/v1/videor1/info` and `/v1/videor1/frames`."""
    page = {name: static_file(name) for name in _STATIC}  # read once: a missing file fails at start-up

    def serve(name: str) -> Response:
        return Response(page[name], media_type=_STATIC[name], headers=_HEADERS)

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return serve("index.html")

    @app.get("/static/page.js", include_in_schema=False)
    async def script() -> Response:
        return serve("page.js")

    @app.get("/static/page.css", include_in_schema=False)
    async def style() -> Response:
        return serve("page.css")

    @app.get("/v1/videor1/info")
    async def info() -> dict[str, Any]:
        return info_body(state)

    @app.post("/v1/videor1/frames")
    async def frames(part: dict[str, Any]) -> dict[str, Any]:
        # decoding is as costly as a chat request's, so it shares the same bounded pool
        return await anyio.to_thread.run_sync(decode_part, state, part, limiter=state.limiter)
