"""Kibo's long Retry-After spent deferred, or stopping a bulk run (tests/unit/operators/test_deferral.py)."""

from __future__ import annotations

import time

from airflow.sdk import dag, task

from airflow_provider_kibo_cancel.operators.bulk_cancel import BulkCancelOrdersOperator
from airflow_provider_kibo_cancel.operators.cancel_order import CancelOrderOperator


@dag(schedule=None, catchup=False, tags=["test"])
def kibo_deferral() -> None:
    # The emulator answers 429 with Retry-After: 3 to order 1500, 1620 and 1680 (once each), and to 1640
    # after applying its cancel and dropping the answer.
    CancelOrderOperator(
        task_id="single",
        order_id=1500,
        disposition_reason="created_by_mistake",
        deferrable=True,
        defer_threshold=1,
    )
    BulkCancelOrdersOperator(
        task_id="bulk",
        orders=list(range(1600, 1700)),
        disposition_reason="created_by_mistake",
        max_concurrency=4,
        deferrable=True,
        defer_threshold=1,
    )
    # Order 1502's cancel is applied but its answer lost, then its retry meets a 429 (Retry-After: 3).
    CancelOrderOperator(
        task_id="single_applied_before_the_wait",
        order_id=1502,
        disposition_reason="created_by_mistake",
        deferrable=True,
        defer_threshold=1,
    )
    # Retry-After: 5 for order 1501, but only 2 s of deferral allowed in all.
    CancelOrderOperator(
        task_id="over_budget",
        order_id=1501,
        disposition_reason="created_by_mistake",
        deferrable=True,
        defer_threshold=1,
        max_deferred_wait=2,
        retries=0,
    )
    # Not deferrable; the connection may sleep 1 s at most and order 1710 gets Retry-After: 30.
    BulkCancelOrdersOperator(
        task_id="bulk_no_defer",
        orders=list(range(1700, 1800)),
        disposition_reason="created_by_mistake",
        kibo_conn_id="kibo_short_sleep",
        max_concurrency=4,
        deferrable=False,
    )


@dag(schedule=None, catchup=False, tags=["test"])
def kibo_deferral_frees_the_slot() -> None:
    """Under a real scheduler with parallelism 1: the deferred cancel lets `other` run meanwhile."""
    CancelOrderOperator(
        task_id="cancel",
        order_id=1900,
        disposition_reason="created_by_mistake",
        deferrable=True,
        defer_threshold=5,  # the emulator asks for 20 s
        priority_weight=10,  # first into the only slot
    )

    @task(priority_weight=1)
    def other() -> float:
        return time.time()

    other()


kibo_deferral()
kibo_deferral_frees_the_slot()
