"""The archive downloader against a local HTTP server that supports Range requests and can
break a response off mid-file; two tiny archives stand in for images_001/002.tar.gz."""

import gzip
import hashlib
import io
import re
import socket
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.util import find_spec
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from cxrnb.data import download as dl
from cxrnb.errors import CxrnbError

NAMES = ("images_001.tar.gz", "images_002.tar.gz")


def png(seed: int) -> bytes:
    """A small noisy greyscale PNG (noise, so that gzip cannot shrink the archive to nothing)."""
    buf = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (48, 48), dtype=np.uint8)
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def tar_gz(members: dict[str, bytes], symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("images")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo("images/link.png")
            info.type, info.linkname = tarfile.SYMTYPE, symlink
            tar.addfile(info)
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Server:
    """Serves `files` at /<name>. `cut[name] = k` breaks the next response off after k bytes;
    `short = k` makes every response stop k bytes before the end of the file; `ranges = False`
    makes it ignore Range headers, as some servers do."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.short = 0
        self.ranges = True
        self.requests: list[tuple[str, str | None]] = []      # (name, Range header)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                name, rng = self.path.lstrip("/"), self.headers.get("Range")
                server.requests.append((name, rng))
                if name not in server.files:
                    return self.send_error(404)
                data, start = server.files[name], 0
                if rng and server.ranges:
                    start = int(re.fullmatch(r"bytes=(\d+)-", rng)[1])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        return self.end_headers()
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:len(data) - server.short]     # promise it all, send less
                if name in server.cut:
                    body = body[:server.cut.pop(name)]
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setattr(dl, "RETRY_WAIT_S", 0.0)
    s = Server()
    s.images = {name: {f"images/{10 * k + i:08d}_000.png": png(10 * k + i) for i in (1, 2, 3)}
                for k, name in enumerate(NAMES)}         # three PNGs per archive
    s.files = {name: tar_gz(members) for name, members in s.images.items()}
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def checksums(s: Server) -> dict[str, str]:
    return {name: sha256(data) for name, data in s.files.items()}


def leftovers(out: Path) -> list[str]:
    """Anything but finished folders and the label table: archives, .part files, temp folders."""
    return sorted(p.name for p in out.iterdir()
                  if not re.fullmatch(r"images_\d{3}|Data_Entry_2017_v2020\.csv", p.name))


def test_download_extracts_the_release_layout(server, tmp_path):
    out = dl.download(parts=2, out=tmp_path / "cxr14", base_url=server.url, progress=False,
                      checksums=checksums(server))
    for name, members in server.images.items():
        folder = out / name.removesuffix(".tar.gz") / "images"
        assert sorted(p.name for p in folder.iterdir()) == sorted(Path(m).name for m in members)
        assert all((folder / Path(m).name).read_bytes() == data for m, data in members.items())
    assert leftovers(out) == []
    assert [r[1] for r in server.requests] == [None, None]            # one plain GET each
    xrv_data = Path(find_spec("torchxrayvision").origin).parent / "data"
    packaged = gzip.open(xrv_data / "Data_Entry_2017_v2020.csv.gz").read()
    assert (out / "Data_Entry_2017_v2020.csv").read_bytes() == packaged


def test_second_run_fetches_nothing(server, tmp_path):
    kw = dict(parts=2, out=tmp_path / "cxr14", base_url=server.url, progress=False,
              checksums=checksums(server))
    dl.download(**kw)
    n = len(server.requests)
    dl.download(**kw)
    assert len(server.requests) == n


def test_broken_transfer_resumes_with_range(server, tmp_path):
    name = NAMES[0]
    half = len(server.files[name]) // 2
    server.cut[name] = half
    out = dl.download(parts=1, out=tmp_path / "cxr14", base_url=server.url, progress=False,
                      checksums=checksums(server))
    assert server.requests == [(name, None), (name, f"bytes={half}-")]
    folder = out / "images_001" / "images"
    assert all((folder / Path(m).name).read_bytes() == d for m, d in server.images[name].items())


def test_part_file_from_a_killed_run_is_continued(server, tmp_path):
    name, out = NAMES[0], tmp_path / "cxr14"
    out.mkdir()
    (out / (name + ".part")).write_bytes(server.files[name][:100])
    dl.download(parts=1, out=out, base_url=server.url, progress=False, checksums=checksums(server))
    assert server.requests == [(name, "bytes=100-")]
    assert (out / "images_001" / "images").is_dir() and leftovers(out) == []


def test_complete_part_file_is_finished(server, tmp_path):
    """A .part holding every byte gets "416 Range Not Satisfiable": verified and extracted."""
    name, out = NAMES[0], tmp_path / "cxr14"
    out.mkdir()
    (out / (name + ".part")).write_bytes(server.files[name])
    dl.download(parts=1, out=out, base_url=server.url, progress=False, checksums=checksums(server))
    assert server.requests == [(name, f"bytes={len(server.files[name])}-")]
    assert (out / "images_001" / "images").is_dir() and leftovers(out) == []


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    name, out = NAMES[0], tmp_path / "cxr14"
    out.mkdir()
    (out / (name + ".part")).write_bytes(b"stale bytes from elsewhere")
    server.ranges = False
    dl.download(parts=1, out=out, base_url=server.url, progress=False, checksums=checksums(server))
    folder = out / "images_001" / "images"
    assert all((folder / Path(m).name).read_bytes() == d for m, d in server.images[name].items())


def test_wrong_checksum_is_rejected_and_deleted(server, tmp_path):
    sums = checksums(server) | {NAMES[0]: "0" * 64}
    with pytest.raises(CxrnbError, match="sha256 check") as e:
        dl.download(parts=2, out=tmp_path / "cxr14", base_url=server.url, progress=False,
                    checksums=sums)
    assert "\n" not in str(e.value)
    assert list((tmp_path / "cxr14").iterdir()) == []


def test_truncated_gzip_is_rejected_without_half_extraction(server, tmp_path):
    name = NAMES[0]
    server.files[name] = server.files[name][:-300]        # the checksum matches, the gzip is cut
    with pytest.raises(CxrnbError, match="corrupt"):
        dl.download(parts=1, out=tmp_path / "cxr14", base_url=server.url, progress=False,
                    checksums=checksums(server))
    assert list((tmp_path / "cxr14").iterdir()) == []


@pytest.mark.parametrize("evil", ["parent", "absolute", "link"])
def test_unsafe_members_are_refused(server, tmp_path, evil):
    members = dict(server.images[NAMES[0]])
    if evil == "link":
        server.files[NAMES[0]] = tar_gz(members, symlink="/etc/passwd")
    else:   # both would land in tmp_path if followed
        name = "../../evil.png" if evil == "parent" else str(tmp_path / "evil.png")
        server.files[NAMES[0]] = tar_gz(members | {name: png(99)})
    with pytest.raises(CxrnbError, match="unsafe member"):
        dl.download(parts=1, out=tmp_path / "cxr14", base_url=server.url, progress=False,
                    checksums=checksums(server))
    assert list((tmp_path / "cxr14").iterdir()) == [] and not (tmp_path / "evil.png").exists()


def test_a_mirror_must_serve_the_official_bytes(server, tmp_path):
    """Without checksums a mirror is held to the official size (and MD5)."""
    with pytest.raises(CxrnbError, match="not the official archive"):
        dl.download(parts=1, out=tmp_path / "cxr14", base_url=server.url, progress=False)


def test_unreachable_host_says_how_to_provide_the_data(tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "RETRY_WAIT_S", 0.0)
    with socket.socket() as s:              # a port that was free a moment ago: nobody listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(CxrnbError) as e:
        dl.download(parts=3, out=tmp_path / "cxr14", base_url=f"http://127.0.0.1:{port}",
                    progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "cannot reach" in msg
    assert "images_003.tar.gz" in msg and "images_0NN/images/" in msg and "CXR14_ROOT=" in msg


def test_a_server_that_never_answers_times_out_soon_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(dl, "RETRY_WAIT_S", 0.0)
    monkeypatch.setattr(dl, "TIMEOUT_S", 0.5)
    with socket.socket() as s:              # accepts connections (the backlog), never answers
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        start = time.monotonic()
        with pytest.raises(CxrnbError) as e:
            dl.download(parts=1, out=tmp_path / "cxr14", base_url=f"http://127.0.0.1:{s.getsockname()[1]}")
        took = time.monotonic() - start
    assert took < 10 * dl.TIMEOUT_S                       # two tries, not minutes
    assert "no answer from 127.0.0.1" in str(e.value) and "\n" not in str(e.value)
    err = capsys.readouterr().err
    assert "connecting to 127.0.0.1" in err and "try 2 of 2" in err


def test_missing_file_is_not_retried(server, tmp_path):
    server.files.pop(NAMES[0])
    with pytest.raises(CxrnbError, match="HTTP 404"):
        dl.download(parts=1, out=tmp_path / "cxr14", base_url=server.url, progress=False,
                    checksums={NAMES[0]: "0" * 64})
    assert len(server.requests) == 1


def test_gives_up_after_the_retry_cap(server, tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "MAX_TRIES", 3)
    name, server.short = NAMES[0], 10
    with pytest.raises(CxrnbError, match="run again to resume"):
        dl.download(parts=1, out=tmp_path / "cxr14", base_url=server.url, progress=False,
                    checksums={name: "0" * 64})
    assert len(server.requests) == 3
    assert (tmp_path / "cxr14" / (name + ".part")).read_bytes() == server.files[name][:-10]


def test_official_manifest():
    archives = dl.manifest()
    assert [a.name for a in archives] == [f"images_{i:03d}.tar.gz" for i in range(1, 13)]
    assert all(a.url.startswith("https://nihcc.box.com/shared/static/") for a in archives)
    assert len({a.url for a in archives}) == 12 and len({a.md5 for a in archives}) == 12
    assert all(re.fullmatch(r"[0-9a-f]{32}", a.md5) for a in archives)
    assert 42e9 < sum(a.size for a in archives) < 46e9     # "about 45 GB" for 112,120 PNGs


@pytest.mark.parametrize("kwargs, message", [
    (dict(parts=0), "choose 1 to 12"), (dict(parts=13), "choose 1 to 12"),
    (dict(base_url="ftp://mirror"), "http"),
    (dict(checksums={"images_001.tar.gz": "abc"}), "SHA-256"),
    (dict(checksums={"images_999.tar.gz": "0" * 64}), "unknown archives"),
])
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(CxrnbError, match=message):
        dl.download(out=tmp_path / "cxr14", progress=False, **kwargs)


def test_out_must_be_a_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(CxrnbError, match="is a file"):
        dl.download(parts=1, out=tmp_path / "file", progress=False)


def test_stops_before_filling_the_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(dl.shutil, "disk_usage", lambda path: SimpleNamespace(free=0))
    with pytest.raises(CxrnbError, match=r"images_001.tar.gz needs 4.0 GB free"):
        dl.download(parts=1, out=tmp_path / "cxr14", progress=False)   # 2 x 2,008,470,987 bytes
