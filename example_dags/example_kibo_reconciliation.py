"""
Nightly reconciliation: find the orders that must be canceled, cancel them, report what happened.

Two ways to run the cancels, one DAG each:

- ``example_kibo_reconciliation`` maps ``CancelOrderOperator`` over the orders: one task instance per
  order, each visible and retried on its own in the UI, kept to a few at a time by the ``kibo_api`` pool
  (``airflow pools set kibo_api 4 "Kibo API calls"``). Good up to a few hundred orders.
- ``example_kibo_bulk_reconciliation`` uses one ``BulkCancelOrdersOperator``: thousands of orders in one
  task, one token, bounded concurrency and a summary of what happened to each order.

Re-running either is safe: an order canceled already is read back and counts as done.
The bulk DAG also records an asset event, "orders were canceled in Kibo tenant 30294", that schedules
``example_kibo_canceled_orders_consumer`` with the canceled order ids (no XCom plumbing across DAGs).
It declares an ``AssetAlias``, not the asset itself: the operator adds the tenant's asset to the alias only
when the run canceled at least one order, whereas Airflow records an event for a declared ``Asset`` on
every successful run, one that canceled nothing included.
Needs a ``kibo`` connection named ``kibo_default`` (see the README's "Connection set-up").
"""

from __future__ import annotations

import csv
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import AssetAlias, dag, task

from airflow_provider_kibo_cancel.assets import kibo_orders_canceled_asset
from airflow_provider_kibo_cancel.operators.bulk_cancel import BulkCancelOrdersOperator
from airflow_provider_kibo_cancel.operators.cancel_order import CancelOrderOperator

# In production this would be a query against the order warehouse; here, a small CSV beside the DAG.
ORDERS_CSV = Path(__file__).parent / "data" / "orders_to_cancel.csv"
# kibo://30294/orders/canceled: use your connection's tenant_id (another tenant fails before sending).
CANCELED_ORDERS = kibo_orders_canceled_asset("30294")
# The bulk task's outlet: it gets kibo://{the connection's tenant}/orders/canceled only from a run that
# canceled something, so the consumer does not start for a run that had nothing new to cancel.
ORDERS_CANCELED_BY_THIS_DAG = AssetAlias("example_kibo_bulk_reconciliation_canceled")


# [START howto_operator_kibo_find_orders]
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


# [END howto_operator_kibo_find_orders]


# [START howto_operator_kibo_cancel_order_mapped]
@dag(schedule="@daily", catchup=False, tags=["kibo", "example"])
def example_kibo_reconciliation() -> None:
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


# [END howto_operator_kibo_cancel_order_mapped]


# [START howto_operator_kibo_bulk_cancel]
@dag(schedule="@daily", catchup=False, tags=["kibo", "example"])
def example_kibo_bulk_reconciliation() -> None:
    summary = BulkCancelOrdersOperator(
        task_id="cancel_orders",
        orders=find_orders_to_cancel(),
        max_concurrency=8,
        retries=2,  # only when something transient failed; canceled orders then count as already_canceled
        retry_delay=timedelta(minutes=5),
        # On success with at least one order canceled: an event for CANCELED_ORDERS listing the ids.
        outlets=[ORDERS_CANCELED_BY_THIS_DAG],
    )

    @task
    def report(summary: dict[str, Any]) -> dict[str, int]:
        counts = {
            bucket: len(summary[bucket])
            for bucket in ("canceled", "already_canceled", "failed", "invalid", "duplicates")
        }
        print(f"Reconciliation of {summary['total']} orders: {counts}")
        return counts

    report(summary.output)  # type: ignore[arg-type]  # resolved from XCom at run time


# [END howto_operator_kibo_bulk_cancel]


example_kibo_reconciliation()
example_kibo_bulk_reconciliation()
