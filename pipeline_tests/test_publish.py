"""Write, audit, publish: a candidate becomes visible only whole and only after its audits pass."""

import os

import pytest

from pipeline.audits import AuditResult, Rejected
from pipeline.publish import Artifact, write_audit_publish


def _publish(path, text, passed=True, version=None):
    def write(staging):
        (staging / "data.txt").write_text(text)
        return len(text)

    def audit(staging, written):
        seen = (staging / "data.txt").read_text()  # audits read the candidate as written
        return [AuditResult("is_good", passed and "bad" not in seen, {"chars": written},
                            "" if passed and "bad" not in seen else f"value {seen!r} in data.txt")]

    return write_audit_publish(path, write, audit, version=version)


def test_a_rejected_candidate_leaves_the_previous_version_live(tmp_path):
    target = tmp_path / "artifact"
    first = _publish(target, "one")
    assert (target / "data.txt").read_text() == "one" and first.previous is None
    with pytest.raises(Rejected, match=r"is_good: value 'bad' in data\.txt") as rejected:
        _publish(target, "bad")
    assert rejected.value.failed[0].metadata == {"chars": 3}
    assert (target / "data.txt").read_text() == "one"
    assert Artifact(target).live_version() == first.version
    second = _publish(target, "two")
    assert second.previous == first.version and (target / "data.txt").read_text() == "two"
    assert Artifact(target).record()["audits"][0]["name"] == "is_good"


def test_superseded_versions_are_pruned_and_rollback_goes_back_one(tmp_path):
    target = tmp_path / "artifact"
    versions = [_publish(target, str(i)).version for i in range(4)]
    artifact = Artifact(target)
    assert artifact.versions() == versions[2:]  # the live one and the one before it
    assert artifact.rollback() == (versions[3], versions[2])
    assert (target / "data.txt").read_text() == "2"
    with pytest.raises(FileNotFoundError, match="no previous version"):
        artifact.rollback()


def test_a_version_kept_beside_the_live_one_and_pinned_versions_survive_pruning(tmp_path):
    target = tmp_path / "artifact"
    first = _publish(target, "champion").version
    beside = write_audit_publish(target, lambda staging: (staging / "data.txt").write_text("challenger"),
                                 lambda staging, _: [], live=False, pinned=lambda: {first})
    artifact = Artifact(target, pinned=lambda: {first, beside.version})
    assert artifact.live_version() == first and (target / "data.txt").read_text() == "champion"
    assert sorted(artifact.versions()) == sorted([first, beside.version])
    for i in range(3):  # later publishes prune what is neither live, its predecessor, nor pinned
        with artifact.lock():
            artifact.write_audit_publish_locked(lambda staging, n=i: (staging / "data.txt").write_text(str(n)),
                                                lambda staging, _: [])
    assert first in artifact.versions() and beside.version in artifact.versions() and len(artifact.versions()) == 4
    with artifact.lock():
        artifact.point_to(beside.version)
    assert (target / "data.txt").read_text() == "challenger"
    with pytest.raises(FileNotFoundError, match="version gone is not kept"), artifact.lock():
        artifact.point_to("gone")


def test_the_same_content_version_is_published_once(tmp_path):
    target = tmp_path / "artifact"
    a = _publish(target, "same", version="abc")
    b = _publish(target, "same", version="abc")
    assert a.version == b.version == "abc" and Artifact(target).versions() == ["abc"]


def test_leftovers_of_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    target = tmp_path / "artifact"
    _publish(target, "one")
    artifact = Artifact(target)
    staging = artifact.versions_dir / ".staging-deadbeef"
    staging.mkdir()
    (staging / "chunk").write_text("partial")
    os.symlink("nowhere", tmp_path / ".artifact.link-deadbeef")
    _publish(target, "two")
    assert not staging.exists() and not (tmp_path / ".artifact.link-deadbeef").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".artifact.lock", ".artifact.versions", "artifact"]


def test_a_plain_directory_from_before_versioning_is_moved_aside(tmp_path):
    target = tmp_path / "artifact"
    target.mkdir()
    (target / "old.txt").write_text("old")
    _publish(target, "new")
    assert (target / "data.txt").read_text() == "new"
    [aside] = tmp_path.glob(".artifact.unversioned-*")
    assert (aside / "old.txt").read_text() == "old"
