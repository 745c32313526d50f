"""Media opening as a security boundary: formats by content from an allow-list, a pixel limit read from the
header before decoding, and the server's 4xx answers, on real files written in tmp dirs.

The attack files are real: each test first shows that FFmpeg left to choose its demuxer (what `_open` did
before) reads the target video through them, so a test cannot pass because the attack went stale.
"""

import base64
import pickle
import struct
import tempfile
import zlib

import av
import numpy as np
import pytest
from PIL import Image, ImageFile

from videor1.config import MediaConfig
from videor1.data import media
from videor1.data.frames import load_frame_folder
from videor1.data.media import MediaError, MediaTooLarge, load_image, load_video, sniff_image, sniff_video, write_video
from videor1.data.sampling import MAX_DECODE_PIXELS, FrameSampling, PixelBudget
from videor1.serve.errors import RequestError
from videor1.serve.messages import decode_refs, parse_messages

WIDTH, HEIGHT, N_FRAMES, FPS = 64, 48, 10, 10
BUDGET = PixelBudget(min_pixels=28 * 28, max_pixels=56 * 56, factor=28)
SAMPLING = FrameSampling(nframes=4)
SERVER = MediaConfig(max_frames=4, video_min_pixels=3136, video_max_pixels=3136, image_min_pixels=3136,
                     image_max_pixels=3136)
REFUSED_VIDEO = "unreadable: not an mp4/mov, webm/mkv, avi or mpeg-ts video (by its content)"


def frames(n: int = N_FRAMES) -> np.ndarray:
    return np.stack([np.full((HEIGHT, WIDTH, 3), 20 * i, np.uint8) for i in range(n)])


def write_clip(path, codec: str, pix_fmt: str = "yuv420p") -> None:
    """N_FRAMES frames in the container the suffix names, with `codec`."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, pix_fmt
        for frame in frames():
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def ffmpeg_reads(path) -> int:
    """Frames FFmpeg decodes from `path` when it chooses the demuxer itself (the unguarded open)."""
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def playlist(target) -> str:
    return f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:1.0,\n{target}\n#EXT-X-ENDLIST\n"


def ffconcat(target) -> str:
    # FFmpeg's concat demuxer refuses absolute and ".." names by default, but not a file next to the script
    return f"ffconcat version 1.0\nfile {target}\n"


def big_png(path, width: int, height: int) -> None:
    """A valid black 1-bit PNG, written row by row: a 12000 x 12000 one is about 20 KB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = bytes(1 + (width + 7) // 8)  # filter byte 0, then the packed bits
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def user_media(kind: str, url: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": f"{kind}_url", f"{kind}_url": {"url": url}}]}]


def server_error(kind: str, url: str, config: MediaConfig = SERVER, allowed_dir=None) -> RequestError:
    refs = parse_messages(user_media(kind, url), allowed_dir=allowed_dir, max_media=1).media
    with pytest.raises(RequestError) as caught:
        decode_refs(refs, config, 28)
    return caught.value


@pytest.fixture(scope="module")
def secret(tmp_path_factory):
    """A folder elsewhere on disk with a video in it (mp4, and mpeg-ts for HLS segments)."""
    folder = tmp_path_factory.mktemp("secret")
    write_video(folder / "target.mp4", frames(), FPS)
    write_clip(folder / "target.ts", "libx264")
    return folder


# ---------------------------------------------------------------------------------------------------
# Formats that read other files


@pytest.mark.parametrize(("name", "body"), [
    ("playlist.m3u8", lambda folder, target: playlist(folder / f"{target}.ts")),  # absolute path
    ("concat.mp4", lambda folder, target: ffconcat(f"{target}.mp4")),  # a .mp4 that is a script
])
def test_local_playlists_and_concat_scripts_are_refused_whatever_they_point_at(secret, name, body):
    script = secret / name
    script.write_text(body(secret, "target"))
    assert ffmpeg_reads(script) == N_FRAMES  # the attack works without the guard
    errors = []
    for target in ("target", "missing"):
        script.write_text(body(secret, target))
        with pytest.raises(MediaError) as caught:
            load_video(script, SAMPLING, BUDGET)
        errors.append(caught.value)
    assert errors[0].reason == errors[1].reason == REFUSED_VIDEO  # nothing tells whether the target exists
    assert not isinstance(errors[0], MediaTooLarge)


def test_a_mp4_named_playlist_is_refused(secret, tmp_path):
    script = tmp_path / "clip.mp4"
    script.write_text(playlist(secret / "target.ts"))
    with pytest.raises(MediaError, match="not an mp4/mov"):
        load_video(script, SAMPLING, BUDGET)


def test_inline_playlist_is_refused_with_one_answer(secret, tmp_path):
    body = playlist(secret / "target.ts").encode()
    (tmp_path / "inline.m3u").write_bytes(body)  # where the old code wrote it: suffix from the MIME type
    assert ffmpeg_reads(tmp_path / "inline.m3u") == N_FRAMES
    answers = set()
    for target in ("target", "missing"):
        for mime in ("application/vnd.apple.mpegurl", "video/mp4"):
            error = server_error("video", data_url(mime, playlist(secret / f"{target}.ts").encode()))
            answers.add((error.status, error.message))
    assert answers == {(400, f"video 1 of the request cannot be used: {REFUSED_VIDEO}")}


def test_inline_concat_script_is_refused_with_one_answer(secret, monkeypatch):
    # the temp file lands next to the target, where the concat demuxer would follow a bare name
    monkeypatch.setattr(tempfile, "tempdir", str(secret))
    (secret / "inline.mp4").write_text(ffconcat("target.mp4"))
    assert ffmpeg_reads(secret / "inline.mp4") == N_FRAMES
    answers = {
        (error.status, error.message)
        for target in ("target.mp4", "missing.mp4")
        for error in [server_error("video", data_url("video/mp4", ffconcat(target).encode()))]
    }
    assert answers == {(400, f"video 1 of the request cannot be used: {REFUSED_VIDEO}")}


def test_a_name_is_never_a_protocol(tmp_path, monkeypatch):
    # "concat:a|b" is FFmpeg's concat protocol; a file of that name is read as itself
    monkeypatch.chdir(tmp_path)
    write_video(tmp_path / "a.mp4", frames(), FPS)
    write_video(tmp_path / "b.mp4", frames(), FPS)
    write_video(tmp_path / "concat:a.mp4|b.mp4", frames(6), FPS)
    video = load_video("concat:a.mp4|b.mp4", FrameSampling(min_frames=2), BUDGET)
    assert video.total_frames == 6


# ---------------------------------------------------------------------------------------------------
# Allowed formats still load, whatever their name or MIME type


@pytest.mark.parametrize(("suffix", "codec", "demuxer"), [
    ("mp4", "libx264", "mov"), ("mov", "libx264", "mov"), ("mkv", "libx264", "matroska"),
    ("webm", "libvpx-vp9", "matroska"), ("webm", "libvpx", "matroska"), ("avi", "mpeg4", "avi"),
    ("ts", "libx264", "mpegts"),
])
def test_allowed_video_containers_load_by_content(tmp_path, suffix, codec, demuxer):
    path = tmp_path / f"clip.{suffix}"
    write_clip(path, codec)
    renamed = tmp_path / "clip.bin"  # the name plays no part
    renamed.write_bytes(path.read_bytes())
    assert sniff_video(renamed.read_bytes()[:1024]) == demuxer
    video = load_video(renamed, SAMPLING, BUDGET)
    assert video.frames.shape == (4, 3, 56, 56) and video.total_frames == N_FRAMES
    # through the server, sent under another MIME type
    refs = parse_messages(user_media("video", data_url("video/quicktime", path.read_bytes())), allowed_dir=None,
                          max_media=1).media
    assert decode_refs(refs, SERVER, 28)[0].video.frames.shape == (4, 3, 56, 56)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF"])
def test_allowed_image_formats_load_by_content(tmp_path, fmt):
    path = tmp_path / "image.bin"
    Image.new("RGB", (56, 56), (200, 30, 30)).save(path, format=fmt)
    assert sniff_image(path.read_bytes()[:1024]) == fmt
    image = load_image(path, BUDGET)
    assert image.mode == "RGB" and image.size == (56, 56)
    refs = parse_messages(user_media("image", data_url("image/jpeg", path.read_bytes())), allowed_dir=None,
                          max_media=1).media
    assert refs[0].suffix.lstrip(".") in {"png", "jpg", "gif", "webp", "bmp", "tif"}
    assert decode_refs(refs, SERVER, 28)[0].image.size == (56, 56)


@pytest.mark.parametrize("fmt", ["PPM", "TGA", "PCX", "ICO"])
def test_other_image_formats_are_refused_though_pil_reads_them(tmp_path, fmt):
    path = tmp_path / "image.png"
    Image.new("RGB", (32, 32), (1, 2, 3)).save(path, format=fmt)
    Image.open(path).load()  # PIL left to choose would decode it
    with pytest.raises(MediaError, match=r"unreadable: not a PNG, JPEG, GIF, WebP, BMP or TIFF image"):
        load_image(path, BUDGET)


def test_a_video_is_no_image_and_an_image_no_video(secret, tmp_path):
    with pytest.raises(MediaError, match="not a PNG"):
        load_image(secret / "target.mp4", BUDGET)
    Image.new("RGB", (WIDTH, HEIGHT)).save(tmp_path / "still.mp4", format="PNG")
    with pytest.raises(MediaError, match="not an mp4/mov"):
        load_video(tmp_path / "still.mp4", SAMPLING, BUDGET)
    error = server_error("image", data_url("image/png", (secret / "target.mp4").read_bytes()))
    assert error.status == 400 and "not a PNG" in error.message


# ---------------------------------------------------------------------------------------------------
# The pixel limit, from the header


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # PIL warns above 89M pixels
def test_a_huge_png_is_refused_from_its_header(tmp_path, monkeypatch):
    path = tmp_path / "huge.png"
    big_png(path, 12000, 12000)
    with Image.open(path) as image:
        image.verify()  # a valid PNG, checksums and all, that would decode to 144M pixels
    assert path.stat().st_size < 100_000

    def no_decoding(self):
        raise AssertionError("decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(MediaTooLarge) as caught:
        load_image(path, BUDGET)
    assert caught.value.limit == MAX_DECODE_PIXELS == 8192 * 8192
    assert caught.value.reason == (
        "too large: an image of 12000x12000 = 144,000,000 pixels is over the decode limit of 67,108,864 pixels "
        "(media.max_decode_pixels)"
    )
    error = server_error("image", data_url("image/png", path.read_bytes()), MediaConfig())
    assert error.status == 413 and "over the decode limit of 67,108,864 pixels" in error.message


def test_pils_own_limit_is_answered_as_ours(tmp_path, monkeypatch):
    path = tmp_path / "image.png"
    Image.new("RGB", (64, 64)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL refuses over 2,000 pixels, at open
    with pytest.raises(MediaTooLarge, match=r"over the decode limit of 1,500 pixels \(media.max_decode_pixels\)"):
        load_image(path, PixelBudget(min_pixels=784, max_pixels=3136, max_decode_pixels=1500))
    with pytest.raises(MediaTooLarge, match=r"limit of 2,000 pixels \(PIL's 2 x Image.MAX_IMAGE_PIXELS\)") as caught:
        load_image(path, PixelBudget(min_pixels=784, max_pixels=3136, max_decode_pixels=10**6))
    assert caught.value.limit == 2000


def test_a_video_over_the_limit_is_refused_before_decoding(secret, monkeypatch):
    def no_decoding(*args):
        raise AssertionError("decoded")

    monkeypatch.setattr(media._FrameReader, "frame_at", no_decoding)
    with pytest.raises(MediaTooLarge) as caught:
        load_video(secret / "target.mp4", SAMPLING, MediaConfig(max_decode_pixels=1000).video_budget(28))
    assert caught.value.limit == 1000
    assert caught.value.reason == (
        "too large: a frame of 64x48 = 3,072 pixels is over the decode limit of 1,000 pixels (media.max_decode_pixels)"
    )
    # frames x size: only a sanity check on the header (100,000 frames at the limit), shrunk here to reach it
    monkeypatch.setattr(media, "VIDEO_FRAMES_AT_LIMIT", 5)
    with pytest.raises(MediaTooLarge, match=r"10 frames of 64x48 are 30,720 pixels, over the decode limit of "
                                            r"15,360 pixels per video \(5 x media.max_decode_pixels\)"):
        load_video(secret / "target.mp4", SAMPLING, PixelBudget(784, 3136, max_decode_pixels=3072))


def test_a_video_at_the_limit_loads(secret):
    video = load_video(secret / "target.mp4", SAMPLING, PixelBudget(784, 3136, max_decode_pixels=WIDTH * HEIGHT))
    assert video.frames.shape == (4, 3, 56, 56)


def test_config_carries_the_limit_to_both_budgets():
    config = MediaConfig(max_decode_pixels=1234)
    assert config.video_budget(28).max_decode_pixels == config.image_budget(32).max_decode_pixels == 1234
    assert MediaConfig().image_budget(28).max_decode_pixels == 8192 * 8192
    with pytest.raises(ValueError, match="max_decode_pixels"):
        MediaConfig(max_decode_pixels=0)
    with pytest.raises(ValueError, match="max_decode_pixels"):
        PixelBudget(784, 3136, max_decode_pixels=0)


def test_every_sampled_frame_of_a_folder_is_checked(tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    for i in range(8):
        Image.new("RGB", (WIDTH, HEIGHT), (20 * i, 0, 0)).save(folder / f"{i:05d}.png")
    budget = PixelBudget(784, 3136, max_decode_pixels=5000)
    sampling = FrameSampling(nframes=4)  # frames 0, 2, 5, 7
    Image.new("RGB", (100, 100)).save(folder / "00001.png")  # not sampled: never opened
    assert load_frame_folder(folder, sampling, budget, fps=FPS).frame_indices == [0, 2, 5, 7]
    Image.new("RGB", (100, 100)).save(folder / "00005.png")  # sampled, and not the first
    with pytest.raises(MediaTooLarge) as caught:
        load_frame_folder(folder, sampling, budget, fps=FPS)
    assert caught.value.path == folder and caught.value.limit == 5000
    assert caught.value.reason.startswith("frame 00005.png: too large: an image of 100x100 = 10,000 pixels")


def test_server_answers_413_naming_the_limit_without_server_paths(secret, tmp_path):
    small = SERVER.model_copy(update={"max_decode_pixels": 1000})
    error = server_error("video", data_url("video/mp4", (secret / "target.mp4").read_bytes()), small)
    assert error.status == 413
    assert error.message == ("video 1 of the request cannot be used: too large: a frame of 64x48 = 3,072 pixels is "
                             "over the decode limit of 1,000 pixels (media.max_decode_pixels)")
    Image.new("RGB", (WIDTH, HEIGHT)).save(tmp_path / "still.png")
    error = server_error("image", "still.png", small, allowed_dir=tmp_path)
    assert error.status == 413 and str(tmp_path) not in error.message


def test_too_large_pickles_and_relabels(tmp_path):
    error = MediaTooLarge(tmp_path / "x.png", "too large", 7)
    copy = pickle.loads(pickle.dumps(error))
    assert isinstance(copy, MediaTooLarge) and (copy.path, copy.reason, copy.limit) == (error.path, "too large", 7)
    moved = error.relabel(tmp_path, "frame x.png: too large")
    assert isinstance(moved, MediaTooLarge) and moved.limit == 7 and str(moved) == f"{tmp_path}: frame x.png: too large"
    plain = MediaError(tmp_path, "missing file").relabel("<video>", "gone")
    assert type(plain) is MediaError and str(plain) == "<video>: gone"


# ---------------------------------------------------------------------------------------------------
# Requests that were 500s


@pytest.mark.parametrize("url", [
    "a\x00b.png", "file:///media/x%00y.png", "a" * 5000 + ".png", "sub/" * 2000 + "x.png", "http://[oops",
    "file://[::1/x.png",
])
def test_unusable_names_are_400s_that_show_only_what_was_sent(tmp_path, url):
    allowed = tmp_path / "media"
    allowed.mkdir()
    with pytest.raises(RequestError) as caught:
        parse_messages(user_media("image", url), allowed_dir=allowed, max_media=1)
    assert caught.value.status == 400
    assert str(tmp_path) not in caught.value.message and len(caught.value.message) < 400


@pytest.mark.parametrize("kind", [{"a": 1}, ["image_url"], 5])
def test_a_part_type_that_is_no_string_is_a_400(kind):
    with pytest.raises(RequestError) as caught:
        parse_messages([{"role": "user", "content": [{"type": kind, "image_url": "x"}]}], allowed_dir=None,
                       max_media=1)
    assert caught.value.status == 400 and "type must be a string" in caught.value.message


def test_local_decode_errors_name_the_file_as_sent(tmp_path):
    (tmp_path / "fake.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))  # the signature, then nothing valid
    error = server_error("image", "fake.png", allowed_dir=tmp_path)
    assert error.status == 400 and str(tmp_path) not in error.message and "fake.png" in error.message
