"""hooks/redis_budget.py without a server: a task's slots across a switch to its own budget and back.
Against a real redis-server: integration/test_tenant_budget*.py."""

from __future__ import annotations

import itertools
import logging
import time
from types import SimpleNamespace
from typing import Any, cast

import pytest
import redis

from airflow_provider_kibo_cancel.hooks import redis_budget, tenant_budget
from airflow_provider_kibo_cancel.hooks.redis_budget import RedisTenantBudget

# --- switching between Redis and the per-task fallback ---------------------------------------------------


class SharedSlots:
    """The GCRA state and the holders of one tenant in a stand-in Redis: shared by every task's
    :class:`FlakyStore`."""

    def __init__(self) -> None:
        self.tat = 0.0
        self.holders: dict[str, float] = {}  # holder id -> when it sends (the last slot it took)


class FlakyStore:
    """A stand-in for one task's Redis client: the acquire script as a plain GCRA (no pause, no learned
    rate; "not before" and the holders as the script reads them), or a ConnectionError while ``up`` is
    False. Enough to watch tasks switch stores."""

    def __init__(self, slots: SharedSlots | None = None) -> None:
        self.up = True
        self.slots = slots or SharedSlots()
        self.acquired = 0  # counted acquire scripts run
        self.retakes = 0  # of them, slots taken again (not counted again as sent)
        self.pttl_takes = 0.0  # seconds each pause check takes (a stalled Redis, under its timeout)
        self.latency = 0.0  # seconds every call takes (a Redis far away)

    def register_script(self, source: str) -> Any:
        def run(keys: list[str], args: list[Any]) -> Any:
            if not self.up:
                raise redis.ConnectionError("Connection refused")
            time.sleep(self.latency)
            if "'INCR'" in source:  # ACQUIRE
                cap, counted = float(args[0]), args[1] == 1
                if not counted:
                    return [0, 0, 0, 0, 0]
                self.acquired += 1
                self.retakes += int(args[6]) if len(args) > 6 else 0
                now = time.monotonic()
                slot = max(self.slots.tat, now + int(args[3]) / 1000)
                self.slots.tat = slot + 1 / cap
                holders = self.slots.holders
                holders[args[4]] = slot  # held until it sends, and a window after
                for holder in [h for h, until in holders.items() if until < now - int(args[5]) / 1000]:
                    del holders[holder]
                return [0, int((slot - now) * 1000), int(cap * 1000), 0, len(holders)]
            return [0, 0, 1]  # RATE_LIMITED: no cut, one holder

        return run

    def pttl(self, key: str) -> int:
        if not self.up:
            raise redis.ConnectionError("Connection refused")
        time.sleep(self.latency + self.pttl_takes)
        return -2


def budget_on(store: FlakyStore, cap: float = 20.0) -> RedisTenantBudget:
    return RedisTenantBudget(
        cast(Any, store), tenant_id="30294", environment="sandbox", cap=cap, log=logging.getLogger("test")
    )


def reserve(budget: RedisTenantBudget, count: int) -> list[float]:
    """Slots for ``count`` requests, as moments (monotonic) the requests may go out."""
    moments = []
    for _ in range(count):
        paused, wait = budget.acquire(counted=True)
        assert paused == 0
        moments.append(time.monotonic() + wait)
    return moments


def assert_after_and_spaced(held: list[float], then: list[float], cap: float = 20.0) -> None:
    """The slots ``then`` come after those ``held`` and one interval apart: no two sent side by side."""
    assert min(then) >= max(held) + 1 / cap - 0.01, (held, then)
    assert all(later - first >= 1 / cap - 0.01 for first, later in itertools.pairwise(then)), then


def test_a_task_that_loses_redis_keeps_the_slots_it_reserved_there() -> None:
    # Ten slots reserved through Redis at 20/s reach 0.45 s ahead; the fallback's first slot comes after
    # them, not at once beside them (that was a burst of up to twice the cap at each switch).
    store = FlakyStore()
    budget = budget_on(store)
    through_redis = reserve(budget, 10)
    store.up = False
    local = reserve(budget, 3)
    assert_after_and_spaced(through_redis, local)
    assert "shared store unreachable" in budget.describe()


def test_a_task_back_on_redis_keeps_the_slots_it_reserved_on_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_budget, "RETRY_STORE_AFTER", 0.0)  # Redis is tried again at the next call
    store = FlakyStore()
    store.up = False
    budget = budget_on(store)
    on_its_own = reserve(budget, 10)
    store.up = True
    back = reserve(budget, 3)
    assert_after_and_spaced(on_its_own, back)
    assert budget.describe().startswith("shared in")


def test_a_task_back_on_redis_leaves_redis_knowing_the_slots_it_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    # Back on Redis, task A's first slot there is after the ones it took on its own, so Redis's next free
    # slot follows A's real sends: task B, starting then, gets the slot after them, not one A still uses.
    monkeypatch.setattr(redis_budget, "RETRY_STORE_AFTER", 0.0)
    slots = SharedSlots()
    store_a, store_b = FlakyStore(slots), FlakyStore(slots)
    task_a = budget_on(store_a)
    reserve(task_a, 5)
    store_a.up = False
    on_its_own = reserve(task_a, 10)
    store_a.up = True
    back = reserve(task_a, 2)
    task_b = reserve(budget_on(store_b), 2)
    assert min(back) >= max(on_its_own) + 1 / 20 - 0.01, (on_its_own, back)
    assert min(task_b) >= max(back) + 1 / 20 - 0.01, (back, task_b)


def rate_of(moments: list[float]) -> float:
    """Requests per second the slots ``moments`` allow."""
    return (len(moments) - 1) / (max(moments) - min(moments))


def test_tasks_that_lose_redis_together_share_the_rate_they_had() -> None:
    # Four tasks share 20/s through Redis; a stall or a failover loses it for all at once. Each goes on
    # at its share, 5/s, so together they stay within the 20/s: each at the whole 20/s was 80/s, a 429
    # for every task (and Kibo's Retry-After of up to an hour).
    slots = SharedSlots()
    stores = [FlakyStore(slots) for _ in range(4)]
    tasks = [budget_on(store) for store in stores]
    for _ in range(2):  # taking turns, as running tasks do: each has seen the four of them
        for task in tasks:
            reserve(task, 1)
    for store in stores:
        store.up = False
    for task in tasks:
        assert task.share() == pytest.approx(5.0)
        on_its_own = reserve(task, 6)
        assert rate_of(on_its_own) == pytest.approx(5.0, rel=0.02), on_its_own
        assert "5.0 requests/s" in task.describe()


def test_a_task_alone_on_the_budget_keeps_all_of_it_when_redis_goes(caplog: pytest.LogCaptureFixture) -> None:
    store = FlakyStore()
    task = budget_on(store)
    reserve(task, 2)
    store.up = False
    with caplog.at_level(logging.WARNING):
        on_its_own = reserve(task, 6)
    assert rate_of(on_its_own) == pytest.approx(20.0, rel=0.02), on_its_own
    assert "its share of the shared rate, 20.0 requests/s" in caplog.text


def test_a_task_that_never_reached_redis_says_its_cap_is_its_own(caplog: pytest.LogCaptureFixture) -> None:
    # It cannot know how many others draw on the budget: the cap, for this task alone, and said so.
    store = FlakyStore()
    store.up = False
    with caplog.at_level(logging.WARNING):
        on_its_own = reserve(budget_on(store), 6)
    assert rate_of(on_its_own) == pytest.approx(20.0, rel=0.02), on_its_own
    assert "tenant_requests_per_second, 20 requests/s, for this task alone" in caplog.text


def test_a_later_outage_starts_from_the_share_then(monkeypatch: pytest.MonkeyPatch) -> None:
    # Alone at the first outage (all of the 20/s); by the second a second task shares it: 10/s.
    monkeypatch.setattr(redis_budget, "RETRY_STORE_AFTER", 0.0)
    slots = SharedSlots()
    store_a, store_b = FlakyStore(slots), FlakyStore(slots)
    task_a, task_b = budget_on(store_a), budget_on(store_b)
    reserve(task_a, 2)
    store_a.up = False
    assert rate_of(reserve(task_a, 4)) == pytest.approx(20.0, rel=0.02)
    store_a.up = True
    reserve(task_b, 1)
    reserve(task_a, 1)
    store_a.up = False
    assert task_a.share() == pytest.approx(10.0)
    assert rate_of(reserve(task_a, 4)) == pytest.approx(10.0, rel=0.02)


def test_a_holder_that_stopped_taking_slots_no_longer_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_budget, "HOLDER_WINDOW", 0.2)
    slots = SharedSlots()
    finished, running = budget_on(FlakyStore(slots)), budget_on(FlakyStore(slots))
    reserve(finished, 1)
    reserve(running, 1)
    assert running.share() == pytest.approx(10.0)
    time.sleep(0.25)
    reserve(running, 1)
    assert running.share() == pytest.approx(20.0)


def test_a_slot_lost_with_the_store_is_taken_again_from_the_fallback() -> None:
    # A thread slept to its Redis slot; the pause check then finds Redis gone. Sent at once, every such
    # thread of every task would go out together beside the fallback's own slots: it waits for one.
    store = FlakyStore()
    budget = budget_on(store)
    assert budget.confirm_slot() == (0.0, 0.0)  # Redis up, no pause: the slot stands
    reserve(budget, 10)  # through Redis at 20/s: 0.45 s ahead
    store.up = False
    paused, wait = budget.confirm_slot()
    assert paused == 0 and wait >= 0.45, wait
    assert budget.confirm_slot() == (0.0, 0.0)  # on its own budget now: a slot there is never lost


def test_a_slot_of_the_fallback_stands_when_the_store_is_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # The fallback's slot is a whole wait away; meanwhile the time to try Redis again comes (and Redis is
    # still down). Re-taking the slot at each try put the request at the back of the queue again: one
    # that waits longer than RETRY_STORE_AFTER never went out.
    monkeypatch.setattr(redis_budget, "RETRY_STORE_AFTER", 0.0)
    store = FlakyStore()
    store.up = False
    budget = budget_on(store)
    reserve(budget, 5)
    assert budget.confirm_slot() == (0.0, 0.0)


def test_a_share_under_one_request_a_second_is_told_as_it_is(caplog: pytest.LogCaptureFixture) -> None:
    slots = SharedSlots()
    stores = [FlakyStore(slots) for _ in range(12)]
    tasks = [budget_on(store, cap=1.0) for store in stores]
    for task in tasks:
        task.acquire(counted=True)
    stores[-1].up = False
    with caplog.at_level(logging.WARNING):
        tasks[-1].acquire(counted=True)
    assert "its share of the shared rate, 0.083 requests/s" in caplog.text


def test_a_slot_confirmed_through_a_stalled_redis_is_taken_again_once() -> None:
    # Redis answers the pause check only after a stall (0.3 s, under its timeout): every thread whose
    # slot fell in the stall is answered at once and would go out together. The slot is taken again
    # (not counted again as sent); once, so a Redis slow at every call still lets the request go out.
    store = FlakyStore()
    budget = budget_on(store)
    reserve(budget, 1)
    store.pttl_takes = 0.3  # the first check already: measured against the acquire that gave the slot
    paused, _ = budget.confirm_slot()
    assert paused == 0 and (store.acquired, store.retakes) == (2, 1)
    assert budget.confirm_slot() == (0.0, 0.0)
    assert (store.acquired, store.retakes) == (2, 1)
    reserve(budget, 1)  # a new request: its own chance of one re-take
    budget.confirm_slot()
    assert (store.acquired, store.retakes) == (4, 2)


def test_a_redis_that_is_always_slow_is_not_a_stall() -> None:
    # A Redis far away (every call 0.3 s) is measured against its own quickest call, not the 0.2 s: its
    # slots stand (re-taking each would halve the tenant's rate).
    store = FlakyStore()
    store.latency = 0.3
    budget = budget_on(store)
    for _ in range(3):
        reserve(budget, 1)
        assert budget.confirm_slot() == (0.0, 0.0)
    assert (store.acquired, store.retakes) == (3, 0)


def test_a_fallback_holds_to_its_share_however_long_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    # The share is the fallback's cap, not a learned rate that successes raise (1.7 % a minute, to the
    # whole tenant_requests_per_second for each task: four tasks at 40/s against 20 after an hour).
    slots = SharedSlots()
    stores = [FlakyStore(slots) for _ in range(4)]
    tasks = [budget_on(store) for store in stores]
    for _ in range(2):
        for task in tasks:
            reserve(task, 1)
    stores[0].up = False
    reserve(tasks[0], 1)
    clock = [time.monotonic()]
    monkeypatch.setattr(tenant_budget, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    for _ in range(3600):  # an hour of successes, one a second
        clock[0] += 1.0
        tasks[0].succeeded()
    assert tasks[0].describe() == "per task, 5.0 requests/s (shared store unreachable)"


class CutStore(FlakyStore):
    """A stand-in whose 429 cut sets the rate to 1/s (the learned rate's floor)."""

    def register_script(self, source: str) -> Any:
        run = super().register_script(source)
        if "local pause =" not in source:  # only RATE_LIMITED
            return run
        return lambda keys, args: [1, 1000, 1] if self.up else run(keys, args)


def test_a_fallback_never_runs_above_tenant_requests_per_second() -> None:
    # A cut to the 1/s floor under a cap of 0.5/s, then Redis goes before the next slot: the fallback is
    # held to the cap, not to the 1/s the cut told.
    store = CutStore()
    budget = budget_on(store, cap=0.5)
    reserve(budget, 1)
    budget.rate_limited(0.01)
    store.up = False
    budget.acquire(counted=True)
    assert budget.describe() == "per task, 0.5 requests/s (shared store unreachable)"
