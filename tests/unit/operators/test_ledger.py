"""Issue 23, durable runs, in-process: the ledger's encoding and size, a new try resuming from it, the
single cancel's record, the Kibo retry policy, and what happens without a task state store (Airflow
3.0-3.2). The real scheduler path (a SIGKILLed task process, a 429 wall):
tests/integration/test_durable_in_airflow.py.
"""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_kibo_cancel import metrics
from airflow_provider_kibo_cancel.cancel_request import CancelOrderRequest
from airflow_provider_kibo_cancel.emulator import KiboEmulator
from airflow_provider_kibo_cancel.exceptions import KiboBulkCancelError, KiboError
from airflow_provider_kibo_cancel.operators.bulk_cancel import BulkCancelOrdersOperator
from airflow_provider_kibo_cancel.operators.cancel_order import CancelOrderOperator
from airflow_provider_kibo_cancel.operators.encoding import decode_ids, encode_ids
from airflow_provider_kibo_cancel.operators.ledger import (
    LEDGER_KEY,
    SINGLE_KEY,
    SPLIT_BYTES,
    DurableBulkRun,
    Ledger,
    ledger_document,
)
from airflow_provider_kibo_cancel.operators.outcome import (
    ALREADY_CANCELED,
    CANCELED,
    FAILED,
    BulkCancelOutcome,
    compact_outcome,
    restore_outcome,
)
from airflow_provider_kibo_cancel.operators.summary import failure_entry


class FakeStore:
    """``context["task_state_store"]`` as Airflow 3.3 gives it: JSON values per key, kept across tries."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.writes: list[tuple[float, str, int]] = []  # (time, key, bytes)
        self.lock = threading.Lock()

    def get(self, key: str, default: Any = None) -> Any:
        with self.lock:
            value = self.values.get(key)
            return json.loads(json.dumps(value)) if value is not None else default

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        assert value is not None
        text = json.dumps(value)
        with self.lock:
            self.values[key] = json.loads(text)
            self.writes.append((time.monotonic(), key, len(text)))

    def delete(self, key: str) -> None:
        with self.lock:
            self.values.pop(key, None)


class _TaskInstance:
    def __init__(self, try_number: int = 1, max_tries: int = 3) -> None:
        self.pushed: dict[str, Any] = {}
        self.try_number = try_number
        self.max_tries = max_tries

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def context_for(store: FakeStore | None, try_number: int, clear_number: int = 0) -> dict[str, Any]:
    context: dict[str, Any] = {
        "ti": _TaskInstance(try_number),
        "dag_run": SimpleNamespace(clear_number=clear_number),
    }
    if store is not None:
        context["task_state_store"] = store
    return context


def requests_for(ids: list[int]) -> list[CancelOrderRequest]:
    return [CancelOrderRequest.from_raw(i, "created_by_mistake") for i in ids]


def cancels(emu: KiboEmulator) -> list[int]:
    return [r.body["orderId"] for r in emu.requests_to("cancel")]


# --- the encoding the deferral state and the ledger share ----------------------------------------------


def _ten_thousand_orders() -> tuple[list[CancelOrderRequest], BulkCancelOutcome]:
    """10,000 orders settled every way: canceled, canceled already, and 500 failures of three kinds."""
    ids = list(range(1_200_000, 1_210_000))
    outcome = BulkCancelOutcome(elapsed=321.5)
    rng = random.Random(23)
    for order_id in ids:
        outcome.results[order_id] = CANCELED if rng.random() < 0.8 else ALREADY_CANCELED
    errors = [
        KiboError(
            "Kibo POST /api/v2/order/action/cancel failed",
            status=409,
            error_code="VALIDATION_CONFLICT",
            kibo_message="Order {order} cannot be canceled: it has shipped",
            retryable=False,
        ),
        KiboError("Kibo POST /api/v2/order/action/cancel failed after 4 attempt(s): HTTP 503", status=503),
        KiboError("Read timed out", may_have_applied=True, retryable=True),
    ]
    for index, order_id in enumerate(ids[::20]):
        exc = errors[index % 3].replace(order_id=order_id, correlation_id=f"corr-{rng.getrandbits(64):x}")

        outcome.results[order_id] = FAILED
        outcome.failures[order_id] = failure_entry(order_id, exc)
    return requests_for(ids), outcome


def test_the_deferral_state_and_the_ledger_share_the_id_encoding_and_the_ledger_stays_small() -> None:
    requests, outcome = _ten_thousand_orders()
    state = compact_outcome(requests, outcome)
    doc = ledger_document({"epoch": 0, "tenant": "30294", "plan": "x", "try": 1}, requests, outcome)
    ledger_bytes = len(json.dumps(doc))
    print(f"\n10,000 orders: ledger {ledger_bytes} bytes")
    assert ledger_bytes < 16_000  # the default limit is 65,535
    for bucket in (CANCELED, ALREADY_CANCELED):  # the same encoding: the same text
        assert doc[bucket] == state[bucket]
    assert len(doc[FAILED]) == 3  # in the ledger, failures alike share one record
    # A deferral's state keeps each failure whole (the trigger's state is not held to the store's size):
    # after the wait the summary still has Kibo's message and the correlation id.
    assert len(state[FAILED]) == 500
    restored = restore_outcome(state)
    assert restored.results == outcome.results
    failure = restored.failures[1_200_020]
    assert failure["status"] == 503 and failure["error"].startswith("Kibo POST")
    shipped = restored.failures[1_200_000]
    assert "order 1200000" in shipped["error"] and shipped["retryable"] is False
    # Nothing in the ledger is a secret or an order's body; correlation ids and Kibo's items are left out.
    assert "corr-" not in json.dumps(doc) and "orderStatus" not in json.dumps(doc)
    assert "orderStatus" not in json.dumps(state)


def test_ten_thousand_spread_out_ids_fit_under_the_default_limit_and_a_larger_ledger_is_split() -> None:
    rng = random.Random(5)
    ids = sorted(rng.sample(range(1, 1_000_000_000), 10_000))  # the worst case: ids far apart
    outcome = BulkCancelOutcome(results=dict.fromkeys(ids, CANCELED))
    doc = ledger_document({"try": 1}, requests_for(ids), outcome)
    assert len(json.dumps(doc)) < SPLIT_BYTES  # one key, one write
    one_in_ten = list(range(1_000_000, 1_100_000, 10))
    assert len(encode_ids(one_in_ten)) < 14_000
    # Twice as many, for the split: parts under the limit, read back whole, the head written last.
    more = sorted(rng.sample(range(1, 1_000_000_000), 20_000))
    big = ledger_document(
        {"try": 1}, requests_for(more), BulkCancelOutcome(results=dict.fromkeys(more, CANCELED))
    )
    store = FakeStore()
    ledger = Ledger(store)
    ledger.write(big)
    assert all(size < 65_535 for _, _, size in store.writes)
    assert store.writes[-1][1] == LEDGER_KEY and len(store.writes) >= 3
    assert Ledger(store).read() == big
    small = ledger_document({"try": 2}, requests_for([1, 2]), BulkCancelOutcome(results={1: CANCELED}))
    ledger.write(small)
    assert Ledger(store).read() == small


# --- a new try resumes ---------------------------------------------------------------------------------


def _bulk(**kwargs: Any) -> Any:

    return BulkCancelOrdersOperator(
        task_id="bulk", disposition_reason="created_by_mistake", progress_interval=0.5, **kwargs
    )


def _kill_after(emu: KiboEmulator, operator: Any, applied: int) -> threading.Thread:
    def watch() -> None:
        while sum(emu.cancels_applied(i) for i in range(1000, 1100)) < applied:
            time.sleep(0.01)
        operator.on_kill()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_try_that_dies_leaves_a_ledger_the_retry_resumes_from(
    kibo_conn: KiboEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No final write (a SIGKILL): what the ledger had at the last journal write is all the retry gets."""

    kibo_conn.latency = 0.1  # 2 workers: about 20 orders a second
    store = FakeStore()
    orders = list(range(1000, 1100))
    first = _bulk(orders=orders, max_concurrency=2)
    _kill_after(kibo_conn, first, 40)
    with monkeypatch.context() as patch, pytest.raises(KiboBulkCancelError):
        patch.setattr(DurableBulkRun, "save", lambda self, outcome: None)  # dies: no write at the end
        first.execute(context_for(store, 1))
    sent_first = cancels(kibo_conn)
    ledger = Ledger(store).read()
    assert ledger is not None
    pending = set(decode_ids(ledger["maybe_applied"]))
    settled = set(decode_ids(ledger[CANCELED]))
    # The ledger lists every order sent before its last write as settled or pending (written before
    # they went out): what it misses is only what settled after that write.
    assert set(sent_first) - settled - pending == set(), "an order went out before it was listed"
    # In flight plus one block (1.5 s at about 20 orders/s), not the whole remainder.
    assert len(pending) <= 2 + 35, len(pending)

    context = context_for(store, 2)
    summary = _bulk(orders=orders, max_concurrency=2).execute(context)
    sent_again = cancels(kibo_conn)[len(sent_first) :]
    resent = set(sent_again) & set(sent_first)
    assert resent <= pending | (set(sent_first) - settled)
    assert summary["canceled"] == orders  # the first try's cancels stay canceled: none already_canceled
    assert summary["already_canceled"] == [] and summary["failed"] == []
    assert all(kibo_conn.cancels_applied(i) == 1 for i in orders)
    assert context["ti"].pushed["summary"] == summary


def test_a_retry_after_one_failing_order_sends_only_that_order(kibo_conn: KiboEmulator) -> None:
    kibo_conn.inject("status", status=503, order_id=1050, times=None)
    store = FakeStore()
    orders = list(range(1000, 1100))
    with pytest.raises(KiboBulkCancelError) as caught:
        _bulk(orders=orders).execute(context_for(store, 1))
    assert caught.value.retryable
    first = len(cancels(kibo_conn))
    kibo_conn.clear_faults()
    summary = _bulk(orders=orders).execute(context_for(store, 2))
    assert cancels(kibo_conn)[first:] == [1050]
    assert [r.path for r in kibo_conn.requests_to("get_order")] == [
        "/api/v2/order/1050"  # its 503s may have been applied: found canceled, it is this run's
    ] or kibo_conn.requests_to("get_order") == []
    assert summary["canceled"] == orders and summary["already_canceled"] == []


def test_a_permanent_failure_stays_settled_and_is_not_sent_again(kibo_conn: KiboEmulator) -> None:
    store = FakeStore()
    orders = [1001, 3000, 1002]  # 3000 is COMPLETED: Kibo refuses its cancel (409)
    with pytest.raises(Exception, match="1 failed"):
        _bulk(orders=orders).execute(context_for(store, 1))
    first = len(cancels(kibo_conn))
    with pytest.raises(Exception, match="1 failed"):
        _bulk(orders=orders).execute(context_for(store, 2))
    assert cancels(kibo_conn)[first:] == []
    store_summary = Ledger(store).read()
    assert store_summary is not None and store_summary["try"] == 2


def test_a_changed_plan_keeps_what_kibo_settled_for_orders_still_in_it(kibo_conn: KiboEmulator) -> None:
    store = FakeStore()
    _bulk(orders=[1001, 1002, 1003]).execute(context_for(store, 1))
    first = len(cancels(kibo_conn))
    summary = _bulk(orders=[1002, 1003, 1004]).execute(context_for(store, 2))
    assert cancels(kibo_conn)[first:] == [1004]
    assert summary["canceled"] == [1002, 1003, 1004]


def test_a_cleared_task_instance_starts_afresh(kibo_conn: KiboEmulator) -> None:
    store = FakeStore()
    _bulk(orders=[1001, 1002]).execute(context_for(store, 1, clear_number=0))
    first = len(cancels(kibo_conn))
    summary = _bulk(orders=[1001, 1002]).execute(context_for(store, 2, clear_number=1))
    assert sorted(cancels(kibo_conn)[first:]) == [1001, 1002]  # sent by two workers at once
    assert summary["already_canceled"] == [1001, 1002]


def test_another_tenant_starts_afresh(kibo_conn: KiboEmulator) -> None:
    store = FakeStore()
    _bulk(orders=[1001]).execute(context_for(store, 1))
    doc = store.values[LEDGER_KEY]
    store.values[LEDGER_KEY] = {**doc, "tenant": "99999"}
    _bulk(orders=[1001]).execute(context_for(store, 2))
    assert cancels(kibo_conn) == [1001, 1001]


def test_metrics_count_each_order_once_per_dag_run(
    kibo_conn: KiboEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:

    counted: dict[str, int] = {}

    def count(outcome: str, count: int = 1) -> None:
        counted[outcome] = counted.get(outcome, 0) + count

    monkeypatch.setattr(metrics, "cancel_outcome", count)
    kibo_conn.inject("status", status=503, order_id=1005, times=None)
    store = FakeStore()
    orders = list(range(1000, 1010))
    with pytest.raises(KiboBulkCancelError):
        _bulk(orders=orders).execute(context_for(store, 1))
    kibo_conn.clear_faults()
    _bulk(orders=orders).execute(context_for(store, 2))
    assert {outcome: count for outcome, count in counted.items() if count} == {"canceled": 10}


def test_the_ledger_is_written_at_least_every_second_and_not_much_more(kibo_conn: KiboEmulator) -> None:
    kibo_conn.latency = 0.05
    store = FakeStore()
    started = time.monotonic()
    _bulk(orders=list(range(1000, 1100)), max_concurrency=2).execute(context_for(store, 1))
    elapsed = time.monotonic() - started
    times = [at for at, key, _ in store.writes if key == LEDGER_KEY]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    print(f"\n{len(times)} ledger writes in {elapsed:.1f} s ({len(times) / elapsed:.1f}/s)")
    assert max(gaps) < 1.5
    assert len(times) / elapsed < 4


def test_without_a_task_state_store_each_try_starts_afresh_with_a_note(
    kibo_conn: KiboEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    operator = _bulk(orders=[1001, 1002])
    lines: list[str] = []
    monkeypatch.setattr(operator.log, "info", lambda msg, *args: lines.append(msg % args))
    summary = operator.execute(context_for(None, 1))
    assert summary["canceled"] == [1001, 1002]
    assert [line for line in lines if "durable=True has no effect" in line] == [
        "durable=True has no effect here: the task context has no task state store (Airflow 3.3+ gives one "
        "to every running task): each try starts afresh"
    ]
    assert _bulk(orders=[1001, 1002]).execute(context_for(None, 2))["already_canceled"] == [1001, 1002]


def test_durable_false_keeps_no_ledger(kibo_conn: KiboEmulator) -> None:
    store = FakeStore()
    _bulk(orders=[1001], durable=False).execute(context_for(store, 1))
    assert store.values == {}
    with pytest.raises(Exception, match="durable must be True or False"):
        _bulk(orders=[1001], durable="yes").execute(context_for(store, 1))


# --- one order -----------------------------------------------------------------------------------------


def _single(order_id: int, **kwargs: Any) -> Any:

    return CancelOrderOperator(
        task_id="single", order_id=order_id, disposition_reason="created_by_mistake", **kwargs
    )


def test_a_single_cancel_sent_by_a_try_that_died_counts_as_this_runs(
    kibo_conn: KiboEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FakeStore()
    # Try 1 recorded its cancel before sending it, then died with the cancel applied (order 2001 is
    # canceled at Kibo now).
    store.values[SINGLE_KEY] = {
        "v": 1, "epoch": 0, "tenant": "30294", "order_id": 2001, "try": 1, "may_have_applied": True
    }  # fmt: skip
    operator = _single(2001)
    lines: list[str] = []
    monkeypatch.setattr(operator.log, "info", lambda msg, *args: lines.append(msg % args))
    order = operator.execute(context_for(store, 2))
    assert order["orderStatus"] == "CANCELED"
    assert "Order 2001: orderStatus CANCELED" in lines
    assert not any("was canceled already" in line for line in lines)
    # Without the record (or in another epoch), the same order is canceled already.
    other = _single(2002)
    lines.clear()
    monkeypatch.setattr(other.log, "info", lambda msg, *args: lines.append(msg % args))
    other.execute(context_for(store, 2))
    assert "Order 2002 was canceled already; nothing to do" in lines


def test_a_single_cancel_records_that_it_is_sent_before_sending(kibo_conn: KiboEmulator) -> None:
    store = FakeStore()
    seen: list[Any] = []
    original = KiboEmulator._cancel

    def cancel(self: KiboEmulator, body: Any) -> Any:
        seen.append(store.values.get(SINGLE_KEY))
        return original(self, body)

    KiboEmulator._cancel = cancel  # type: ignore[method-assign]
    try:
        _single(1001).execute(context_for(store, 1))
    finally:
        KiboEmulator._cancel = original  # type: ignore[method-assign]
    assert seen and seen[0]["order_id"] == 1001 and seen[0]["may_have_applied"] is True
