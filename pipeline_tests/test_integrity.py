"""A published file is checked against its recorded size and crc32 when it is read: corrupt, truncated
or replaced, it is refused."""

import pytest

from pipeline.integrity import Corrupt, verify_file
from pipeline.publish import write_audit_publish


def test_corruption_of_a_published_file_is_detected_on_read(tmp_path):
    target = tmp_path / "artifact"
    published = write_audit_publish(target, lambda staging: (staging / "data.txt").write_text("0123456789"),
                                    lambda staging, written: [])
    assert verify_file(published.path, "data.txt").read_text() == "0123456789"
    path = published.path / "data.txt"
    with open(path, "r+b") as handle:
        handle.seek(4)
        handle.write(b"X")
    with pytest.raises(Corrupt, match=r"data\.txt: crc32 .* was published \(the file is corrupt\)"):
        verify_file(published.path, "data.txt")
    path.write_text("0123")
    with pytest.raises(Corrupt, match=r"4 bytes, 10 were published \(truncated or replaced\)"):
        verify_file(published.path, "data.txt")
