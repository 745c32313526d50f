"""Safe, resumable archive extraction: zip, tar, tar.gz, split zips; hostile archives refused; kills resumed."""

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from videor1.data.archives import PARTIAL_SUFFIX, ArchiveError, Limits, clean_partials, extract, find_archives


def make_zip(path: Path, members: dict[str, bytes], *, compression=zipfile.ZIP_DEFLATED) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def make_tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode) as tf:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tf.addfile(member)
            else:
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                tf.addfile(info, io.BytesIO(member[1]))
    return path


def only(root: Path):
    archives = find_archives(root)
    assert len(archives) == 1, archives
    return archives[0]


def refused(root: Path, limits: Limits | None = None) -> str:
    with pytest.raises(ArchiveError) as caught:
        extract(root, only(root), limits=limits)
    message = str(caught.value)
    assert "\n" not in message
    return message


def files_under(path: Path) -> set[str]:
    return {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}


def test_zip_tar_tgz_and_split_zip_unpack_next_to_themselves_and_are_recorded(tmp_path):
    root = tmp_path / "set"
    make_zip(root / "video" / "star.zip", {"star/Charades/a.mp4": b"a" * 1000, "star/notes/": b""})
    make_tar(root / "plain.tar", [("plain/x.bin", b"x" * 10)])
    make_tar(root / "packed.tar.gz", [("packed/y.bin", b"y" * 20)], mode="w:gz")
    whole = io.BytesIO()
    with zipfile.ZipFile(whole, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("big/f.bin", os.urandom(3000))
    data = whole.getvalue()
    for i, start in enumerate(range(0, len(data), 1200), start=1):
        (root / f"big.zip.{i:03d}").write_bytes(data[start : start + 1200])
    # Video-MME's numbered chunks are complete zips each, not parts of one
    make_zip(root / "videos_chunked_01.zip", {"data/v1.mp4": b"1"})
    make_zip(root / "videos_chunked_02.zip", {"data/v2.mp4": b"2"})

    archives = find_archives(root)
    assert [(a.name, a.kind, len(a.parts)) for a in archives] == [
        ("big.zip", "zip", 3),
        ("packed.tar.gz", "tar", 1),
        ("plain.tar", "tar", 1),
        ("video/star.zip", "zip", 1),
        ("videos_chunked_01.zip", "zip", 1),
        ("videos_chunked_02.zip", "zip", 1),
    ]
    for archive in archives:
        done = extract(root, archive)
        assert not done.skipped and done.written >= 1
    assert (root / "video/star/Charades/a.mp4").read_bytes() == b"a" * 1000
    assert (root / "video/star/notes").is_dir()
    assert (root / "plain/x.bin").read_bytes() == b"x" * 10
    assert (root / "packed/y.bin").read_bytes() == b"y" * 20
    assert (root / "big/f.bin").read_bytes() == zipfile.ZipFile(io.BytesIO(data)).read("big/f.bin")
    assert (root / "data/v1.mp4").exists() and (root / "data/v2.mp4").exists()
    marker = json.loads((root / ".prepare" / "video%2Fstar.zip.done").read_text())
    assert marker["members"] == 2 and marker["files"] == [["video/star/Charades/a.mp4", 1000]]

    # a rerun reads nothing: every archive is complete, and unpacked files are never taken for archives
    make_zip(root / "video" / "star" / "nested.zip", {"n.txt": b"n"})  # as if star.zip had held it
    marker["files"].append(["video/star/nested.zip", 0])
    (root / ".prepare" / "video%2Fstar.zip.done").write_text(json.dumps(marker))
    stamp = (root / "video/star/Charades/a.mp4").stat().st_mtime_ns
    assert [a.name for a in find_archives(root)] == [a.name for a in archives]
    assert all(extract(root, archive).skipped for archive in find_archives(root))
    assert (root / "video/star/Charades/a.mp4").stat().st_mtime_ns == stamp


def test_a_replaced_archive_is_unpacked_again(tmp_path):
    root = tmp_path / "set"
    path = make_zip(root / "a.zip", {"a/x.txt": b"old"})
    extract(root, only(root))
    make_zip(path, {"a/x.txt": b"newer"})
    os.utime(path, ns=(1, 1))
    assert not extract(root, only(root)).skipped
    assert (root / "a/x.txt").read_bytes() == b"newer"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("/etc/evil", "absolute path"),
        ("C:/evil", "absolute path"),
        ("../evil", "'..' component"),
        ("a/../../evil", "'..' component"),
        ("..\\evil", "'..' component"),
    ],
)
def test_zip_members_outside_the_folder_are_refused_before_anything_is_written(tmp_path, name, reason):
    root = tmp_path / "set"
    make_zip(root / "bad.zip", {"good.txt": b"fine", name: b"evil"})
    message = refused(root)
    assert str(root / "bad.zip") in message and reason in message
    assert files_under(tmp_path) == {"set/bad.zip"}  # not even the good member: zips are checked first


@pytest.mark.parametrize(("name", "reason"), [("/tmp/evil", "absolute path"), ("../evil", "'..' component")])
def test_tar_members_outside_the_folder_are_refused(tmp_path, name, reason):
    root = tmp_path / "set"
    make_tar(root / "bad.tar", [(name, b"evil")])
    message = refused(root)
    assert f"bad.tar: {name}: " in message and reason in message
    assert files_under(tmp_path) == {"set/bad.tar"}


def test_symlink_member_and_the_file_written_through_it_are_refused(tmp_path):
    root, outside = tmp_path / "set", tmp_path / "outside"
    outside.mkdir()
    link = tarfile.TarInfo("escape")
    link.type, link.linkname = tarfile.SYMTYPE, str(outside)
    info = tarfile.TarInfo("escape/pwned.txt")
    info.size = 5
    path = root / "bad.tar"
    root.mkdir()
    with tarfile.open(path, "w") as tf:
        tf.addfile(link)
        tf.addfile(info, io.BytesIO(b"pwned"))
    message = refused(root)
    assert "bad.tar: escape: a symlink (to " in message
    assert not any(outside.iterdir()) and not (root / "escape").exists()


def test_zip_entry_with_symlink_mode_bits_is_refused(tmp_path):
    root = tmp_path / "set"
    root.mkdir()
    with zipfile.ZipFile(root / "link.zip", "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = 0o120777 << 16  # S_IFLNK, as `zip --symlinks` stores it
        zf.writestr(info, "/etc/passwd")
    assert "link.zip: link: a symlink" in refused(root)
    assert not (root / "link").exists()


def test_hard_links_fifos_and_devices_in_a_tar_are_refused(tmp_path):
    for kind, expected in (
        (tarfile.LNKTYPE, "a hard link (to /etc/passwd)"),
        (tarfile.FIFOTYPE, "a special file"),
        (tarfile.CHRTYPE, "a special file"),
        (tarfile.BLKTYPE, "a special file"),
    ):
        root = tmp_path / f"set{kind.decode()}"
        info = tarfile.TarInfo("thing")
        info.type, info.linkname = kind, "/etc/passwd"
        make_tar(root / "bad.tar", [info])
        assert f"bad.tar: thing: {expected}" in refused(root)
        assert files_under(root) == {"bad.tar"}


def test_a_symlink_already_in_the_folder_cannot_lead_outside(tmp_path):
    root, outside = tmp_path / "set", tmp_path / "outside"
    outside.mkdir()
    root.mkdir()
    (root / "data").symlink_to(outside)
    make_zip(root / "a.zip", {"data/x.mp4": b"x"})
    assert "a.zip: data/x.mp4: resolves outside" in refused(root)
    assert not any(outside.iterdir())


def test_zip_whose_header_understates_a_member_stops_at_the_declared_size(tmp_path):
    """A zip bomb whose central directory claims 1,000 bytes for 5 MB of zeros: refused, nothing left."""
    root = tmp_path / "set"
    path = make_zip(root / "bomb.zip", {"bomb.bin": bytes(5_000_000)})
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.infolist()[0]
    central = data.rfind(b"PK\x01\x02")
    data[central + 24 : central + 28] = (1000).to_bytes(4, "little")  # uncompressed size in the central directory
    data[info.header_offset + 22 : info.header_offset + 26] = (1000).to_bytes(4, "little")  # and in the local header
    path.write_bytes(bytes(data))
    message = refused(root, Limits(max_unpacked_bytes=2000))
    assert "bomb.zip: bomb.bin: " in message
    assert files_under(root) == {"bomb.zip"}  # neither the member nor its temporary


def test_members_past_the_byte_limit_are_refused_before_writing(tmp_path):
    root = tmp_path / "set"
    make_zip(root / "big.zip", {"a.bin": os.urandom(600), "b.bin": os.urandom(600)})
    message = refused(root, Limits(max_unpacked_bytes=1000))
    assert "big.zip: b.bin: unpacks past 1000 bytes (--max-unpacked-bytes)" in message
    assert files_under(root) == {"big.zip"}
    make_tar(root / "t" / "big.tar", [("a.bin", bytes(600)), ("b.bin", bytes(600))])
    with pytest.raises(ArchiveError, match="big.tar: b.bin: unpacks past 1000 bytes"):
        extract(root / "t", only(root / "t"), limits=Limits(max_unpacked_bytes=1000))
    assert not (root / "t" / "b.bin").exists()


def test_highly_compressed_members_are_refused_as_bombs(tmp_path):
    root = tmp_path / "set"
    make_zip(root / "zeros.zip", {"zeros.bin": bytes(8 << 20)})
    assert "zeros.zip: zeros.bin: compressed" in refused(root)
    assert files_under(root) == {"zeros.zip"}
    # the guard can be lifted for a release known to hold very compressible data
    extract(root, only(root), limits=Limits(max_ratio=0))
    assert (root / "zeros.bin").stat().st_size == 8 << 20


def test_too_many_members_are_refused(tmp_path):
    root = tmp_path / "set"
    make_zip(root / "many.zip", {f"f{i}.txt": b"x" for i in range(11)})
    assert "many.zip: f10.txt: more than 10 members (--max-members)" in refused(root, Limits(max_members=10))
    assert files_under(root) == {"many.zip"}


def test_spanned_and_corrupt_archives_are_named(tmp_path):
    root = tmp_path / "set"
    root.mkdir()
    (root / "old.z01").write_bytes(b"x")
    with pytest.raises(ArchiveError, match="old.z01: a spanned zip"):
        find_archives(root)
    (root / "old.z01").unlink()
    (root / "broken.zip").write_bytes(b"not a zip at all")
    assert "broken.zip: not a readable zip archive" in refused(root)


def test_an_interrupted_extraction_resumes_without_rewriting_finished_members(tmp_path):
    root = tmp_path / "set"
    members = {f"clips/{i}.mp4": os.urandom(2000 + i) for i in range(6)}
    make_zip(root / "clips.zip", members)

    class Killed(Exception):
        pass

    calls = []

    def die_after_three(done, total):
        calls.append(done)
        if len(calls) == 3:
            raise Killed

    with pytest.raises(Killed):
        extract(root, only(root), progress=die_after_three)
    first = {name: (root / name).stat().st_mtime_ns for name in members if (root / name).exists()}
    assert len(first) == 3 and not (root / ".prepare").exists()
    # killed in the middle of the next member: its temporary is what a kill leaves behind
    (root / "clips" / f".3.mp4{PARTIAL_SUFFIX}").write_bytes(b"half")
    assert clean_partials(root) == 1

    done = extract(root, only(root))
    assert (done.present, done.written) == (3, 3)
    assert all((root / name).read_bytes() == data for name, data in members.items())
    assert {name: (root / name).stat().st_mtime_ns for name in first} == first
    assert not list(root.rglob(f"*{PARTIAL_SUFFIX}"))
    assert extract(root, only(root)).skipped


def test_a_process_killed_at_a_member_boundary_resumes(tmp_path):
    root = tmp_path / "set"
    members = {f"t/{i}.bin": os.urandom(500) for i in range(5)}
    make_tar(root / "t.tar.gz", list(members.items()), mode="w:gz")
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from videor1.data.archives import extract, find_archives\n"
        "root = Path(sys.argv[1]); seen = []\n"
        "def kill(done, total):\n"
        "    seen.append(done)\n"
        "    if len(seen) == 2:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "extract(root, find_archives(root)[0], progress=kill)\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(root)], capture_output=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()
    assert files_under(root / "t") == {"0.bin", "1.bin"} and not (root / ".prepare").exists()
    done = extract(root, only(root))
    assert (done.present, done.written) == (2, 3)
    assert all((root / name).read_bytes() == data for name, data in members.items())


def test_a_member_present_with_the_wrong_size_is_written_again(tmp_path):
    root = tmp_path / "set"
    make_zip(root / "a.zip", {"a/x.bin": b"x" * 100, "a/y.bin": b"y" * 100})
    (root / "a").mkdir()
    (root / "a/x.bin").write_bytes(b"x" * 100)  # complete from an earlier run
    (root / "a/y.bin").write_bytes(b"y" * 7)  # truncated by something else
    done = extract(root, only(root))
    assert (done.present, done.written) == (1, 1)
    assert (root / "a/y.bin").read_bytes() == b"y" * 100


def test_members_that_would_overwrite_the_archive_or_the_records_are_refused(tmp_path):
    root = tmp_path / "set"
    make_zip(root / "self.zip", {"self.zip": b"gotcha"})
    assert "self.zip: self.zip: would overwrite the archive itself" in refused(root)
    (root / "self.zip").unlink()
    make_zip(root / "forge.zip", {".prepare/forge.zip.done": b"{}"})
    assert "forge.zip: .prepare/forge.zip.done: would overwrite the archive itself or prepare's" in refused(root)
    assert not (root / ".prepare").exists()


def test_a_tar_stream_that_expands_too_much_stops_while_writing(tmp_path, monkeypatch):
    from videor1.data import archives

    monkeypatch.setattr(archives, "TAR_RATIO_FLOOR", 1 << 20)
    root = tmp_path / "set"
    # a large first member that compresses ~1:1 (video) is no bomb, even though its header comes first
    make_tar(root / "ok" / "video.tar.gz", [("v.mp4", os.urandom(3 << 20))], mode="w:gz")
    extract(root / "ok", only(root / "ok"))
    assert (root / "ok" / "v.mp4").stat().st_size == 3 << 20
    make_tar(root / "bomb" / "zeros.tar.gz", [("small.txt", b"fine"), ("zeros.bin", bytes(16 << 20))], mode="w:gz")
    with pytest.raises(ArchiveError, match=r"zeros.tar.gz: zeros.bin: the archive expands more than 100:1"):
        extract(root / "bomb", only(root / "bomb"))
    assert files_under(root / "bomb") == {"zeros.tar.gz", "small.txt"}  # the bomb's partial file is gone


def test_a_tar_gz_split_with_split_is_read_as_one_stream(tmp_path):
    root = tmp_path / "set"
    whole = make_tar(tmp_path / "whole.tar.gz", [(f"frames/{i}.jpg", os.urandom(700)) for i in range(4)], mode="w:gz")
    data = whole.read_bytes()
    root.mkdir()
    for suffix, start in zip(("aa", "ab", "ac"), range(0, len(data), len(data) // 3 + 1), strict=False):
        (root / f"frames.tar.gz.part{suffix}").write_bytes(data[start : start + len(data) // 3 + 1])
    archive = only(root)
    assert (archive.name, archive.kind, len(archive.parts)) == ("frames.tar.gz", "tar", 3)
    assert extract(root, archive).written == 4
    assert files_under(root / "frames") == {f"{i}.jpg" for i in range(4)}
