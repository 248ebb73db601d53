"""The one atomic-write helper: a reader sees the old file or the new one, never half of one."""

import errno
import shutil
from collections import namedtuple

import pytest

from cxrnb import paths
from cxrnb.errors import CxrnbError
from cxrnb.paths import atomic, write_text

Usage = namedtuple("Usage", "total used free")


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = write_text(tmp_path / "sub" / "table.csv", "old\n")       # makes the folder too
    with pytest.raises(RuntimeError):
        with atomic(path) as tmp:
            tmp.write_text("half a fi")
            assert tmp.parent == path.parent and tmp.suffix == ".csv"   # same disk, suffix kept
            raise RuntimeError("interrupted")
    assert path.read_text() == "old\n" and sorted(p.name for p in path.parent.iterdir()) == ["table.csv"]


def test_a_finished_write_replaces_the_file(tmp_path):
    path = write_text(tmp_path / "a.md", "one")
    with atomic(path) as tmp:
        tmp.write_text("two")
        assert path.read_text() == "one"          # not visible until the block succeeds
    assert path.read_text() == "two" and sorted(p.name for p in tmp_path.iterdir()) == ["a.md"]


def test_a_write_that_fills_the_disk_says_so_in_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    path = write_text(tmp_path / "checkpoint.pt", "old")
    # torch.save on a full disk: a RuntimeError that names neither the cause nor the file
    monkeypatch.setattr(shutil, "disk_usage", lambda _: Usage(10 * 2**30, 10 * 2**30 - 58 * 2**20, 58 * 2**20))
    with pytest.raises(CxrnbError, match=r"no space left on the disk writing .*checkpoint.pt \(58 MB free\)"):
        with atomic(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 54237376 vs 54237264")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_enospc_is_a_full_disk_whatever_the_free_space_and_other_errors_pass_through(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda _: Usage(10 * 2**30, 0, 10 * 2**30))
    assert paths.disk_full(OSError(errno.ENOSPC, "No space left on device"), tmp_path)
    assert not paths.disk_full(RuntimeError("unexpected pos"), tmp_path)
    with pytest.raises(ValueError, match="a bug"):
        with atomic(tmp_path / "a.md"):
            raise ValueError("a bug")
