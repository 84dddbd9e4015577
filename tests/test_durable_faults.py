"""Durable runs under the faults a review found them weak against: a ledger write that fails once, a
run that ends for good with retries left, a 429 wall that meets the last orders, a single cancel that
was never sent. In process, against the emulator over HTTP, with a fake task state store."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_kibo_cancel import metrics
from airflow_provider_kibo_cancel.emulator import KiboEmulator
from airflow_provider_kibo_cancel.exceptions import KiboBulkCancelError, KiboError
from tests.support import kibo_connection
from tests.test_durable import FakeStore, _bulk, _single, cancels, context_for

pytestmark = pytest.mark.newest_only  # the task state store and retry policies are Airflow 3.3's


class GlitchyStore(FakeStore):
    """One set() fails (a 5xx or a timeout of the execution API); every other works."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.calls = 0
        self.fail_at = fail_at

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("execution API: 503 Service Unavailable (transient)")
        super().set(key, value, retention=retention)


def test_one_failed_ledger_write_does_not_end_the_ledger(kibo_conn: KiboEmulator) -> None:
    # Before: the ledger was off for the rest of the try, its final write included, so the retry sent
    # all 100 orders again and reported 95 of this run's cancels as already_canceled.
    kibo_conn.latency = 0.02
    orders = list(range(1000, 1100))
    kibo_conn.inject("status", status=503, order_id=1099, times=None)  # the try fails, retryably
    store = GlitchyStore(fail_at=2)
    with pytest.raises(KiboBulkCancelError):
        _bulk(orders=orders, max_concurrency=2).execute(context_for(store, 1))
    first = cancels(kibo_conn)
    kibo_conn.clear_faults()
    summary = _bulk(orders=orders, max_concurrency=2).execute(context_for(store, 2))
    assert cancels(kibo_conn)[len(first) :] == [1099]
    assert all(kibo_conn.cancels_applied(i) == 1 for i in orders)
    assert summary["already_canceled"] == [] and len(summary["canceled"]) == 100


def _counted_outcomes(
    monkeypatch: pytest.MonkeyPatch, store: Any, **kwargs: Any
) -> tuple[dict[str, int], Any]:
    counted: dict[str, int] = {}

    def count(outcome: str, count: int = 1) -> None:
        counted[outcome] = counted.get(outcome, 0) + count

    monkeypatch.setattr(metrics, "cancel_outcome", count)
    operator = _bulk(orders=list(range(1000, 1020)), max_concurrency=1, **kwargs)
    with pytest.raises(KiboError) as caught:
        operator.execute(context_for(store, 1))  # try 1 of 4 (max_tries=3)
    return {k: v for k, v in counted.items() if v}, operator.retry_policy.evaluate(caught.value, 1, 3)


def test_a_run_that_ends_for_good_counts_its_outcomes_with_retries_left(
    kibo_conn: KiboEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 403 wall halts the run, and the Kibo policy fails it though retries are left: the orders held
    # back "for a retry" must be counted now (before: 17 not_attempted orders were never counted).
    kibo_conn.inject("status", status=403, times=None)
    plain, _ = _counted_outcomes(monkeypatch, None, durable=False)
    kibo_conn.clear_faults()
    kibo_conn.inject("status", status=403, times=None)
    durable, decision = _counted_outcomes(monkeypatch, FakeStore())
    assert decision.action.value == "fail"
    assert durable == plain == {"failed": 3, "not_attempted": 17}


@pytest.mark.parametrize("walled", [1010, 1019], ids=["mid-run", "the-last-order"])
def test_a_429_wall_is_retried_when_kibo_accepts_calls_again(
    kibo_conn: KiboEmulator, walled: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The hook may sleep 1 s for a 429, so a 20 s Retry-After stops the run. When the wall meets the last
    # order nothing is left not_attempted; the retry must still come when Kibo said (it came after
    # retry_delay).
    monkeypatch.setenv("AIRFLOW_CONN_KIBO_DEFAULT", json.dumps(kibo_connection(kibo_conn, max_retry_wait=1)))
    kibo_conn.inject("status", status=429, retry_after="20", order_id=walled, times=None)
    operator = _bulk(orders=list(range(1000, 1020)), max_concurrency=1, deferrable=False)
    with pytest.raises(KiboBulkCancelError) as caught:
        operator.execute(context_for(FakeStore(), 1))
    decision = operator.retry_policy.evaluate(caught.value, 1, 1)
    assert decision.action.value == "retry"
    assert 15 <= decision.retry_delay.total_seconds() <= 25


def test_a_single_cancel_never_sent_does_not_claim_a_later_cancel(
    kibo_conn: KiboEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The token request failed, so the cancel never went out: a retry that finds the order canceled
    # (here canceled before the DAG run began) must not report it as this run's cancel.
    store = FakeStore()
    kibo_conn.inject("status", status=503, endpoint="oauth", times=None)
    with pytest.raises(KiboError) as caught:
        _single(2001).execute(context_for(store, 1))
    assert not caught.value.sent
    kibo_conn.clear_faults()
    operator = _single(2001)
    lines: list[str] = []
    monkeypatch.setattr(operator.log, "info", lambda msg, *args: lines.append(msg % args))
    operator.execute(context_for(store, 2))
    assert any("was canceled already" in line for line in lines), lines
