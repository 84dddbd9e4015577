"""Test DAG: what a new user sees when Kibo refuses a cancel (tests/unit/test_exceptions.py)."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag

from airflow_provider_kibo_cancel.operators.cancel_order import CancelOrderOperator


@dag(schedule=None, catchup=False, tags=["test"])
def kibo_first_contact() -> None:
    # A typo in an unpublished-looking reason: sent with a warning, refused by Kibo with a 400 and an item.
    CancelOrderOperator(
        task_id="reason_typo",
        order_id=1001,
        disposition_reason="created_by_mistak",
        retries=2,
        retry_delay=timedelta(seconds=1),
    )


kibo_first_contact()
