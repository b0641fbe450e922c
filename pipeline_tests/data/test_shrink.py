"""The shrink rule in the warehouse's feature snapshots: an empty or shrunken feature table never replaces
the live one unless the run allows a deliberate shrink; an empty table is refused even then."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.audits import Rejected
from pipeline.data.features import USERS, load_snapshot, publish_snapshot, read_source_features
from pipeline.data.shrink import MAX_SHRINK_SETTING, ShrinkGuard, dropped_ids
from pipeline.publish import Artifact
from pipeline.settings import SettingsError, load_settings


@pytest.mark.parametrize("live, candidate", [
    (np.arange(1000), np.arange(0, 1000, 3)),
    (np.array([5, 9, 10, 400, 7_000_000_000]), np.array([-3, 9, 400, 7_000_000_001])),
    (np.arange(10), np.array([], np.int64)),
    (np.array([], np.int64), np.arange(10)),
    (np.arange(10), np.arange(10) + 100),
])
def test_dropped_ids_agrees_with_sets(live, candidate):
    assert dropped_ids(live, candidate) == len(set(live.tolist()) - set(candidate.tolist()))


def _subset(snapshot, keep: np.ndarray):
    """The snapshot's rows where ``keep`` is true, as a snapshot of its own (new versions)."""
    from pipeline.data.features import FeatureSnapshot, _digest

    ids, values = snapshot.ids[keep], snapshot.values[keep]
    return FeatureSnapshot(snapshot.kind, ids, values, None, _digest(ids, values), _digest(ids))


@pytest.fixture
def live_users(tiny_dataset, tmp_path):
    """The tiny dataset's 5,000 users published as the live snapshot; (path, snapshot)."""
    path = tmp_path / "users"
    snapshot = read_source_features(tiny_dataset.user_features, USERS)
    publish_snapshot(snapshot, path, USERS)
    return path, snapshot


def test_an_empty_snapshot_is_never_published_even_when_a_shrink_is_allowed(live_users, tmp_path):
    path, good = live_users
    empty = _subset(good, np.zeros(len(good.ids), bool))
    for guard in (ShrinkGuard(), ShrinkGuard(allow=True)):
        with pytest.raises(Rejected, match=r"user_features_not_shrunk: users: the candidate has 0 rows "
                                           r"\(the live version has 5000\); an empty table is never published"):
            publish_snapshot(empty, path, USERS, guard)
    assert load_snapshot(path, USERS).version == good.version and Artifact(path).versions() == [good.version]
    with pytest.raises(Rejected, match="the candidate has 0 rows; an empty table"):  # nothing live yet: refused too
        publish_snapshot(empty, tmp_path / "first", USERS)
    assert Artifact(tmp_path / "first").live_version() is None


def test_a_snapshot_with_a_tenth_of_the_users_is_rejected_naming_the_counts(live_users):
    path, good = live_users
    tenth = _subset(good, np.arange(len(good.ids)) % 10 == 0)
    with pytest.raises(Rejected) as rejected:
        publish_snapshot(tenth, path, USERS)
    [audit] = rejected.value.failed
    assert audit.name == "user_features_not_shrunk"
    assert audit.metadata == {"max_shrink_fraction": 0.05, "shrink_allowed": False, "candidate_rows": 500,
                              "live_rows": 5000, "ids_dropped": 4500}
    assert ("users: 500 rows, the live version has 5000 (a fall of 90.00%, more than the 5.00% allowed by "
            "PIPELINE_MAX_SHRINK_FRACTION)") in audit.description
    assert "users: 4500 of the live version's 5000 ids are missing (90.00%" in audit.description
    assert "run with allow_shrink: true" in audit.description
    assert load_snapshot(path, USERS).version == good.version


def test_the_same_number_of_rows_with_other_ids_is_rejected_by_the_ids_dropped(live_users):
    path, good = live_users
    other = _subset(good, np.ones(len(good.ids), bool))
    other.ids = np.where(other.ids % 10 == 0, other.ids + 1_000_000, other.ids)  # 500 users replaced by new ones
    other.ids.sort()
    with pytest.raises(Rejected, match=r"users: 500 of the live version's 5000 ids are missing \(10.00%") as rejected:
        publish_snapshot(other, path, USERS)
    assert "rows, the live version has" not in str(rejected.value)  # the row count did not fall


def test_a_small_shrink_passes_and_a_large_one_passes_when_allowed_or_configured(live_users, monkeypatch):
    path, good = live_users
    within = _subset(good, np.arange(len(good.ids)) % 25 != 0)  # 4% fewer
    published = publish_snapshot(within, path, USERS)
    assert published.version == within.version
    shrink = next(a for a in published.audits if a.name == "user_features_not_shrunk")
    assert shrink.passed and shrink.metadata["ids_dropped"] == 200 and shrink.metadata["live_rows"] == 5000

    tenth = _subset(good, np.arange(len(good.ids)) % 10 == 0)
    allowed = publish_snapshot(tenth, path, USERS, ShrinkGuard(allow=True))
    shrink = next(a for a in allowed.audits if a.name == "user_features_not_shrunk")
    assert shrink.passed and shrink.metadata["shrink_allowed"] is True
    assert shrink.description == "a shrink was allowed by the run (allow_shrink)"
    assert load_snapshot(path, USERS).version == tenth.version

    fraction = load_settings({MAX_SHRINK_SETTING: "0.95"}).publishing.max_shrink_fraction  # as the assets read it
    assert publish_snapshot(_subset(tenth, np.arange(len(tenth.ids)) < 30), path, USERS,
                            ShrinkGuard(fraction)).version  # 94% fewer
    with pytest.raises(SettingsError, match="PIPELINE_MAX_SHRINK_FRACTION: expected a fraction .*'lots'"):
        load_settings({MAX_SHRINK_SETTING: "lots"})
    with pytest.raises(ValueError, match="PIPELINE_MAX_SHRINK_FRACTION: 1.5 is not a fraction"):
        ShrinkGuard(1.5)


def test_an_empty_source_table_read_from_parquet_is_rejected(live_users, tiny_dataset, tmp_path):
    path, good = live_users
    empty_file = tmp_path / "empty.parquet"
    pq.write_table(pq.read_table(tiny_dataset.user_features).slice(0, 0), empty_file)
    with pytest.raises(Rejected, match="0 rows"):
        publish_snapshot(read_source_features(empty_file, USERS), path, USERS)
    assert load_snapshot(path, USERS).version == good.version
