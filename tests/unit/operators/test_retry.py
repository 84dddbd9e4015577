"""operators/retry.py: the Kibo retry policy the operators come with (mapped ones too), and durable runs
under the faults a review found them weak against: a ledger write that fails once, a run that ends for
good with retries left, a 429 wall that meets the last orders, a single cancel that was never sent. In
process, against the emulator over HTTP, with a fake task state store."""

from __future__ import annotations

import datetime as dt
import importlib
import time
from datetime import timedelta
from typing import Any

import pytest
from airflow.sdk import DAG

from airflow_provider_kibo_cancel import metrics
from airflow_provider_kibo_cancel._compat import AirflowFailException
from airflow_provider_kibo_cancel.emulator import KiboEmulator
from airflow_provider_kibo_cancel.exceptions import (
    KiboBulkCancelError,
    KiboError,
    KiboNotFoundError,
    KiboServerError,
)

# The module, not the name: KiboRetryPolicy exists on Airflow 3.3+ only, and this module runs on all.
from airflow_provider_kibo_cancel.operators import retry as kibo_retry
from airflow_provider_kibo_cancel.operators.bulk_cancel import BulkCancelOrdersOperator
from airflow_provider_kibo_cancel.operators.cancel_order import CancelOrderOperator
from tests.support import Connect
from tests.unit.operators.test_ledger import FakeStore, _bulk, _single, cancels, context_for

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
    kibo_conn: KiboEmulator, walled: int, connect: Connect
) -> None:
    # The hook may sleep 1 s for a 429, so a 20 s Retry-After stops the run. When the wall meets the last
    # order nothing is left not_attempted; the retry must still come when Kibo said (it came after
    # retry_delay).
    connect(kibo_conn, max_retry_wait=1)
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


# --- the retry policy ----------------------------------------------------------------------------------


@pytest.mark.newest_only  # retry policies are Airflow 3.3's
def test_mapped_operators_come_with_the_kibo_retry_policy_too() -> None:
    # A mapped task is unmapped on the worker from partial()'s kwargs, retry_policy=None among them.

    with DAG("mapped_policy", start_date=dt.datetime(2026, 1, 1), schedule=None):
        single = CancelOrderOperator.partial(task_id="one", disposition_reason="created_by_mistake")
        bulk = BulkCancelOrdersOperator.partial(task_id="many", disposition_reason="created_by_mistake")
        mapped_single = single.expand(order_id=[1001, 1002])
        mapped_bulk = bulk.expand(orders=[[1001], [1002]])
    assert isinstance(mapped_single.unmap({"order_id": 1001}).retry_policy, kibo_retry.KiboRetryPolicy)
    assert isinstance(mapped_bulk.unmap({"orders": [1001]}).retry_policy, kibo_retry.KiboRetryPolicy)


@pytest.mark.newest_only  # retry policies are Airflow 3.3's
def test_the_operators_come_with_the_kibo_retry_policy_unless_the_user_gives_one() -> None:

    retry = importlib.import_module("airflow.sdk.definitions.retry_policy")

    bulk = _bulk(orders=[1], max_deferred_wait=600)
    policy = bulk.retry_policy
    assert isinstance(policy, kibo_retry.KiboRetryPolicy) and policy.max_deferred_wait == 600
    assert isinstance(_single(1).retry_policy, kibo_retry.KiboRetryPolicy)
    mine = retry.ExceptionRetryPolicy(rules=[])
    assert _single(1, retry_policy=mine).retry_policy is mine
    # None is no choice (partial() fills it in from Airflow's defaults): the Kibo policy is attached.
    assert isinstance(_single(1, retry_policy=None).retry_policy, kibo_retry.KiboRetryPolicy)
    assert _bulk(orders=[1], default_args={"retry_policy": mine}).retry_policy is mine

    wall = KiboBulkCancelError("stopped", summary={}, retryable=True, resume_at=time.time() + 20)
    decision = policy.evaluate(wall, 1, 1)
    assert decision.action == retry.RetryAction.RETRY
    assert timedelta(seconds=20) <= decision.retry_delay <= timedelta(seconds=23)
    far = KiboBulkCancelError("stopped", summary={}, retryable=True, resume_at=time.time() + 7200)
    assert policy.evaluate(far, 1, 1).action == retry.RetryAction.DEFAULT  # beyond max_deferred_wait
    assert policy.evaluate(KiboNotFoundError("404"), 1, 1).action == retry.RetryAction.FAIL
    assert policy.evaluate(KiboServerError("503"), 1, 1).action == retry.RetryAction.DEFAULT
    assert policy.evaluate(ValueError("x"), 1, 1).action == retry.RetryAction.DEFAULT


@pytest.mark.newest_only  # retry policies are Airflow 3.3's
def test_a_permanent_error_is_left_to_the_kibo_policy_and_wrapped_for_any_other(
    kibo_conn: KiboEmulator,
) -> None:
    retry = importlib.import_module("airflow.sdk.definitions.retry_policy")

    with pytest.raises(KiboNotFoundError) as caught:  # Kibo's own error, for the policy to fail
        _single(424242).execute(context_for(FakeStore(), 1))
    assert caught.value.__traceback__ is not None and caught.value.__suppress_context__
    decision = _single(1).retry_policy.evaluate(caught.value, 1, 3)
    assert decision.action == retry.RetryAction.FAIL and "KiboNotFoundError" in decision.reason
    # With the user's own policy (or none), AirflowFailException as before: never retried.
    mine = retry.ExceptionRetryPolicy(rules=[])
    with pytest.raises(AirflowFailException, match="order 424242; HTTP 404"):
        _single(424242, retry_policy=mine).execute(context_for(FakeStore(), 1))
