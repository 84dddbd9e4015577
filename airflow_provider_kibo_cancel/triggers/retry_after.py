"""KiboRetryAfterTrigger: wait out Kibo's Retry-After in the triggerer, with the task's state in the event.

The trigger only sleeps. It never calls Kibo: a triggerer restart re-runs a trigger from its serialized
arguments, so a request sent from here could be sent twice; the cancel is always sent by the worker once
the task resumes. The deadline is absolute (epoch seconds), so a restart does not lengthen the wait.

The task's progress travels in the event payload rather than in ``defer(kwargs=...)``: ``airflow dags
test`` resumes a task with the event alone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class KiboRetryAfterTrigger(BaseTrigger):
    """
    Fire once ``resume_at`` (epoch seconds) has passed, handing ``state`` back to the resumed task.

    :param resume_at: when Kibo accepts calls again (now + Retry-After, as the worker computed it).
    :param state: what the task needs to resume where it stopped (JSON: ids and buckets, never orders).
    """

    def __init__(self, resume_at: float, state: dict[str, Any]) -> None:
        super().__init__()  # type: ignore[no-untyped-call,unused-ignore]
        self.resume_at = resume_at
        self.state = state

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"resume_at": self.resume_at, "state": self.state},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        delay = self.resume_at - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        yield TriggerEvent({"state": self.state, "waited_until": time.time()})  # type: ignore[no-untyped-call,unused-ignore]
