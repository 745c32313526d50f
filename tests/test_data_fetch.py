"""`videor1 data fetch` against a local imitation of the hub, through huggingface_hub's own download code.

The server answers the requests huggingface_hub 2.4's snapshot_download makes for a dataset: the repo info
(`/api/datasets/{repo}/revision/{rev}`: sha, gated), the recursive tree listing (`/api/datasets/{repo}/tree/{sha}`)
and HEAD/GET of `/datasets/{repo}/resolve/{sha}/{path}` with X-Repo-Commit, ETag and Content-Length, honouring Range.
It sends no Xet headers, so files come over plain HTTP. It serves a repo laid out like Video-R1/Video-R1-data
(both JSONs, <Folder>/<Folder>_partN.zip archives, one holding a real mp4) and counts every request.
"""

import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
from huggingface_hub import constants
from typer.testing import CliRunner

from tests.rows import good_row
from videor1.cli import app
from videor1.data.fetch import FetchError, fetch
from videor1.data.sources import BENCHMARK_KINDS, KINDS, SOURCES

runner = CliRunner()
VIDEO_R1 = SOURCES["video-r1-260k"]
BIG = "CLEVRER/CLEVRER_part2.zip"  # listed last, so with one worker every other file is done before it starts


@dataclass
class FakeRepo:
    repo_id: str
    sha: str
    files: dict[str, bytes]
    gated: str | bool = False
    tokens: frozenset[str] = frozenset()  # tokens whose accounts accepted a gated repo's terms


@dataclass
class Request:
    method: str
    kind: str  # "revision", "tree", "resolve" or "unknown" (which is answered 404)
    path: str  # the repo file for "resolve", else the URL path
    range: str | None
    authorization: str | None


@dataclass
class FakeHub:
    """The hub's dataset endpoints on 127.0.0.1, with ways to cut a download off."""

    repos: dict[str, FakeRepo] = field(default_factory=dict)
    log: list[Request] = field(default_factory=list)
    cut: dict[str, int] = field(default_factory=dict)  # file -> GETs still to drop halfway
    fail: dict[str, int] = field(default_factory=dict)  # file -> the status its GETs get
    hold: str | None = None  # a file whose GET sends half, then waits for `release`
    halfway: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self):
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reset(self):
        with self.lock:
            self.log.clear()
        self.cut.clear()
        self.fail.clear()
        self.hold = None
        self.halfway.clear()
        self.release.clear()

    def requests(self, kind: str, path: str | None = None, method: str | None = None) -> list[Request]:
        with self.lock:
            return [r for r in self.log if r.kind == kind and path in (None, r.path) and method in (None, r.method)]

    def serve(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        parts = [unquote(p) for p in urlsplit(h.path).path.split("/")[1:]]
        auth = h.headers.get("Authorization")
        if parts[:2] == ["api", "datasets"] and len(parts) >= 6 and parts[4] in ("revision", "tree"):
            kind, repo_id, rev, path = parts[4], "/".join(parts[2:4]), parts[5], urlsplit(h.path).path
        elif parts[:1] == ["datasets"] and len(parts) >= 6 and parts[3] == "resolve":
            kind, repo_id, rev, path = "resolve", "/".join(parts[1:3]), parts[4], "/".join(parts[5:])
        else:
            kind, repo_id, rev, path = "unknown", "", "", h.path
        with self.lock:
            self.log.append(Request(h.command, kind, path, h.headers.get("Range"), auth))
        repo = self.repos.get(repo_id)
        if repo is None:
            return _reply(h, 404, b'{"error":"Repository not found"}', head, {"X-Error-Code": "RepoNotFound"})
        if rev not in ("main", repo.sha):
            return _reply(h, 404, b'{"error":"Invalid rev id"}', head, {"X-Error-Code": "RevisionNotFound"})
        if kind == "revision":
            info = {
                "id": repo.repo_id,
                "sha": repo.sha,
                "private": False,
                "gated": repo.gated,
                "siblings": [{"rfilename": p} for p in repo.files],
            }
            return _reply(h, 200, json.dumps(info).encode(), head, {"Content-Type": "application/json"})
        if kind == "tree":
            return _reply(h, 200, json.dumps(_tree(repo)).encode(), head, {"Content-Type": "application/json"})
        if repo.gated and auth not in {f"Bearer {t}" for t in repo.tokens}:
            message = f"Access to dataset {repo.repo_id} is restricted. You must have access to it."
            headers = {"X-Error-Code": "GatedRepo", "X-Error-Message": message}
            return _reply(h, 401 if auth is None else 403, message.encode(), head, headers)
        if path not in repo.files:
            return _reply(h, 404, b"Entry not found", head, {"X-Error-Code": "EntryNotFound"})
        if path in self.fail and not head:
            return _reply(h, self.fail[path], b"Internal Error", head, {})
        self.send_file(h, repo, path, head)

    def send_file(self, h: BaseHTTPRequestHandler, repo: FakeRepo, path: str, head: bool) -> None:
        data = repo.files[path]
        start = int(h.headers["Range"].split("=")[1].split("-")[0]) if h.headers.get("Range") else 0
        h.send_response(206 if start else 200)
        h.send_header("Content-Length", str(len(data) - start))
        h.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        h.send_header("X-Repo-Commit", repo.sha)
        h.send_header("Accept-Ranges", "bytes")
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.end_headers()
        if head:
            return
        body = data[start:]
        if self.cut.get(path, 0) > 0 or self.hold == path:
            h.wfile.write(body[: len(body) // 2])
            h.wfile.flush()
            if self.hold == path:
                self.halfway.set()
                self.release.wait(30)
            else:
                self.cut[path] -= 1
            h.close_connection = True  # the client sees the connection end mid-body
            return
        h.wfile.write(body)


def _handler(hub: FakeHub) -> type:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_HEAD(self):
            hub.serve(self, head=True)

        def do_GET(self):
            hub.serve(self, head=False)

        def log_message(self, *args):
            pass

    return Handler


def _reply(h: BaseHTTPRequestHandler, status: int, body: bytes, head: bool, headers: dict[str, str]) -> None:
    h.send_response(status)
    for key, value in {**headers, "Content-Length": str(len(body))}.items():
        h.send_header(key, value)
    h.end_headers()
    if not head:
        h.wfile.write(body)


def _tree(repo: FakeRepo) -> list[dict]:
    """The recursive listing as the hub sends it: folders and files, LFS metadata on files."""
    entries, folders = [], set()
    for path, data in repo.files.items():
        parents = path.split("/")[:-1]
        for i in range(len(parents)):
            folder = "/".join(parents[: i + 1])
            if folder not in folders:
                folders.add(folder)
                entries.append({"type": "directory", "oid": "0" * 40, "size": 0, "path": folder})
        lfs = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        entries.append(
            {"type": "file", "oid": hashlib.sha1(data).hexdigest(), "size": len(data), "path": path, "lfs": lfs}
        )
    return entries


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buffer.getvalue()


def _video_r1_files(tmp_path) -> dict[str, bytes]:
    """Video-R1-data in miniature: the JSONs at the root, <Folder>/<Folder>_partN.zip archives."""
    from videor1.data.media import write_video

    frames = np.zeros((8, 32, 32, 3), np.uint8)
    for i in range(8):
        frames[i, :, i * 4 : i * 4 + 4] = 255  # a bar moving right
    write_video(tmp_path / "video_00000.mp4", frames, fps=4.0)
    rows = [good_row(problem_id=1, problem="Which way does the bar move?", options=["A. left", "B. right"],
                     process="", path="./CLEVRER/train_videos/video_00000.mp4", data_source="CLEVRER")]
    cot = [{**rows[0], "process": "<think>It moves right.</think>"}]
    rng = np.random.default_rng(0)
    return {
        ".gitattributes": b"*.zip filter=lfs diff=lfs merge=lfs -text\n",
        "README.md": b"Video data folder: CLEVRER\n",
        "Video-R1-260k.json": json.dumps(rows).encode(),
        "Video-R1-COT-165k.json": json.dumps(cot).encode(),
        "CLEVRER/CLEVRER_part1.zip": _zip(
            {"train_videos/video_00000.mp4": (tmp_path / "video_00000.mp4").read_bytes()}
        ),
        "Chart/Chart_part1.zip": _zip({"chart_0.png": b"\x89PNG\r\n\x1a\n" + bytes(64)}),
        BIG: _zip({"train_videos/noise.bin": rng.integers(0, 256, 400_000, dtype=np.uint8).tobytes()}),
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    hub = FakeHub()
    files = _video_r1_files(tmp_path_factory.mktemp("media"))
    hub.repos[VIDEO_R1.repo_id] = FakeRepo(VIDEO_R1.repo_id, VIDEO_R1.revision, files)
    mvbench = SOURCES["mvbench"]
    hub.repos[mvbench.repo_id] = FakeRepo(
        mvbench.repo_id,
        "1" * 40,
        {"json/action_antonym.json": b"[]", "video/clevrer.zip": _zip({"a.mp4": b"x"})},
        gated="manual",
        tokens=frozenset({"hf_accepted"}),
    )
    yield hub
    hub.release.set()
    hub.server.shutdown()


@pytest.fixture
def hub(server, monkeypatch, tmp_path):
    """The fake hub as huggingface_hub's endpoint, online, with no token and a cache of this test's own."""
    server.reset()
    # what HF_ENDPOINT sets when huggingface_hub loads: the API's endpoint and the files' URL template
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # conftest switches it on for every other test
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    # huggingface_hub 2.4 asks {ENDPOINT}/api/agent-harnesses once a day for its user agent and caches the answer
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(tmp_path / "agent-harnesses.json"))
    # small reads, so half a file reaches the disk before a cut (huggingface_hub reads 10 MiB at a time)
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    return server


def cli(*args):
    return runner.invoke(app, ["data", "fetch", *map(str, args)])


def files_under(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and ".cache" not in p.parts)


def test_registry_holds_the_nine_names_with_sources_and_valid_patterns():
    from videor1.eval.benchmarks import BENCHMARKS

    assert list(SOURCES) == [
        "video-r1-260k",
        "video-r1-cot-165k",
        "video-r1-eval",
        "vsibench",
        "videommmu",
        "mmvu",
        "mvbench",
        "tempcompass",
        "videomme",
    ]
    assert set(BENCHMARK_KINDS) == set(BENCHMARKS)  # what prepare converts is what eval scores
    for source in SOURCES.values():
        assert source.kind in KINDS and source.repo_type == "dataset"
        assert source.repo_id.count("/") == 1 and source.description and source.source
        assert source.revision == "main" or (len(source.revision) == 40 and int(source.revision, 16) >= 0)
        assert source.allow_patterns and all(source.subsets.values())
    assert {s.name for s in SOURCES.values() if s.gated} == {"videommmu", "mvbench"}
    assert VIDEO_R1.patterns(["annotations"]) == ("Video-R1-260k.json",)
    assert VIDEO_R1.patterns(["annotations"], ["Chart/*"]) == ("Video-R1-260k.json", "Chart/*")
    assert VIDEO_R1.patterns() == VIDEO_R1.allow_patterns


def test_list_prints_every_name_and_repo():
    result = cli("--list")
    assert result.exit_code == 0, result.output
    for source in SOURCES.values():
        assert source.name in result.output and source.repo_id in result.output


def test_full_fetch_brings_the_registry_files_with_plain_progress_and_a_manifest(hub, tmp_path):
    result = cli("video-r1-260k", "--to", tmp_path / "data")
    assert result.exit_code == 0, result.output
    local = tmp_path / "data" / "video-r1-260k"
    repo = hub.repos[VIDEO_R1.repo_id]
    wanted = ["CLEVRER/CLEVRER_part1.zip", BIG, "Chart/Chart_part1.zip", "Video-R1-260k.json"]
    assert files_under(local) == sorted([*wanted, "fetch.json"])  # not the SFT JSON, README or .gitattributes
    for path in wanted:
        assert (local / path).read_bytes() == repo.files[path]
    with zipfile.ZipFile(local / "CLEVRER/CLEVRER_part1.zip") as z:
        assert z.read("train_videos/video_00000.mp4")[4:8] == b"ftyp"  # an mp4, as unzipped into CLEVRER/
    assert all(r.authorization is None for r in hub.log)
    assert {r.path for r in hub.requests("unknown")} <= {"/api/agent-harnesses"}  # nothing else unexpected
    manifest = json.loads((local / "fetch.json").read_text())
    assert manifest["name"] == "video-r1-260k" and manifest["kind"] == "video-r1-train" and manifest["complete"]
    assert manifest["repo_id"] == VIDEO_R1.repo_id and manifest["commit"] == VIDEO_R1.revision
    assert manifest["patterns"] == list(VIDEO_R1.allow_patterns) and manifest["endpoint"] == hub.url
    assert manifest["files"] == [{"path": p, "size": len(repo.files[p])} for p in sorted(wanted)]
    assert manifest["bytes"] == sum(len(repo.files[p]) for p in wanted) and manifest["fetched_at"].endswith("+00:00")
    # CliRunner is not a terminal: plain lines instead of bars, the last one at 100% with every file
    progress = [line for line in result.output.splitlines() if line.startswith("video-r1-260k: ") and "%" in line]
    assert progress and "(100%) · 4/4 files" in progress[-1] and "elapsed" in progress[-1]
    assert "4 files (" in result.output and "4 to download" in result.output

    # a second run finds everything complete at the same commit: no file request at all
    hub.reset()
    again = cli("video-r1-260k", "--to", tmp_path / "data")
    assert again.exit_code == 0, again.output
    assert "0 to download" in again.output and not hub.requests("resolve")


def test_subset_and_include_fetch_only_their_files_and_the_manifest_grows(hub, tmp_path):
    local = tmp_path / "video-r1-260k"
    result = cli("video-r1-260k", "--to", tmp_path, "--subset", "annotations")
    assert result.exit_code == 0, result.output
    assert files_under(local) == ["Video-R1-260k.json", "fetch.json"]
    assert {r.path for r in hub.requests("resolve")} == {"Video-R1-260k.json"}

    result = cli("video-r1-260k", "--to", tmp_path, "--include", "Chart/*")  # alone: only these files
    assert result.exit_code == 0, result.output
    assert files_under(local) == ["Chart/Chart_part1.zip", "Video-R1-260k.json", "fetch.json"]
    manifest = json.loads((local / "fetch.json").read_text())
    assert manifest["patterns"] == ["Video-R1-260k.json", "Chart/*"] and manifest["complete"]
    assert [f["path"] for f in manifest["files"]] == ["Chart/Chart_part1.zip", "Video-R1-260k.json"]

    result = cli("video-r1-260k", "--to", tmp_path, "--subset", "clevrer", "--include", "README.md")
    assert result.exit_code == 0, result.output
    assert "CLEVRER/CLEVRER_part1.zip" in files_under(local) and (local / "README.md").is_file()


def test_token_from_hf_token_or_flag_is_sent_as_bearer(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    assert cli("video-r1-260k", "--to", tmp_path, "--subset", "annotations").exit_code == 0
    assert hub.log and {r.authorization for r in hub.log} == {"Bearer hf_from_env"}
    hub.reset()
    assert cli("video-r1-260k", "--to", tmp_path / "b", "--subset", "annotations", "--token", "hf_flag").exit_code == 0
    assert hub.log and {r.authorization for r in hub.log} == {"Bearer hf_flag"}


def test_gated_repo_is_one_line_naming_the_terms_page(hub, tmp_path):
    terms = f"set HF_TOKEN (or --token) and accept the terms at {hub.url}/datasets/OpenGVLab/MVBench"
    result = cli("mvbench", "--to", tmp_path)
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == f"error: OpenGVLab/MVBench is gated: {terms}"
    assert not hub.requests("resolve")  # said before any file is asked for
    # a token whose account did not accept the terms: the hub's 403 becomes the same advice
    result = cli("mvbench", "--to", tmp_path, "--token", "hf_not_accepted")
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        f"error: OpenGVLab/MVBench is gated and the token has no access: {terms}"
    )
    assert {r.authorization for r in hub.requests("resolve")} == {"Bearer hf_not_accepted"}
    assert cli("mvbench", "--to", tmp_path, "--token", "hf_accepted").exit_code == 0
    assert (tmp_path / "mvbench" / "video" / "clevrer.zip").is_file()


def test_missing_repo_and_revision_are_one_line(hub, tmp_path):
    result = cli("vsibench", "--to", tmp_path, "--repo", "nobody/nothing")
    assert result.exit_code == 1
    assert f"error: nobody/nothing: no such dataset repo at {hub.url}" in result.output
    result = cli("video-r1-260k", "--to", tmp_path, "--revision", "no-such-branch")
    assert result.exit_code == 1 and "error: Video-R1/Video-R1-data: no such revision" in result.output


def test_unreachable_endpoint_says_hf_endpoint_and_offline_mode(hub, tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    result = cli("vsibench", "--to", tmp_path)
    assert result.exit_code == 1
    line = result.output.strip().splitlines()[-1]
    assert line.startswith(f"error: cannot reach the hub at http://127.0.0.1:{port} (ConnectError")
    assert "HF_ENDPOINT" in line and "HF_HUB_OFFLINE=1" in line


def test_bad_input_exits_2_with_one_line(hub, tmp_path):
    result = cli("nope", "--to", tmp_path)
    assert result.exit_code == 2
    assert f"error: unknown dataset 'nope'; known: {', '.join(SOURCES)}" in result.output
    result = cli("vsibench", "video-r1-260k", "--to", tmp_path, "--subset", "scannet")
    assert result.exit_code == 2  # checked for every name before anything is downloaded
    assert "error: video-r1-260k: unknown subset 'scannet'; its subsets: annotations, videos, images" in result.output
    assert not hub.log
    assert cli("--to", tmp_path).exit_code == 2 and cli("vsibench").exit_code == 2
    assert cli("vsibench", "mmvu", "--to", tmp_path, "--revision", "main").exit_code == 2
    result = cli("video-r1-260k", "--to", tmp_path, "--include", "nothing-like-this*")
    assert result.exit_code == 2
    assert f"error: Video-R1/Video-R1-data@{VIDEO_R1.revision[:7]}: no file matches nothing-like-this*" in result.output


def test_a_failed_name_is_one_line_and_the_others_are_still_fetched(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_accepted")
    hub.fail[BIG] = 500
    result = cli("video-r1-260k", "mvbench", "--to", tmp_path, "--subset", "videos")
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: Video-R1/Video-R1-data: the hub answered 500")
    assert errors[0].endswith("; run the fetch again to resume")
    assert (tmp_path / "mvbench" / "video" / "clevrer.zip").is_file()
    assert not json.loads((tmp_path / "video-r1-260k" / "fetch.json").read_text())["complete"]
    hub.fail.clear()
    assert cli("video-r1-260k", "--to", tmp_path, "--subset", "videos").exit_code == 0


def test_offline_only_verifies_what_is_there(hub, tmp_path, monkeypatch):
    quiet = {"console": _console()}
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FetchError, match=r"offline .*nothing fetched for video-r1-260k \(Video-R1/Video-R1-data\)"):
        fetch("video-r1-260k", tmp_path, **quiet)

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    fetch("video-r1-260k", tmp_path, subset=["annotations", "clevrer"], **quiet)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    hub.reset()
    result = fetch("video-r1-260k", tmp_path, subset=["annotations", "clevrer"], **quiet)
    assert result.offline and result.downloaded == 0 and len(result.files) == 3 and not hub.log
    # the full set: huggingface_hub's listing of the commit, kept in the folder, names what is not there
    with pytest.raises(FetchError, match=r"lacks 1 of 4 files .*: Chart/Chart_part1.zip \(missing\)"):
        fetch("video-r1-260k", tmp_path, **quiet)
    (tmp_path / "video-r1-260k" / BIG).write_bytes(b"cut")
    with pytest.raises(FetchError, match=r"lacks 1 of 3 files .*CLEVRER_part2.zip \(3 of \d+ bytes\)"):
        fetch("video-r1-260k", tmp_path, subset=["annotations", "clevrer"], **quiet)
    assert not hub.log


def test_a_file_of_the_wrong_size_is_fetched_again(hub, tmp_path):
    assert cli("video-r1-260k", "--to", tmp_path, "--subset", "clevrer").exit_code == 0
    (tmp_path / "video-r1-260k" / BIG).write_bytes(b"damaged")
    result = cli("video-r1-260k", "--to", tmp_path, "--subset", "clevrer")
    assert result.exit_code == 0, result.output
    assert f"{BIG}: 7 bytes here, {len(hub.repos[VIDEO_R1.repo_id].files[BIG])} in the repo" in result.output
    assert (tmp_path / "video-r1-260k" / BIG).read_bytes() == hub.repos[VIDEO_R1.repo_id].files[BIG]


def test_a_dropped_connection_is_resumed_with_a_range_request(hub, tmp_path):
    hub.cut[BIG] = 1
    result = fetch("video-r1-260k", tmp_path, subset="clevrer", console=_console())
    data = hub.repos[VIDEO_R1.repo_id].files[BIG]
    assert (tmp_path / "video-r1-260k" / BIG).read_bytes() == data
    gets = hub.requests("resolve", BIG, "GET")
    assert len(gets) == 2 and gets[0].range is None
    assert gets[1].range.startswith("bytes=") and 0 < int(gets[1].range[6:].split("-")[0]) < len(data)
    assert result.downloaded == 2


def test_rerun_after_a_kill_downloads_only_what_is_missing(hub, tmp_path):
    """A fetch killed mid-file (in its own process, reaching the hub through HF_ENDPOINT): the rerun completes it."""
    hub.hold = BIG
    log = tmp_path / "child.log"
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf-home")}
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_CACHE"):
        env.pop(name, None)
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from videor1.cli import app; app()",
            "data",
            "fetch",
            "video-r1-260k",
            "--to",
            str(tmp_path),
            "--workers",
            "1",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    try:
        assert hub.halfway.wait(60), log.read_text()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        hub.release.set()
    local = tmp_path / "video-r1-260k"
    done = ["CLEVRER/CLEVRER_part1.zip", "Chart/Chart_part1.zip", "Video-R1-260k.json"]
    assert files_under(local) == sorted([*done, "fetch.json"])  # the cut file never reached its place
    assert not json.loads((local / "fetch.json").read_text())["complete"]
    assert list((local / ".cache" / "huggingface").rglob("*.incomplete"))  # the killed download's temporary
    first = {p: len(hub.requests("resolve", p, "GET")) for p in [*done, BIG]}
    assert first == {**dict.fromkeys(done, 1), BIG: 1}

    hub.reset()
    result = cli("video-r1-260k", "--to", tmp_path)
    assert result.exit_code == 0, result.output
    assert "removed 1 partial download(s)" in result.output and "1 to download" in result.output
    assert "(100%) · 4/4 files" in result.output.splitlines()[-2]  # the last progress line, then the summary
    assert [r.path for r in hub.requests("resolve")] == [BIG, BIG]  # one HEAD, one GET: nothing else again
    assert (local / BIG).read_bytes() == hub.repos[VIDEO_R1.repo_id].files[BIG]
    assert not list((local / ".cache" / "huggingface").rglob("*.incomplete"))
    assert json.loads((local / "fetch.json").read_text())["complete"]


def test_a_second_name_of_the_same_repo_gets_a_note_about_shared_media(hub, tmp_path):
    assert cli("video-r1-260k", "--to", tmp_path, "--subset", "annotations").exit_code == 0
    result = cli("video-r1-cot-165k", "--to", tmp_path, "--subset", "annotations")
    assert result.exit_code == 0 and "note:" not in result.output  # only its JSON: nothing shared
    assert files_under(tmp_path / "video-r1-cot-165k") == ["Video-R1-COT-165k.json", "fetch.json"]
    result = cli("video-r1-cot-165k", "--to", tmp_path, "--subset", "chart")
    assert result.exit_code == 0
    assert "note: " in result.output and "--subset annotations" in result.output


def _console():
    from rich.console import Console

    return Console(file=io.StringIO(), width=200)


def test_plain_lines_follow_the_bytes_and_end_with_the_last_file():
    from videor1.data.fetch import _Reporter

    lines, now = [], [0.0]
    reporter = _Reporter("x", total=1000, files=2, say=lines.append, interval=30.0, clock=lambda: now[0])
    bar_class = reporter.bar_class()
    files, network, disk = bar_class(total=2), bar_class(unit="B", total=0), bar_class(unit="B", total=0)
    network.update(100)
    disk.update(100)  # the same bytes counted twice are still 100
    now[0] = 10.0
    for _ in range(9):
        network.update(100)
    files.update(1)
    files.update(1)
    reporter.finish()
    assert lines[0].startswith("x: 100 B/1 kB (10%) · 0/2 files")
    assert lines[-1] == "x: 1 kB/1 kB (100%) · 2/2 files · 100 B/s · elapsed 0:00:10"
    assert len(lines) <= 22  # ~one line per 5%, not one per update
