"""Sustained faults met by the bulk operator inside real DAG runs (test_sustained_faults_in_airflow.py)."""

from __future__ import annotations

import time
from datetime import timedelta

from airflow.sdk import dag, task

from airflow_provider_kibo_cancel.operators.bulk_cancel import BulkCancelOrdersOperator
from airflow_provider_kibo_cancel.operators.cancel_order import CancelOrderOperator


@dag(schedule=None, catchup=False, tags=["test"])
def kibo_bulk_stop() -> None:
    """A bulk run cut short by its execution_timeout, and a task that outlives it."""
    bulk = BulkCancelOrdersOperator(
        task_id="bulk",
        orders=list(range(1000, 1300)),
        disposition_reason="created_by_mistake",
        max_concurrency=4,
        execution_timeout=timedelta(seconds=3),
        retries=0,
    )

    @task(trigger_rule="all_done")
    def outlive() -> None:
        time.sleep(4)  # anything the bulk task left running would reach the emulator meanwhile

    bulk >> outlive()


@dag(schedule=None, catchup=False, tags=["test"], default_args={"retries": 2, "retry_delay": timedelta(0)})
def kibo_fail_fast() -> None:
    """Problems that no task retry can fix: each task must fail on its first try."""
    BulkCancelOrdersOperator(
        task_id="wrong_secret",
        orders=list(range(1000, 1300)),
        disposition_reason="created_by_mistake",
        kibo_conn_id="kibo_wrong_secret",
    )
    CancelOrderOperator(
        task_id="missing_connection",
        order_id=1000,
        disposition_reason="created_by_mistake",
        kibo_conn_id="kibo_no_such_connection",
    )
    BulkCancelOrdersOperator(
        task_id="bad_settings",
        orders=[1000],
        disposition_reason="created_by_mistake",
        progress_interval=0,
        max_concurrency=0,
    )
    BulkCancelOrdersOperator(
        task_id="unpublished_reasons",
        orders=[{"order_id": i, "disposition_reason": "fraud_suspected"} for i in range(1300, 1340)],
    )


kibo_bulk_stop()
kibo_fail_fast()
