"""
What follows a cancel: a DAG scheduled on the asset "orders were canceled in Kibo", not on a clock.

``example_kibo_bulk_reconciliation`` declares an ``AssetAlias`` in its outlets; each of its successful
runs that canceled at least one order records an event for ``kibo_orders_canceled_asset("30294")``
whose ``extra`` says what was canceled::

    {"tenant_id": "30294", "canceled": [1001, 1003], "already_canceled": [1002],
     "counts": {"total": 3, "canceled": 2, "already_canceled": 1, "failed": 0, ...},
     "truncated": false, "dry_run": false}

and the scheduler starts this DAG with those events in ``triggering_asset_events``. Here it only logs the
ids; refunds, customer notices or a warehouse sync would go in their place.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import dag, task

from airflow_provider_kibo_cancel.assets import event_extra, kibo_orders_canceled_asset

CANCELED_ORDERS = kibo_orders_canceled_asset("30294")  # the tenant of the producing DAG's connection


# [START howto_asset_kibo_canceled_orders_consumer]
@dag(schedule=[CANCELED_ORDERS], catchup=False, tags=["kibo", "example"])
def example_kibo_canceled_orders_consumer() -> None:
    @task
    def log_canceled_orders(triggering_asset_events: Any = None) -> dict[str, Any]:
        canceled: list[int] = []
        already: list[int] = []
        for event in (triggering_asset_events or {}).get(CANCELED_ORDERS, []):
            extra = event_extra(event.extra)  # the same on every Airflow 3 (see assets.alias_extra)
            if extra.get("dry_run") or extra.get("counts", {}).get("canceled") == 0:
                # A producer declaring the Asset itself (not an alias) gets an event on every success:
                # a dry run, or a run that canceled nothing new, says so here.
                continue
            canceled += extra.get("canceled", [])
            already += extra.get("already_canceled", [])
            if extra.get("truncated"):
                print(f"Run {event.source_run_id} canceled more than its event lists: {extra['counts']}")
        print(f"Orders canceled in Kibo: {sorted(canceled)}; canceled earlier: {sorted(already)}")
        return {"canceled": sorted(canceled), "already_canceled": sorted(already)}

    log_canceled_orders()


# [END howto_asset_kibo_canceled_orders_consumer]


example_kibo_canceled_orders_consumer()
