"""Test DAG: CancelOrderOperator with plain, templated, conf-driven and mapped values, run by the tests."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import dag, task

from airflow_provider_kibo_cancel.operators.cancel_order import CancelOrderOperator


@dag(schedule=None, catchup=False, tags=["test"])
def kibo_operator_contract() -> None:
    plain = CancelOrderOperator(task_id="plain", order_id=1001, disposition_reason="customer_changed_mind")
    CancelOrderOperator(
        task_id="templated",
        order_id="{{ 1000 + 2 }}",
        disposition_reason="{{ ' Created_By_Mistake ' }}",
    )
    CancelOrderOperator(
        task_id="from_conf",
        order_id="{{ dag_run.conf['order_id'] }}",
        disposition_reason="{{ dag_run.conf['reason'] }}",
        disposition_other_reason="{{ dag_run.conf.get('note') or '' }}",
    )
    mapped = CancelOrderOperator.partial(task_id="mapped", disposition_reason="created_by_mistake").expand(
        order_id=[1004, "1005", 1006]
    )
    CancelOrderOperator.partial(task_id="mapped_kwargs").expand_kwargs(
        [
            {"order_id": 1007, "disposition_reason": "customer_changed_mind"},
            {"order_id": 1008, "disposition_reason": "other", "disposition_other_reason": "duplicate"},
        ]
    )
    CancelOrderOperator(
        task_id="dry_run",
        order_id=1009,
        disposition_reason="other",
        disposition_other_reason="just looking",
        dry_run=True,
    )
    CancelOrderOperator(task_id="already_canceled", order_id=2001, disposition_reason="created_by_mistake")
    # A connection created with `airflow connections add` (stored in the metadata database).
    CancelOrderOperator(
        task_id="cli_connection",
        order_id=1010,
        disposition_reason="created_by_mistake",
        kibo_conn_id="{{ 'kibo_cli' }}",
    )
    # Permanent failures must not use Airflow's retries, even when retries are configured.
    for task_id, order_id in (("bad_input", "abc"), ("unknown_order", 424242)):
        CancelOrderOperator(
            task_id=task_id,
            order_id=order_id,
            disposition_reason="created_by_mistake",
            retries=2,
            retry_delay=timedelta(seconds=1),
        )

    @task
    def report(first: dict[str, Any], many: list[dict[str, Any]]) -> list[Any]:
        return [[first["orderID"], first["orderStatus"]]] + [[o["orderID"], o["orderStatus"]] for o in many]

    report(plain.output, mapped.output)  # type: ignore[arg-type]  # XComArgs resolve at run time


kibo_operator_contract()
