"""Write-then-rename: a failure leaves the old content, never a partial one."""

import pytest

from pipeline.atomic import staged_dir, staged_file


def test_staged_file_publishes_on_success_and_keeps_old_on_failure(tmp_path):
    target = tmp_path / "x.txt"
    with staged_file(target) as tmp:
        tmp.write_text("one")
    assert target.read_text() == "one"
    with pytest.raises(RuntimeError), staged_file(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "one"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_staged_dir_replaces_whole_directories(tmp_path):
    target = tmp_path / "date=2026-01-01"
    with staged_dir(target) as tmp:
        (tmp / "a").write_text("1")
        (tmp / "b").write_text("1")
        assert not target.exists()  # nothing visible before the end
    with pytest.raises(RuntimeError), staged_dir(target) as tmp:
        (tmp / "a").write_text("2")
        raise RuntimeError("killed")
    assert sorted(p.name for p in target.iterdir()) == ["a", "b"]
    with staged_dir(target) as tmp:
        (tmp / "c").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["c"]
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_leftovers_of_a_killed_writer_are_removed(tmp_path):
    target = tmp_path / "part"
    (tmp_path / ".part.tmp-deadbeef").mkdir()
    (tmp_path / ".part.tmp-deadbeef" / "chunk").write_text("partial")
    with staged_dir(target) as tmp:
        (tmp / "ok").write_text("1")
    assert [p.name for p in tmp_path.iterdir()] == ["part"]
