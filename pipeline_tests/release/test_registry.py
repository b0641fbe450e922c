"""The registry: decisions add up to roles, inconsistent ones are refused, concurrent writers lose nothing."""

import multiprocessing

import pytest

from pipeline.audits import Rejected
from pipeline.release.registry import FORMER, Decision, InvalidDecision, Registry


def _decide(version, role, reason="because", **fields):
    return Decision(version, role, "tester", reason, **fields)


def test_decisions_add_up_to_roles_and_are_kept_in_order(tmp_path):
    registry = Registry(tmp_path / "registry")
    assert registry.roles().champion is None and registry.decisions() == []
    registry.record(_decide("a", "champion", lineage="la"))
    registry.record(_decide("b", "challenger", lineage="lb"))
    roles = registry.record(_decide("b", "champion", "the judge promoted it"))
    assert (roles.champion, roles.challenger, roles.former_champions) == ("b", None, ["a"])
    assert roles.role_of("a") == FORMER and roles.kept() == {"a", "b"}
    registry.record(_decide("c", "challenger", lineage="lc"))
    roles = registry.record(_decide("c", "retired", "worse on the canary"), _decide("x", "rejected", "worse offline"))
    assert roles.challenger is None and roles.role_of("c") == "retired" and roles.role_of("x") == "rejected"
    assert roles.retired_lineage("lc").reason == "worse on the canary"
    assert roles.retired_lineage("lb") is None  # promoted, not retired
    again = Registry(tmp_path / "registry").roles()  # read back from the published history
    assert [d.version for d in again.history] == ["a", "b", "b", "c", "c", "x"]
    assert again.history[2].by == "tester" and again.history[2].at


def test_inconsistent_decisions_are_refused_and_nothing_is_recorded(tmp_path):
    registry = Registry(tmp_path / "registry")
    registry.record(_decide("a", "champion"), _decide("b", "challenger"))
    version = registry.version()
    with pytest.raises(InvalidDecision, match="while b is one"):
        registry.record(_decide("c", "challenger"))
    with pytest.raises(Rejected, match="no champion"):
        registry.record(_decide("a", "retired"))  # a rollback must name what serves instead
    assert registry.version() == version and registry.roles().champion == "a"
    with pytest.raises(ValueError, match="a decision needs a reason"):
        _decide("a", "retired", " ")
    with pytest.raises(ValueError, match="role must be one of"):
        _decide("a", "king")


def _record_many(path, name, count):
    registry = Registry(path)
    for i in range(count):
        registry.record(Decision(f"{name}-{i}", "rejected", name, "worse offline"))


def test_two_writers_at_once_lose_no_decision(tmp_path):
    path = tmp_path / "registry"
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_record_many, args=(path, name, 15)) for name in ("w1", "w2")]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
        assert writer.exitcode == 0
    decisions = Registry(path).decisions()
    assert sorted(d.version for d in decisions) == sorted(f"{w}-{i}" for w in ("w1", "w2") for i in range(15))
