"""The server decodes the local file it checked, whatever the names point to after the check.

`parse_messages` checks a path (resolved, under the allowed directory) and `decode_refs` decodes it later.
Each test changes the tree in between, deterministically, as a racing client would between the two
(1 request in 325 got a file outside the directory before): it first shows that opening the checked path
by name now reaches the outside file, so the attack is live, then that the request is refused.
"""

import os
import threading

import numpy as np
import pytest
from PIL import Image

from videor1.config import MediaConfig
from videor1.data.media import load_image, load_video, write_video
from videor1.serve.errors import RequestError
from videor1.serve.messages import MediaRef, decode_refs, parse_messages

SERVER = MediaConfig(max_frames=4, nframes=4, video_min_pixels=784, video_max_pixels=3136,
                     image_min_pixels=784, image_max_pixels=3136)
INSIDE, OUTSIDE = 40, 220  # grey level of every pixel of the allowed video and of the secret one


def grey_clip(path, level: int) -> None:
    write_video(path, np.full((8, 32, 32, 3), level, np.uint8), 8)


def mean_level(path) -> float:
    """What decoding `path` by name shows: near INSIDE for the allowed video, near OUTSIDE for the secret."""
    return float(load_video(path, SERVER.sampling(), SERVER.video_budget(28)).frames.float().mean())


@pytest.fixture
def tree(tmp_path):
    """allowed/clips/a.mp4 (dark) and secret/clips/a.mp4 (bright): the same name under both roots."""
    allowed, secret = tmp_path / "allowed", tmp_path / "secret"
    for root, level in ((allowed, INSIDE), (secret, OUTSIDE)):
        (root / "clips").mkdir(parents=True)
        grey_clip(root / "clips" / "a.mp4", level)
    return allowed, secret


def checked(allowed, url="clips/a.mp4") -> list[MediaRef]:
    """The check: parse a request naming `url`, as the server does before decoding."""
    message = {"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}}]}
    return parse_messages([message], allowed_dir=allowed, max_media=1).media


def refused(refs) -> RequestError:
    with pytest.raises(RequestError) as caught:
        decode_refs(refs, SERVER, 28)
    return caught.value


def test_a_checked_file_decodes(tree):
    allowed, _ = tree
    (decoded,) = decode_refs(checked(allowed), SERVER, 28)
    assert decoded.video.frames.shape == (4, 3, 28, 28)
    assert abs(decoded.video.frames.float().mean() - INSIDE) < 3
    # decoding the opened handle gives what decoding the file by name gives (training's path)
    by_name = load_video(allowed / "clips" / "a.mp4", SERVER.sampling(), SERVER.video_budget(28))
    assert decoded.video.frames.equal(by_name.frames) and decoded.video.timestamps == by_name.timestamps
    Image.new("RGB", (40, 30), (1, 2, 3)).save(allowed / "clips" / "b.png")
    message = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "clips/b.png"}}]}
    (image,) = decode_refs(parse_messages([message], allowed_dir=allowed, max_media=1).media, SERVER, 28)
    assert np.array_equal(np.array(image.image), np.array(load_image(allowed / "clips" / "b.png",
                                                                       SERVER.image_budget(28))))
    # a link inside the directory to a file inside it is resolved at the check and served as before
    os.symlink(allowed / "clips" / "a.mp4", allowed / "alias.mp4")
    (aliased,) = decode_refs(checked(allowed, "alias.mp4"), SERVER, 28)
    assert aliased.video.frames.equal(decoded.video.frames)


def test_a_folder_swapped_for_a_link_after_the_check_is_refused(tree):
    allowed, secret = tree
    refs = checked(allowed)
    os.rename(allowed / "clips", allowed / "clips-before")
    os.symlink(secret / "clips", allowed / "clips")
    assert abs(mean_level(refs[0].path) - OUTSIDE) < 3  # by name, the checked path now reads the secret
    error = refused(refs)
    assert (error.status, error.message) == (
        403, "'clips/a.mp4' is outside the allowed media directory (its path changed after it was checked)"
    )
    assert str(allowed) not in error.message and str(secret) not in error.message


def test_the_file_swapped_for_a_link_after_the_check_is_refused(tree):
    allowed, secret = tree
    refs = checked(allowed)
    target = allowed / "clips" / "a.mp4"
    target.unlink()
    os.symlink(secret / "clips" / "a.mp4", target)
    assert abs(mean_level(refs[0].path) - OUTSIDE) < 3
    assert refused(refs).status == 403


def test_a_file_gone_or_replaced_by_a_fifo_is_a_400_not_a_hang(tree):
    allowed, _ = tree
    refs = checked(allowed)
    target = allowed / "clips" / "a.mp4"
    target.unlink()
    assert (refused(refs).status, refused(refs).message) == (
        400, "no such file 'clips/a.mp4' in the allowed media directory"
    )
    os.mkfifo(target)  # open() of a FIFO blocks until a writer comes: a decode thread held for good
    answers: list[RequestError] = []
    worker = threading.Thread(target=lambda: answers.append(refused(refs)), daemon=True)
    worker.start()
    worker.join(timeout=10)
    if worker.is_alive():
        with open(target, "wb"):  # release the stuck open so the thread ends, then fail
            pass
        pytest.fail("opening a FIFO in the file's place blocked")
    assert (answers[0].status, answers[0].message) == (
        400, "'clips/a.mp4' cannot be opened (not a regular file)"
    )


def test_a_local_reference_needs_the_directory_it_was_checked_under(tree):
    allowed, secret = tree
    with pytest.raises(ValueError, match="needs the allowed directory"):
        MediaRef("video", path=secret / "clips" / "a.mp4")
    with pytest.raises(ValueError, match="needs the allowed directory"):
        MediaRef("video", path=secret / "clips" / "a.mp4", root=allowed.resolve())
