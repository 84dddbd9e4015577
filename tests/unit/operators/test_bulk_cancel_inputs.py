"""Issue 20, the inputs side: strings never iterated as orders, races of the progress line, an idle wait
that does not spin, messages that say what happened, a typo'd reason that stops a run, asset events only
for a run that canceled something. In-process, real HTTP to the emulator."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from types import MappingProxyType
from typing import Any

import pytest

from airflow_provider_kibo_cancel import assets
from airflow_provider_kibo_cancel._compat import AirflowFailException
from airflow_provider_kibo_cancel.bulk_plan import plan_bulk_cancel
from airflow_provider_kibo_cancel.cancel_request import CancelOrderRequest, CancelResult
from airflow_provider_kibo_cancel.emulator import KiboEmulator
from airflow_provider_kibo_cancel.exceptions import (
    KiboBulkCancelError,
    KiboRateLimitError,
    KiboValidationError,
)
from airflow_provider_kibo_cancel.hooks.kibo import KiboHook
from airflow_provider_kibo_cancel.operators.bulk_cancel import BulkCancelOrdersOperator
from airflow_provider_kibo_cancel.operators.bulk_runner import BulkRun
from airflow_provider_kibo_cancel.operators.cancel_order import CancelOrderOperator
from airflow_provider_kibo_cancel.operators.deferral import defer_until_kibo_accepts
from tests.support import Connect, assert_no_retry, permanent_errors


class _TaskInstance:
    """Just enough of a task instance for execute(): XCom pushes are kept."""

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


# --- finding 1: a string is never iterated as orders ---------------------------------------------------


@pytest.mark.parametrize(
    "orders",
    [
        '"1001"',  # {{ ... | tojson }} of a string
        "'9001'",  # a quoting mistake
        '"57, 58"',
        b'"1001"',
        '{"order_id": 1001}',  # a JSON object, not a list
        "1001.5",
        "null",
        "cancel 1001 please",
        1313,  # one number: the contract takes a list
        {"order_id": 1313},
    ],
)
def test_a_value_that_is_not_a_list_is_refused_saying_how_to_pass_one(orders: Any) -> None:
    with pytest.raises(KiboValidationError) as caught:
        plan_bulk_cancel(orders, "created_by_mistake")
    message = str(caught.value)
    assert message.startswith("Invalid cancel request, nothing was sent: orders must be a list")
    shown = orders.decode() if isinstance(orders, bytes) else orders
    assert repr(shown)[:40] in message  # names the value
    assert "[1311, 1312]" in message and "| tojson" in message  # says how to pass a list


@pytest.mark.parametrize(
    ("orders", "expected"),
    [
        ("1313", [1313]),
        ("1301, 1302", [1301, 1302]),
        (" 1301,1302 1303 ", [1301, 1302, 1303]),
        ("[1311, 1312]", [1311, 1312]),  # JSON, or Jinja's rendering of a list
        ("[{'order_id': 1311}, 1312]", [1311, 1312]),  # Python's repr of a list
        (b"[1311]", [1311]),
        ('["1311", {"order_id": "1312"}]', [1311, 1312]),  # digit strings inside a list are ids
    ],
)
def test_text_of_order_ids_is_read_the_same_for_one_order_and_for_many(
    orders: Any, expected: list[int]
) -> None:
    assert [r.order_id for r in plan_bulk_cancel(orders, "created_by_mistake").requests] == expected


def test_a_quoted_id_inside_the_list_is_an_invalid_entry_not_its_digits() -> None:
    plan = plan_bulk_cancel(['"1001"', {"order_id": "57, 58"}, 1002], "created_by_mistake")
    assert [r.order_id for r in plan.requests] == [1002]
    assert [i["input"] for i in plan.invalid] == ['"1001"', {"order_id": "57, 58"}]


def test_a_json_string_of_orders_sends_nothing(kibo_conn: KiboEmulator) -> None:

    operator = BulkCancelOrdersOperator(
        task_id="bulk", orders='"1001"', disposition_reason="created_by_mistake"
    )
    with pytest.raises(permanent_errors(), match="orders must be a list") as caught:
        operator.execute({"ti": _TaskInstance()})  # type: ignore[typeddict-item]
    assert_no_retry(operator, caught.value)
    assert kibo_conn.requests == []


# --- finding 3: a progress line never races the workers ------------------------------------------------


@pytest.fixture
def fast_switches() -> Iterator[None]:
    """Threads switch far more often than by default: a read racing the workers' writes shows at once."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def test_progress_lines_while_workers_insert_do_not_stop_the_run(
    kibo_conn: KiboEmulator, monkeypatch: pytest.MonkeyPatch, fast_switches: None
) -> None:

    # The token comes from the emulator over HTTP; each cancel answers at once (the race is in this
    # process: workers inserting results while the progress line walks them).
    def instant_cancel(self: KiboHook, request: CancelOrderRequest, **_: Any) -> CancelResult:
        return CancelResult({"id": request.order_id, "orderStatus": "CANCELED"}, already_canceled=False)

    monkeypatch.setattr(KiboHook, "cancel", instant_cancel)
    operator = BulkCancelOrdersOperator(
        task_id="bulk",
        orders=list(range(1, 60_001)),
        disposition_reason="created_by_mistake",
        max_orders=None,
        progress_interval=1e-4,
    )
    lines: list[str] = []
    monkeypatch.setattr(operator.log, "info", lambda msg, *args: lines.append(msg % args))
    summary = operator.execute({"ti": _TaskInstance()})  # type: ignore[typeddict-item]
    assert len(summary["canceled"]) == 60_000 and summary["halted"] is None
    progress = [line for line in lines if line.startswith("Bulk cancel progress")]
    assert len(progress) > 10  # the race was exercised
    assert progress[-1].startswith("Bulk cancel progress: 60000/60000 done (100%)")


# --- finding 11: waiting for the workers does not spin ---------------------------------------------------


def test_a_run_without_a_progress_callback_waits_without_spinning(
    emulator: KiboEmulator, connect: Connect
) -> None:

    hook = connect(emulator, "kibo_faults")
    hook.authenticate()
    emulator.latency = 1.5  # the workers wait on the wire; the thread in run() has nothing to do
    plan = plan_bulk_cancel([1001, 1002], "created_by_mistake")
    cpu_before, wall_before = time.thread_time(), time.monotonic()
    outcome = BulkRun(hook, plan.requests, max_concurrency=2).run(progress_interval=0.1)
    cpu, wall = time.thread_time() - cpu_before, time.monotonic() - wall_before
    assert outcome.count("canceled") == 2 and wall >= 1.5
    assert cpu < 0.2, f"the waiting thread used {cpu:.2f} s of CPU in {wall:.2f} s"


# --- finding 10: messages and summaries that say what happened ----------------------------------------


def test_a_run_stopped_by_max_deferred_wait_says_so(kibo_conn: KiboEmulator) -> None:

    kibo_conn.inject("status", status=429, retry_after="600", times=None)
    operator = BulkCancelOrdersOperator(
        task_id="bulk",
        orders=[1001, 1002, 1003],
        disposition_reason="created_by_mistake",
        max_concurrency=1,
        deferrable=True,
        defer_threshold=1,
        max_deferred_wait=10,
    )
    ti = _TaskInstance()
    with pytest.raises(KiboBulkCancelError) as caught:
        operator.execute({"ti": ti})  # type: ignore[typeddict-item]
    message = str(caught.value)
    assert "beyond max_deferred_wait (10 s in all)" in message
    assert "max_retry_wait" not in message
    assert "continues where this one stopped" not in message
    assert "A task retry of a durable run (Airflow 3.3+) sends only what is left" in message
    assert ti.pushed["summary"]["halted"] == "rate_limited"


def test_the_deferral_refusal_does_not_promise_a_retry_continues() -> None:

    with pytest.raises(KiboRateLimitError) as caught:
        defer_until_kibo_accepts(None, wait=600, state={}, max_deferred_wait=10)  # type: ignore[arg-type]
    assert "continues where this one stopped" not in str(caught.value)
    assert "an order canceled meanwhile (by this run too) is reported already_canceled" in str(caught.value)


def test_a_real_run_refused_by_max_orders_is_no_dry_run(kibo_conn: KiboEmulator) -> None:

    operator = BulkCancelOrdersOperator(
        task_id="bulk", orders=[1001, 1002, "x"], disposition_reason="created_by_mistake", max_orders=1
    )
    ti = _TaskInstance()
    with pytest.raises(AirflowFailException, match="Refusing to cancel 2 orders"):
        operator.execute({"ti": ti})  # type: ignore[typeddict-item]
    summary = ti.pushed["summary"]
    assert summary["dry_run"] is False
    assert summary["halted"] == "max_orders"
    assert summary["would_cancel"] == summary["not_attempted"] == [1001, 1002]
    assert summary["canceled"] == [] and [i["input"] for i in summary["invalid"]] == ["x"]
    assert kibo_conn.requests_to("cancel") == []


def test_an_explicit_none_in_an_entry_means_the_operators_default() -> None:
    rows = [
        {"order_id": 1001, "disposition_reason": None},  # a CSV's `row["reason"] or None`
        {"order_id": 1002, "disposition_reason": None, "disposition_other_reason": None},
        {"order_id": 1003, "disposition_reason": "created_by_mistake", "disposition_other_reason": None},
    ]
    plan = plan_bulk_cancel(rows, "other", "duplicate order")
    assert not plan.invalid
    assert [(r.disposition_reason, r.disposition_other_reason) for r in plan.requests] == [
        ("other", "duplicate order"),
        ("other", "duplicate order"),
        ("created_by_mistake", None),  # the default note goes with the default reason only
    ]
    (invalid,) = plan_bulk_cancel([{"order_id": 1001, "disposition_reason": None}], None).invalid
    assert invalid["errors"] == [
        "disposition_reason is required: give it per order or as the operator's default"
    ]


# --- a typo repeats into every order: stopped after three identical 400s --------------------------------


def _logged(operator: Any, monkeypatch: pytest.MonkeyPatch, level: str) -> list[str]:
    lines: list[str] = []
    monkeypatch.setattr(operator.log, level, lambda msg, *args: lines.append(msg % args))
    return lines


@pytest.mark.parametrize("workers", [1, 4])
def test_a_typod_reason_stops_the_run_after_three_identical_400s(
    kibo_conn: KiboEmulator, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:

    operator = BulkCancelOrdersOperator(
        task_id="bulk",
        orders=list(range(1000, 1020)),
        disposition_reason="created_by_mistak",
        max_concurrency=workers,
    )
    warnings = _logged(operator, monkeypatch, "warning")
    ti = _TaskInstance()
    with pytest.raises(permanent_errors()) as caught:  # no Airflow retries: the same request again
        operator.execute({"ti": ti})  # type: ignore[typeddict-item]
    assert_no_retry(operator, caught.value)
    assert (
        "20 orders use a disposition_reason Kibo does not publish ('created_by_mistak': 20); sending as "
        "given; did you mean 'created_by_mistake' for 'created_by_mistak'?"
    ) in warnings
    sent = len(kibo_conn.requests_to("cancel"))
    assert 3 <= sent <= 3 + workers - 1  # three alike, and what was already on its way
    summary = ti.pushed["summary"]
    assert summary["halted"] == "repeated_bad_request"
    assert len(summary["failed"]) == sent and len(summary["not_attempted"]) == 20 - sent
    message = str(caught.value)
    assert (
        "Kibo refused 3 orders in a row with the same error for disposition_reason 'created_by_mistak'"
        in (message)
    )
    assert (
        f"{sent} x HTTP 400 INVALID_REQUEST_DATA: Validation error; dispositionReason 'created_by_mistak' "
        "is not a valid disposition reason"
    ) in message
    assert "did you mean 'created_by_mistake' instead of disposition_reason 'created_by_mistak'?" in message


def test_a_refused_reason_skips_only_the_orders_with_that_reason(kibo_conn: KiboEmulator) -> None:
    # Three CSV rows carry a typo'd reason of their own, the other 37 the right one: the typo must not
    # stop the 37 (review: they were all left not_attempted).

    rows = [
        {
            "order_id": 1000 + i,
            "disposition_reason": "created_by_mistak" if i in (0, 1, 2, 20) else "other",
            "disposition_other_reason": None if i in (0, 1, 2, 20) else "Duplicate order",
        }
        for i in range(40)
    ]
    plan = plan_bulk_cancel(rows)
    outcome = BulkRun(KiboHook(), plan.requests, max_concurrency=1).run()
    assert outcome.halted == "repeated_bad_request"
    assert list(outcome.refused_reasons) == ["created_by_mistak"]
    assert outcome.count("canceled") == 36 and outcome.count("failed") == 3
    assert [i for i, bucket in outcome.results.items() if bucket == "not_attempted"] == [1020]
    assert len(kibo_conn.requests_to("cancel")) == 39


def test_a_400_about_one_order_does_not_stop_the_run(kibo_conn: KiboEmulator) -> None:

    bad = {"order_id": 1001, "disposition_reason": "created_by_mistak"}
    operator = BulkCancelOrdersOperator(
        task_id="bulk",
        orders=[1000, bad, {**bad, "order_id": 1002}, 1003, {**bad, "order_id": 1004}, 1005],
        disposition_reason="created_by_mistake",
        max_concurrency=1,
        fail_on_error=False,
    )
    summary = operator.execute({"ti": _TaskInstance()})  # type: ignore[typeddict-item]
    assert summary["halted"] is None
    assert summary["canceled"] == [1000, 1003, 1005]
    assert [f["order_id"] for f in summary["failed"]] == [1001, 1002, 1004]


def test_identical_errors_are_grouped_in_the_failure_message(kibo_conn: KiboEmulator) -> None:

    operator = BulkCancelOrdersOperator(
        task_id="bulk",
        orders=[424240, 1001, 424241, 424242, 424243, 424244, 424245, 3000],
        disposition_reason="created_by_mistake",
        max_concurrency=1,
    )
    with pytest.raises(permanent_errors()) as caught:
        operator.execute({"ti": _TaskInstance()})  # type: ignore[typeddict-item]
    assert_no_retry(operator, caught.value)
    message = str(caught.value)
    assert (
        "6 x HTTP 404 GENERIC_NOT_FOUND: Order {order} not found "
        "(6 orders: 424240, 424241, 424242, 424243, 424244 and 1 more)"
    ) in message
    assert "1 x HTTP 409 INVALID_ORDER_STATE: Order {order} cannot be canceled in status COMPLETED" in message


def test_one_order_with_an_unpublished_reason_is_singular(
    kibo_conn: KiboEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:

    operator = BulkCancelOrdersOperator(
        task_id="bulk", orders=[1001], disposition_reason="fraud_suspected", max_concurrency=1
    )
    warnings = _logged(operator, monkeypatch, "warning")
    operator.execute({"ti": _TaskInstance()})  # type: ignore[typeddict-item]
    assert warnings == [
        "1 order uses a disposition_reason Kibo does not publish ('fraud_suspected': 1); sending as given"
    ]


def test_the_tenant_line_names_the_connection(
    kibo_conn: KiboEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:

    operator = BulkCancelOrdersOperator(
        task_id="bulk", orders=[1001], disposition_reason="created_by_mistake"
    )
    lines = _logged(operator, monkeypatch, "info")
    operator.execute({"ti": _TaskInstance()})  # type: ignore[typeddict-item]
    assert f"Kibo connection 'kibo_default': tenant 30294 at {kibo_conn.url}" in lines


# --- asset events: a consumer reads an alias event's extra the same on every Airflow 3 -----------------


def test_a_consumer_reads_an_alias_events_extra_as_it_was_written(monkeypatch: pytest.MonkeyPatch) -> None:

    written = assets.extra_for_summary("30294", {"total": 2, "canceled": [1001], "already_canceled": [2001]})
    monkeypatch.setattr(assets, "_airflow_version", lambda: (3, 0))  # lists travel as JSON text there
    assert assets.event_extra(assets.alias_extra(written)) == written
    assert assets.event_extra(written) == written
    assert assets.canceled_any(written)
    assert not assets.canceled_any({**written, "counts": {"canceled": 0}})


def test_a_single_cancel_with_a_near_miss_reason_asks_did_you_mean(
    kibo_conn: KiboEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:

    operator = CancelOrderOperator(
        task_id="one", order_id=1001, disposition_reason="created_by_mistak", dry_run=True
    )
    warnings = _logged(operator, monkeypatch, "warning")
    operator.execute({"ti": _TaskInstance()})  # type: ignore[typeddict-item]
    assert (
        "disposition_reason 'created_by_mistak' is not one Kibo publishes: did you mean 'created_by_mistake'?"
        in warnings
    )
    assert kibo_conn.requests_to("cancel") == []


def test_a_mapping_that_is_not_a_dict_is_not_iterated_as_orders() -> None:

    with pytest.raises(KiboValidationError, match="a single dict"):
        plan_bulk_cancel(MappingProxyType({1001: "x"}), "created_by_mistake")


@pytest.mark.parametrize("bulk", [True, False])
def test_a_dry_run_refuses_a_connection_the_real_run_would_refuse(
    emulator: KiboEmulator, connect: Connect, bulk: bool
) -> None:
    # Nothing is sent either way, but a dry run that passes on a token the real run refuses proves nothing.
    connect(emulator, login="", password="", access_token="first-half\nsecond-half")
    operator: Any = (
        BulkCancelOrdersOperator(
            task_id="dry", orders=[1001, 1002], disposition_reason="created_by_mistake", dry_run=True
        )
        if bulk
        else CancelOrderOperator(
            task_id="dry", order_id=1001, disposition_reason="created_by_mistake", dry_run=True
        )
    )
    with pytest.raises(permanent_errors()) as caught:
        operator.execute({"ti": _TaskInstance()})
    assert "extra 'access_token' is not a usable bearer token: the token holds a line break" in str(
        caught.value
    )
    assert "first-half" not in str(caught.value)
    assert emulator.requests == []
