"""Write-then-rename of a private file: the new content appears whole, or the old one stays."""

import pytest

from pipeline.atomic import staged_file


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
