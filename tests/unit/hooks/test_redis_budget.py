"""hooks/redis_budget.py without a server: a task's slots across a switch to its own budget and back.
Against a real redis-server: integration/test_tenant_budget*.py."""

from __future__ import annotations

import itertools
import logging
import time
from typing import Any, cast

import pytest
import redis

from airflow_provider_kibo_cancel.hooks import redis_budget
from airflow_provider_kibo_cancel.hooks.redis_budget import RedisTenantBudget

# --- switching between Redis and the per-task fallback ---------------------------------------------------


class SharedSlots:
    """The GCRA state of one tenant in a stand-in Redis: shared by every task's :class:`FlakyStore`."""

    def __init__(self) -> None:
        self.tat = 0.0


class FlakyStore:
    """A stand-in for one task's Redis client: the acquire script as a plain GCRA (no pause, no learned
    rate; "not before" as the script reads it), or a ConnectionError while ``up`` is False. Enough to
    watch tasks switch stores."""

    def __init__(self, slots: SharedSlots | None = None) -> None:
        self.up = True
        self.slots = slots or SharedSlots()

    def register_script(self, source: str) -> Any:
        def run(keys: list[str], args: list[Any]) -> Any:
            if not self.up:
                raise redis.ConnectionError("Connection refused")
            if "'TIME'" in source and "ZADD" in source:  # _ACQUIRE
                cap, counted = float(args[0]), args[1] == 1
                if not counted:
                    return [0, 0, 0, 0]
                now = time.monotonic()
                slot = max(self.slots.tat, now + (int(args[3]) if len(args) > 3 else 0) / 1000)
                self.slots.tat = slot + 1 / cap
                return [0, int((slot - now) * 1000), int(cap * 1000), 0]
            return [0, 0]

        return run

    def pttl(self, key: str) -> int:
        if not self.up:
            raise redis.ConnectionError("Connection refused")
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
