"""Test DAG: asset events and metrics of both operators in one run; tests/integration/test_signals.py
drives it."""

from __future__ import annotations

from airflow.sdk import Asset, AssetAlias, dag, task

from airflow_provider_kibo_cancel import metrics
from airflow_provider_kibo_cancel.assets import kibo_orders_canceled_asset
from airflow_provider_kibo_cancel.operators.bulk_cancel import BulkCancelOrdersOperator
from airflow_provider_kibo_cancel.operators.cancel_order import CancelOrderOperator

CANCELED = kibo_orders_canceled_asset("30294")
OWN_ASSET = Asset("kibo_signals_own_asset")  # a user's own asset, no kibo:// URI
ALIAS = AssetAlias("kibo_signals_alias")
ALIAS_DRY_RUN = AssetAlias("kibo_signals_alias_dry_run")
OTHER_TENANT = kibo_orders_canceled_asset("99999")
ALIAS_BULK = AssetAlias("kibo_signals_alias_bulk")
# Runs that cancel nothing new: an alias gets no event; a declared Asset gets one from Airflow anyway.
ALIAS_NOTHING_NEW = AssetAlias("kibo_signals_alias_nothing_new")
ALIAS_SINGLE_ALREADY = AssetAlias("kibo_signals_alias_single_already")
NOTHING_NEW_ASSET = Asset("kibo_signals_nothing_new")


@dag(schedule=None, catchup=False, tags=["test"])
def kibo_signals() -> None:
    # 1001 meets a 429, 1002 a 503, 1003 a dropped connection first (the test injects them).
    CancelOrderOperator(
        task_id="single", order_id=1001, disposition_reason="created_by_mistake", outlets=[CANCELED]
    )
    CancelOrderOperator(
        task_id="single_already", order_id=2001, disposition_reason="created_by_mistake", outlets=[OWN_ASSET]
    )
    CancelOrderOperator(
        task_id="single_alias", order_id=1002, disposition_reason="created_by_mistake", outlets=[ALIAS]
    )
    CancelOrderOperator(
        task_id="single_dry_run",
        order_id=1050,
        disposition_reason="created_by_mistake",
        dry_run=True,
        outlets=[OWN_ASSET, ALIAS_DRY_RUN],
    )
    CancelOrderOperator(task_id="single_no_outlets", order_id=1003, disposition_reason="created_by_mistake")
    CancelOrderOperator(task_id="single_invalid", order_id="abc", disposition_reason="created_by_mistake")
    CancelOrderOperator(task_id="single_unknown", order_id=424242, disposition_reason="created_by_mistake")
    CancelOrderOperator(
        task_id="single_other_tenant",
        order_id=1060,
        disposition_reason="created_by_mistake",
        outlets=[OTHER_TENANT],
    )
    BulkCancelOrdersOperator(
        task_id="bulk",
        orders=[1010, 1011, 1012, 2002, 424243, "x", 1010],
        disposition_reason="customer_changed_mind",
        fail_on_error=False,
        outlets=[CANCELED],
    )
    BulkCancelOrdersOperator(
        task_id="bulk_other_tenant",
        orders=[1070, 1071],
        disposition_reason="customer_changed_mind",
        outlets=[OTHER_TENANT],
    )

    BulkCancelOrdersOperator(
        task_id="bulk_alias",
        orders=[1020, 1021],
        disposition_reason="customer_changed_mind",
        outlets=[ALIAS_BULK],
    )
    BulkCancelOrdersOperator(
        task_id="bulk_nothing_new",
        orders=[2003, 2004],  # canceled already
        disposition_reason="customer_changed_mind",
        outlets=[ALIAS_NOTHING_NEW, NOTHING_NEW_ASSET],
    )
    CancelOrderOperator(
        task_id="single_already_alias",
        order_id=2005,
        disposition_reason="created_by_mistake",
        outlets=[ALIAS_SINGLE_ALREADY],
    )

    @task
    def send_deferral_and_not_attempted_metrics() -> None:
        """The deferral and not_attempted metrics, sent as the operators send them (a deferral and a
        stopped run are exercised in test_deferral.py and test_sustained_faults*.py): the names reach
        StatsD."""
        metrics.deferral()
        metrics.cancel_outcome("not_attempted", 2)

    send_deferral_and_not_attempted_metrics()


kibo_signals()
