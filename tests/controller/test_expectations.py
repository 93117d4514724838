"""Reading through our own recent writes while the watch catches up, and the reverse indexes."""

from __future__ import annotations

from typing import Any

from controller.expectations import Expectations
from controller.index import GroupIndex, OwnerIndex
from tests.controller.objects import agent, group_obj


def sandbox(name: str, uid: str, rv: str = "1", owner: str = "g-uid", **meta: Any) -> dict[str, Any]:
    return {
        "kind": "Sandbox",
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": uid,
            "resourceVersion": rv,
            "ownerReferences": [{"kind": "AgentGroup", "name": "g", "uid": owner, "controller": True}],
            **meta,
        },
    }


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_created_object_exists_until_the_cache_has_it() -> None:
    e = Expectations()
    made = sandbox("s", "u1")
    e.created("Sandbox", made)
    assert e.view("Sandbox", "ns", "s", None) == made
    assert e.view("Sandbox", "ns", "s", made) == made
    assert e.view("Sandbox", "ns", "s", None) is None  # the cache had it: the expectation is done


def test_a_created_object_the_watch_reported_is_not_resurrected() -> None:
    e = Expectations()
    e.created("Sandbox", sandbox("s", "u1"))
    e.observe("Sandbox", "ADDED", sandbox("s", "u1"))
    e.observe("Sandbox", "DELETED", sandbox("s", "u1"))  # gone again before the next reconcile
    assert e.view("Sandbox", "ns", "s", None) is None


def test_a_deleted_object_is_terminating_until_the_watch_says_it_is_gone() -> None:
    e = Expectations()
    cached = sandbox("s", "u1")
    e.deleted("Sandbox", "ns", "s", "u1")
    seen = e.view("Sandbox", "ns", "s", cached)
    assert seen is not None
    assert seen["metadata"]["deletionTimestamp"]
    e.observe("Sandbox", "DELETED", cached)
    assert e.view("Sandbox", "ns", "s", cached) == cached


def test_expectations_expire() -> None:
    clock = Clock()
    e = Expectations(ttl=30, clock=clock)
    e.created("Sandbox", sandbox("s", "u1"))
    clock.now = 31
    assert e.view("Sandbox", "ns", "s", None) is None
    assert e.pending() == 0


def test_the_group_is_the_newer_of_the_cache_and_our_last_write() -> None:
    e = Expectations()
    old = {"metadata": {"name": "g", "namespace": "ns", "uid": "x", "resourceVersion": "5"}}
    written = {"metadata": {"name": "g", "namespace": "ns", "uid": "x", "resourceVersion": "9"}, "status": {}}
    e.wrote_group(written)
    assert e.group_view(old) is written
    newer = {"metadata": {**written["metadata"], "resourceVersion": "12"}}
    e.observe_group("MODIFIED", newer)
    assert e.group_view(old) is old  # the watch caught up: our copy is forgotten


def test_owner_index_follows_adds_owner_changes_and_deletes() -> None:
    index = OwnerIndex()
    index.update("ADDED", sandbox("a", "1"))
    index.update("ADDED", sandbox("b", "2"))
    assert index.names("ns", "g-uid") == {"a", "b"}
    index.update("MODIFIED", sandbox("b", "2", owner="other"))
    index.update("DELETED", sandbox("a", "1"))
    assert index.names("ns", "g-uid") == set()
    assert index.names("ns", "other") == {"b"}


def test_group_index_maps_sandbox_names_and_runtimes_to_groups() -> None:
    index = GroupIndex()
    obj = group_obj([agent("a", "py", replicas=2), agent("b", "rt", kind="AgentRuntime")])
    obj["metadata"]["namespace"] = "ns"
    index.update("ADDED", obj)
    assert index.groups_naming("ns", "g-a-1") == {"g"}
    assert index.groups_using("ns", "AgentRuntime", "rt") == {"g"}
    index.update("DELETED", obj)
    assert index.groups_naming("ns", "g-a-1") == set()
