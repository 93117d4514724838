"""Leader election on a Lease: one leader, expiry on our own clock, release on stop, loss of the lease."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from controller.leader import LeaderConfig, LeaderElector
from shared.kube.raw import ApiError
from shared.kube.resources import LEASES
from tests.controller.fake_api import FakeApi
from tests.controller.harness import wait_until

pytestmark = pytest.mark.anyio

FAST = {"lease_duration": 10.0, "renew_deadline": 0.2, "retry_period": 0.01}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def elector(api: FakeApi, identity: str, clock: Clock) -> LeaderElector:
    return LeaderElector(api, LeaderConfig("lease", "ns", identity, **FAST), clock=clock)


def holder(api: FakeApi) -> str | None:
    lease = api.obj(LEASES, "lease", "ns")
    return None if lease is None else lease["spec"].get("holderIdentity")


async def lead_until_told(stop: asyncio.Event) -> None:
    await stop.wait()


async def test_the_first_candidate_leads_and_the_lease_names_it() -> None:
    api, clock, stop = FakeApi(), Clock(), asyncio.Event()
    one = elector(api, "one", clock)
    task = asyncio.create_task(one.run(stop, lead_until_told))
    await wait_until(lambda: one.is_leader, "leadership")
    assert holder(api) == "one"
    assert REGISTRY.get_sample_value("leader_election_master_status", {"name": "lease"}) == 1
    stop.set()
    assert await task is True


async def test_a_held_lease_is_taken_only_after_it_expires_on_our_clock() -> None:
    api, clock = FakeApi(), Clock()
    leader_stop, standby_stop = asyncio.Event(), asyncio.Event()
    one, two = elector(api, "one", clock), elector(api, "two", clock)
    leading = asyncio.create_task(one.run(leader_stop, lead_until_told))
    await wait_until(lambda: one.is_leader, "the first leader")
    api.fail("get", LEASES, ApiError(0, "ConnectionError", "the leader's network is gone"))
    api.faults *= 1000  # the leader can no longer renew
    standby = asyncio.create_task(two.run(standby_stop, lead_until_told))
    clock.now += FAST["renew_deadline"] + 0.1
    assert await asyncio.wait_for(leading, 5) is False  # lost: it could not renew within the deadline
    api.faults.clear()
    await wait_until(
        lambda: holder(api) == "one" and two._observed is not None, "the standby to see the lease"
    )
    assert not two.is_leader  # still valid for lease_duration on the standby's clock
    clock.now += FAST["lease_duration"] + 1
    await wait_until(lambda: two.is_leader, "the standby to take over")
    assert holder(api) == "two"
    assert api.obj(LEASES, "lease", "ns")["spec"]["leaseTransitions"] == 1  # type: ignore[index]
    standby_stop.set()
    await standby


async def test_a_graceful_stop_releases_the_lease_for_the_next_candidate_at_once() -> None:
    api, clock = FakeApi(), Clock()
    stop_one, stop_two = asyncio.Event(), asyncio.Event()
    one, two = elector(api, "one", clock), elector(api, "two", clock)
    first = asyncio.create_task(one.run(stop_one, lead_until_told))
    await wait_until(lambda: one.is_leader, "the first leader")
    second = asyncio.create_task(two.run(stop_two, lead_until_told))
    stop_one.set()
    assert await first is True
    assert holder(api) is None
    await wait_until(lambda: two.is_leader, "the second candidate, without waiting for expiry")
    stop_two.set()
    await second


async def test_losing_the_lease_stops_the_leader_work() -> None:
    api, clock, stop = FakeApi(), Clock(), asyncio.Event()
    one = elector(api, "one", clock)
    told = asyncio.Event()

    async def lead(stop_leading: asyncio.Event) -> None:
        await stop_leading.wait()
        told.set()

    task = asyncio.create_task(one.run(stop, lead))
    await wait_until(lambda: one.is_leader, "leadership")
    lease = api.obj(LEASES, "lease", "ns")
    assert lease is not None
    lease["spec"]["holderIdentity"] = "usurper"  # someone else took it over
    clock.now += FAST["renew_deadline"] + 0.1
    assert await asyncio.wait_for(task, 5) is False
    assert told.is_set()
    assert not one.is_leader
