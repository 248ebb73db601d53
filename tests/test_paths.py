"""The one atomic-write helper: a reader sees the old file or the new one, never half of one."""

import pytest

from cxrnb.paths import atomic, write_text


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
