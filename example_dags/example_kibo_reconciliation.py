"""
Nightly reconciliation: find the orders that must be canceled, cancel each one, report what happened.

The cancels are a mapped ``CancelOrderOperator`` (one task instance per order, retried on its own), kept
to a few at a time by the ``kibo_api`` pool: ``airflow pools set kibo_api 4 "Kibo API calls"``.
Re-running the DAG is safe: an order canceled already is read back and counts as done.

Needs a ``kibo`` connection named ``kibo_default`` (see the README's "Connection set-up").
"""

from __future__ import annotations

import csv
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import dag, task

from airflow_provider_kibo_cancel.operators.cancel_order import CancelOrderOperator

# In production this would be a query against the order warehouse; here, a small CSV beside the DAG.
ORDERS_CSV = Path(__file__).parent / "data" / "orders_to_cancel.csv"


@dag(schedule="@daily", catchup=False, tags=["kibo", "example"])
def example_kibo_reconciliation() -> None:
    @task
    def find_orders_to_cancel() -> list[dict[str, Any]]:
        with ORDERS_CSV.open(newline="") as rows:
            return [
                {
                    "order_id": int(row["order_id"]),
                    "disposition_reason": row["reason"],
                    "disposition_other_reason": row["note"] or None,
                }
                for row in csv.DictReader(rows)
            ]

    canceled = CancelOrderOperator.partial(
        task_id="cancel_order",
        pool="kibo_api",
        retries=2,
        retry_delay=timedelta(minutes=1),
    ).expand_kwargs(find_orders_to_cancel())

    @task
    def report(orders: list[dict[str, Any]]) -> dict[str, Any]:
        lines = [f"{o['orderID']:>10}  {o['orderStatus']:<10}  {o.get('total')}" for o in orders]
        print("\n".join([f"{'order':>10}  {'status':<10}  total", *lines]))
        return {"canceled": sorted(o["orderID"] for o in orders), "count": len(lines)}

    report(canceled.output)  # type: ignore[arg-type]  # resolved from XCom at run time


example_kibo_reconciliation()
