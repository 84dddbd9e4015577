"""Durable bulk runs under a real scheduler (tests/integration/test_durable_in_airflow.py): a try
SIGKILLed mid-run, one order that always fails, a 429 wall. One after the other, so the
emulator's faults are each one's."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag

from airflow_provider_kibo_cancel.assets import kibo_orders_canceled_asset
from airflow_provider_kibo_cancel.operators.bulk_cancel import BulkCancelOrdersOperator


@dag(schedule=None, catchup=False, tags=["test"])
def kibo_durable() -> None:
    # The test SIGKILLs this task's process after the 80th applied cancel; Airflow retries it.
    crash = BulkCancelOrdersOperator(
        task_id="crash",
        orders=list(range(5000, 5300)),
        disposition_reason="created_by_mistake",
        max_concurrency=4,
        progress_interval=1.0,
        retries=1,
        retry_delay=timedelta(seconds=1),
        outlets=[kibo_orders_canceled_asset("30294")],
    )
    # Order 6050 answers 503 every time: both tries fail, the second sends only 6050.
    one_failing = BulkCancelOrdersOperator(
        task_id="one_failing",
        orders=list(range(6000, 6100)),
        disposition_reason="created_by_mistake",
        kibo_conn_id="kibo_two_attempts",
        max_concurrency=4,
        retries=1,
        retry_delay=timedelta(seconds=1),
        trigger_rule="all_done",
    )
    # Not deferrable, and the connection sleeps 1 s at most: a 20 s 429 wall stops the run. The Kibo
    # retry policy retries when Kibo accepts calls again, not after the half hour of retry_delay.
    wall = BulkCancelOrdersOperator(
        task_id="wall",
        orders=list(range(7000, 7100)),
        disposition_reason="created_by_mistake",
        kibo_conn_id="kibo_short_sleep",
        max_concurrency=2,
        deferrable=False,
        retries=1,
        retry_delay=timedelta(minutes=30),
        trigger_rule="all_done",
    )
    crash >> one_failing >> wall


kibo_durable()
