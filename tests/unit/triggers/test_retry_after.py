"""KiboRetryAfterTrigger: it only sleeps until Kibo's Retry-After has passed, then hands the task's state
back; rebuilt from its ``serialize()`` output (as a triggerer does after a restart) it behaves the same,
and what it serializes holds no secret."""

from __future__ import annotations

import asyncio
import importlib
import json
import time
from typing import Any

import pytest
from airflow.triggers.base import TriggerEvent

from airflow_provider_kibo_cancel._compat import TaskDeferred
from airflow_provider_kibo_cancel.emulator import KiboEmulator
from airflow_provider_kibo_cancel.triggers.retry_after import KiboRetryAfterTrigger
from tests.support import APP_KEY, SHARED_SECRET
from tests.unit.operators.test_ledger import _bulk, _single, context_for

STATE = {"deferred_seconds": 3.0, "canceled": [1001, 1002], "pending": [1003]}


def fire(trigger: KiboRetryAfterTrigger) -> tuple[TriggerEvent, float]:
    """Run the trigger to its first event, as the triggerer does; the event and when it came."""

    async def first() -> TriggerEvent:
        return await anext(aiter(trigger.run()))

    event = asyncio.run(first())
    return event, time.time()


def rebuilt(trigger: KiboRetryAfterTrigger) -> KiboRetryAfterTrigger:
    """The trigger as a triggerer rebuilds it: the class from its path, called with the stored kwargs."""
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    rebuilt_trigger = getattr(importlib.import_module(module), name)(**json.loads(json.dumps(kwargs)))
    assert isinstance(rebuilt_trigger, KiboRetryAfterTrigger)
    return rebuilt_trigger


def test_serialize_names_the_class_and_every_argument() -> None:
    classpath, kwargs = KiboRetryAfterTrigger(resume_at=1234.5, state=STATE).serialize()
    assert classpath == "airflow_provider_kibo_cancel.triggers.retry_after.KiboRetryAfterTrigger"
    assert kwargs == {"resume_at": 1234.5, "state": STATE}
    assert json.loads(json.dumps(kwargs)) == kwargs  # JSON as it is stored in the trigger table


def test_a_trigger_rebuilt_from_serialize_waits_and_fires_as_the_original() -> None:
    resume_at = time.time() + 0.5
    original = KiboRetryAfterTrigger(resume_at=resume_at, state=STATE)
    copy = rebuilt(original)
    assert (copy.resume_at, copy.state) == (original.resume_at, original.state)
    assert copy.serialize() == original.serialize()
    for trigger in (original, copy):
        event, fired_at = fire(trigger)
        assert fired_at >= resume_at  # the deadline is absolute: a rebuilt trigger does not wait longer
        assert event.payload["state"] == STATE
        assert event.payload["waited_until"] >= resume_at


def test_a_deadline_already_past_fires_at_once() -> None:
    started = time.monotonic()
    event, _ = fire(rebuilt(KiboRetryAfterTrigger(resume_at=time.time() - 60, state={})))
    assert time.monotonic() - started < 0.5
    assert event.payload["state"] == {}


def deferred_trigger(operator: Any) -> KiboRetryAfterTrigger:
    """The trigger ``operator`` defers with (its execute() against the emulator, which answers 429)."""
    with pytest.raises(TaskDeferred) as caught:
        operator.execute(context_for(None, 1))
    assert caught.value.method_name == "execute_complete"
    trigger = caught.value.trigger
    assert isinstance(trigger, KiboRetryAfterTrigger)
    return trigger


@pytest.mark.parametrize("operator_kind", ["single", "bulk"])
def test_a_real_deferral_serializes_no_secret_and_rebuilds_the_same(
    kibo_conn: KiboEmulator, operator_kind: str
) -> None:
    kibo_conn.inject("status", status=429, retry_after="60", times=None)
    settings = {"deferrable": True, "defer_threshold": 1}
    operator = (
        _single(1001, **settings) if operator_kind == "single" else _bulk(orders=[1001, 1002], **settings)
    )
    trigger = deferred_trigger(operator)
    serialized = json.dumps(trigger.serialize())
    tokens = kibo_conn.issued_tokens()
    assert tokens, "the operator should have fetched a token before Kibo's 429"
    for secret in (SHARED_SECRET, *tokens):
        assert secret not in serialized
    assert APP_KEY not in serialized  # nothing of the connection travels through the trigger table
    copy = rebuilt(trigger)
    assert copy.serialize() == trigger.serialize()
    assert 55 < copy.resume_at - time.time() <= 60  # Kibo's Retry-After, as an absolute deadline
    assert copy.state["deferred_seconds"] == pytest.approx(60, abs=1)
