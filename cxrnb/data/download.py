"""Fetch the official NIH ChestX-ray14 image archives: resumable, verified, extracted in the
release layout (``out/images_001/images/*.png`` ... ``out/images_012/images/*.png``).

Where from: the twelve static Box links of NIH's own ``batch_download_zips.py``
(https://nihcc.app.box.com/v/ChestXray-NIHCC), or ``<base_url>/images_0NN.tar.gz`` on a mirror.

How an archive is checked, in order:
1. its length: the bytes received must equal the server's Content-Length (or Content-Range
   total) and, for the official archives, the size Box serves for that file (table below);
2. its checksum: the MD5 that NIH publishes for each archive in FAQ_CHESTXRAY.pdf (question Q07,
   "We thank Utku Ozbulak for providing those MD5s"), or a SHA-256 given in ``checksums`` for
   a mirror that serves other bytes (tests do this);
3. its integrity: extraction reads the whole gzip stream, so gzip's own CRC-32 and length
   trailer are verified, and every tar member must be a plain file with a safe relative path.
An archive failing any check is deleted and the run stops with a one-line ``CxrnbError``.

A download that breaks off is kept as ``images_0NN.tar.gz.part`` and continued with an HTTP
Range request, both within a run (a few retries) and by running again. Archives already
extracted are skipped, and each extracted archive is deleted to save its 2-4 GB.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import re
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, replace
from importlib.util import find_spec
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from tqdm.auto import tqdm

from cxrnb.errors import CxrnbError

BOX_PAGE = "https://nihcc.app.box.com/v/ChestXray-NIHCC"
BOX_STATIC = "https://nihcc.box.com/shared/static/"
LABEL_TABLE = "Data_Entry_2017_v2020.csv"
TIMEOUT_S = 15          # socket timeout: connecting, and waiting for each chunk
MAX_TRIES = 5           # requests per archive before giving up (progress is kept in the .part)
UNREACHABLE_TRIES = 2   # ... but a host that never answered is given up on sooner
RETRY_WAIT_S = 2.0      # wait before retry k: k * RETRY_WAIT_S
CHUNK = 1 << 20


@dataclass(frozen=True)
class Archive:
    """One archive to fetch and what its bytes must be."""

    name: str                   # images_001.tar.gz
    url: str
    size: int | None = None     # bytes, when known in advance
    md5: str | None = None
    sha256: str | None = None

    @property
    def folder(self) -> str:    # images_001
        return self.name.removesuffix(".tar.gz")


# name, Box static-link key (from NIH's batch_download_zips.py), size in bytes as Box serves it,
# MD5 as NIH publishes it in FAQ_CHESTXRAY.pdf (Q07)
_TABLE = """
images_001.tar.gz vfk49d74nhbxq3nqjg0900w5nvkorp5c 2008470987 fe8ed0a6961412fddcbb3603c11b3698
images_002.tar.gz i28rlmbvmfjbl8p2n3ril0pptcmcu9d1 3952623504 ab07a2d7cbe6f65ddd97b4ed7bde10bf
images_003.tar.gz f1t00wrtdk94satdfb9olcolqx20z2jp 3929234850 2301d03bde4c246388bad3876965d574
images_004.tar.gz 0aowwzs5lhjrceb3qp67ahp0rd1l1etg 3838903983 9f1b7f5aae01b13f4bc8e2c44a4b8ef6
images_005.tar.gz v5e3goj22zr6h8tzualxfsqlqaygfbsn 3935496531 1861f3cd0ef7734df8104f2b0309023b
images_006.tar.gz asi7ikud9jwnkrnkj99jnpfkjdes7l6l 3986301172 456b53a8b351afd92a35bc41444c58c8
images_007.tar.gz jn1b4mw4n6lnh74ovmcjb8y48h8xj07n 4016328426 1075121ea20a137b87f290d6a4a5965e
images_008.tar.gz tvpxmn7qyrgl0w8wfh9kqfjskv6nmm1j 4018347353 b61f34cec3aa69f295fbb593cbd9d443
images_009.tar.gz upyy3ml7qdumlgk2rfcvlb9k6gvqq2pj 4111327929 442a3caa61ae9b64e61c561294d1e183
images_010.tar.gz l6nilvfa9cg3s28tqv1qc1olm3gnz54p 4181556296 09ec81c4c31e32858ad8cf965c494b74
images_011.tar.gz hhq8fkdgvcari67vfhs7ppg2w6ni4jze 4187084020 499aefc67207a5a97692424cf5dbeed5
images_012.tar.gz ioqwiy20ihqwyr8pf4c24eazhh281pbu 2914187733 dc9fda1757c2de0032b63347a7d2895c
"""
OFFICIAL = tuple(Archive(name, BOX_STATIC + key + ".gz", int(size), md5)
                 for name, key, size, md5 in map(str.split, _TABLE.strip().splitlines()))


def manifest(parts: int = 12, base_url: str | None = None,
             checksums: dict[str, str] | None = None) -> list[Archive]:
    """The first `parts` archives: NIH's links, or a mirror's (expected to serve the same bytes,
    so the official size and MD5 still apply), except where `checksums` gives a SHA-256, which
    then replaces them."""
    if not isinstance(parts, int) or not 1 <= parts <= len(OFFICIAL):
        raise CxrnbError(f"parts={parts!r}: CXR14 has archives images_001 to images_012, "
                         "choose 1 to 12")
    if base_url is not None and urlparse(base_url).scheme not in ("http", "https"):
        raise CxrnbError(f"base_url={base_url!r}: give an http:// or https:// address")
    checksums = checksums or {}
    unknown = set(checksums) - {a.name for a in OFFICIAL}
    if unknown:
        raise CxrnbError(f"checksums for unknown archives {sorted(unknown)}: "
                         "names are images_001.tar.gz ... images_012.tar.gz")
    for name, digest in checksums.items():
        if not re.fullmatch(r"[0-9a-f]{64}", str(digest)):
            raise CxrnbError(f"checksum for {name} is not a SHA-256 (64 lowercase hex digits)")
    out = []
    for a in OFFICIAL[:parts]:
        url = a.url if base_url is None else f"{base_url.rstrip('/')}/{a.name}"
        if a.name in checksums:
            out.append(Archive(a.name, url, sha256=checksums[a.name]))
        else:
            out.append(replace(a, url=url))
    return out


def download(parts: int = 12, out: str | Path = "data/cxr14", base_url: str | None = None,
             progress: bool = True, checksums: dict[str, str] | None = None) -> Path:
    """Fetch, verify and extract images_001 ... images_<parts>; returns `out`, ready to be used
    as CXR14_ROOT. Safe to run again: finished archives are skipped, broken downloads resumed."""
    archives = manifest(parts, base_url, checksums)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CxrnbError(f"{out} is a file: give a folder for the images")
    out.mkdir(parents=True, exist_ok=True)
    for a in archives:
        if (out / a.folder).is_dir():
            continue                                    # extracted by an earlier run (or by hand)
        part = out / (a.name + ".part")
        need = 2 * (a.size or 0) - (part.stat().st_size if part.exists() else 0)
        if shutil.disk_usage(out).free < need:          # the archive, then as many bytes of PNGs
            raise CxrnbError(f"{a.name} needs {need / 1e9:.1f} GB free in {out}: free some "
                             "space or choose another --out")
        _extract(_fetch(a, out, progress, last=archives[-1].name), out / a.folder, progress)
    _copy_label_table(out)
    return out


def _manual(out: Path, last: str, why: str) -> CxrnbError:
    """The one-line error for a host we cannot reach, saying how to provide the data by hand."""
    return CxrnbError(
        f"{why}. To provide the data by hand: download images_001.tar.gz ... {last} from "
        f"{BOX_PAGE}, extract each into {out}/images_0NN/ (giving images_0NN/images/*.png), put "
        f"{LABEL_TABLE} beside them and set CXR14_ROOT={out}")


def _fetch(a: Archive, out: Path, progress: bool, last: str) -> Path:
    """Download `a` into out/<name> (resuming out/<name>.part) and verify it; returns the path.
    `last` names the final archive wanted, for the instructions if the host is unreachable."""
    final, part = out / a.name, out / (a.name + ".part")
    if final.exists():              # renamed from .part only after it passed its checks
        return final
    connected, why, host = False, "", urlparse(a.url).netloc
    attempt = 0
    while attempt < (MAX_TRIES if connected else UNREACHABLE_TRIES):
        attempt += 1
        if attempt > 1:
            _say(f"{a.name}: {why}; try {attempt} of {MAX_TRIES if connected else UNREACHABLE_TRIES} "
                 f"in {RETRY_WAIT_S * (attempt - 1):g} s", progress)
            time.sleep(RETRY_WAIT_S * (attempt - 1))
        elif not connected:
            _say(f"{a.name}: connecting to {host} (time-out {TIMEOUT_S} s)", progress)
        have = part.stat().st_size if part.exists() else 0
        if a.size is not None and have >= a.size:
            if have == a.size:
                break
            part.unlink()
            have = 0
        try:
            if _get(a, part, have, progress):
                break
            connected, why = True, "the connection closed early"
        except urllib.error.HTTPError as e:
            connected = True
            if e.code == 416 and have:          # nothing left to send: the .part is complete
                break
            if e.code < 500:
                raise CxrnbError(f"{a.url}: HTTP {e.code} {e.reason}; is the address right?"
                                 ) from None
            why = f"HTTP {e.code}"
        except urllib.error.URLError as e:      # no answer: refused, unknown host, timeout
            why = str(e.reason)
        except TimeoutError:                    # connected, then no answer within TIMEOUT_S
            why = f"no answer from {host} within {TIMEOUT_S} s"
        except (OSError, http.client.HTTPException) as e:     # the answer broke off
            connected, why = True, str(e) or type(e).__name__
    else:
        if not connected:
            raise _manual(out, last, f"cannot reach {host} ({why})")
        have = part.stat().st_size if part.exists() else 0
        raise CxrnbError(f"{a.name}: stopped at {have:,} bytes after {attempt} tries ({why}); "
                         "run again to resume")
    _verify(a, part)
    part.rename(final)
    return final


def _say(message: str, progress: bool) -> None:
    """A status line on stderr (with the progress bars), so a slow network is never silent."""
    if progress:
        tqdm.write(message, file=sys.stderr)


def _get(a: Archive, part: Path, have: int, progress: bool) -> bool:
    """One request for the bytes from `have` on, appended to `part`. True when the file is whole."""
    headers = {"User-Agent": "cxrnb-download", **({"Range": f"bytes={have}-"} if have else {})}
    with urllib.request.urlopen(urllib.request.Request(a.url, headers=headers),
                                timeout=TIMEOUT_S) as resp:
        if resp.status == 206:
            m = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", resp.headers.get("Content-Range", ""))
            if not m or int(m[1]) != have:
                raise CxrnbError(f"{a.url} answered a resume request with the wrong byte range")
            total = int(m[2]) if m[2] != "*" else None
        else:                                   # 200: the whole file (a Range may be ignored)
            have, length = 0, resp.headers.get("Content-Length")
            total = int(length) if length else None
        if a.size is not None and total is not None and total != a.size:
            raise CxrnbError(f"{a.url} serves {total:,} bytes, but {a.name} has {a.size:,}: "
                             "not the official archive (give its sha256 in checksums for a mirror)")
        with open(part, "ab" if have else "wb") as fh, tqdm(
                total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                desc=a.name, disable=not progress) as bar:
            while chunk := resp.read(CHUNK):
                fh.write(chunk)
                bar.update(len(chunk))
            size = fh.tell()
    # http.client returns a short body without complaint when a connection drops: check length
    return size == total if total is not None else True


def _verify(a: Archive, part: Path) -> None:
    """Size and checksum, or delete the file and say so."""
    size = part.stat().st_size
    if a.size is not None and size != a.size:
        part.unlink()
        raise CxrnbError(f"{a.name} has {size:,} bytes, expected {a.size:,}: deleted it; run again")
    expected = {"md5": a.md5, "sha256": a.sha256}
    hashes = {k: hashlib.new(k) for k, v in expected.items() if v}
    with open(part, "rb") as fh:
        while chunk := fh.read(CHUNK):
            for h in hashes.values():
                h.update(chunk)
    for kind, h in hashes.items():
        if h.hexdigest() != expected[kind]:
            part.unlink()
            raise CxrnbError(f"{a.name} failed its {kind} check ({h.hexdigest()}, expected "
                             f"{expected[kind]}): deleted it; run again to download it afresh")


def _extract(archive: Path, dest: Path, progress: bool) -> None:
    """Unpack into a temporary sibling folder, renamed to `dest` once complete; a corrupt or
    unsafe archive is deleted and nothing of it is left behind."""
    tmp = dest.parent / f".{dest.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        with gzip.open(archive) as gz, tarfile.open(fileobj=gz, mode="r|") as tar:
            for member in tqdm(tar, desc=f"extract {archive.name}", unit=" files",
                               disable=not progress):
                path = PurePosixPath(member.name)
                if member.isdir():
                    continue
                if not member.isfile() or path.is_absolute() or ".." in path.parts:
                    raise CxrnbError(f"{archive.name} holds an unsafe member {member.name!r} "
                                     "(a link or a path outside the folder): deleted it")
                target = tmp.joinpath(*path.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
            while gz.read(CHUNK):       # to the end, so that gzip checks its CRC and length
                pass
        if not any(tmp.rglob("*.png")):
            raise CxrnbError(f"{archive.name} holds no PNG images: deleted it")
        tmp.rename(dest)
    except (tarfile.TarError, gzip.BadGzipFile, EOFError, zlib.error) as e:   # not a disk error
        archive.unlink()
        raise CxrnbError(f"{archive.name} is corrupt ({e}): deleted it; run again to download "
                         "it afresh") from None
    except CxrnbError:
        archive.unlink()
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    archive.unlink()


def _copy_label_table(out: Path) -> None:
    """Put the official label table beside the images, from the copy torchxrayvision ships."""
    target = out / LABEL_TABLE
    if target.exists():
        return
    spec = find_spec("torchxrayvision")
    source = Path(spec.origin).parent / "data" / (LABEL_TABLE + ".gz") if spec else None
    if source is None or not source.is_file():
        print(f"note: no packaged {LABEL_TABLE}; download it from {BOX_PAGE} into {out}",
              file=sys.stderr)
        return
    tmp = target.with_name(target.name + ".partial")
    with gzip.open(source) as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst, CHUNK)
    tmp.rename(target)
