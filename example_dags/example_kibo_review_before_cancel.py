"""
Review before cancel: a person approves the exact list of orders before any of them is canceled.

1. ``plan``: a dry run of ``BulkCancelOrdersOperator`` validates the orders the query found and returns
   the plan (``would_cancel``) to XCom. Nothing is sent.
2. ``describe`` and ``review``: Airflow's ``ApprovalOperator`` (human-in-the-loop, Airflow 3.1+) asks in
   the UI (Browse → Required Actions, or the run's ``review`` task) to Approve or Reject, showing how many
   orders and which (the first ``SHOW_AT_MOST`` ids). Nothing to cancel skips the review.
3. ``cancel``: after Approve, cancels exactly the reviewed ``would_cancel`` list read from the plan's
   XCom, not a fresh query: orders that turned up since wait for the next review. Reject skips it, and so
   does no answer within ``response_timeout`` (the review task then fails): nothing is sent.

Every order gets the reason chosen when the run is triggered. Airflow 3.0 has no human-in-the-loop
operators: there this file defines no DAG (and leaves the other examples parsing); see the README's
"Safety" section for what to do instead. Needs a ``kibo`` connection named ``kibo_default``.
"""

from __future__ import annotations

import csv
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow import __version__ as AIRFLOW_VERSION
from airflow.sdk import Param, dag, task
from packaging.version import Version

from airflow_provider_kibo_cancel.operators.bulk_cancel import BulkCancelOrdersOperator

# In production this would be a query against the order warehouse; here, a small CSV beside the DAG.
ORDERS_CSV = Path(__file__).parent / "data" / "orders_to_cancel.csv"
SHOW_AT_MOST = 50  # ids listed in the approval form; the full plan is in the plan task's XCom

# The human-in-the-loop operators exist from Airflow 3.1 (the standard provider refuses to import them
# on 3.0): check the version rather than catch the import error, so a real import error still shows.
HAS_HITL = Version(Version(AIRFLOW_VERSION).base_version) >= Version("3.1")

if HAS_HITL:
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    # AirflowSkipException is in the task SDK from Airflow 3.2; 3.1 has it in airflow.exceptions only.
    if Version(Version(AIRFLOW_VERSION).base_version) >= Version("3.2"):
        from airflow.sdk.exceptions import AirflowSkipException
    else:
        from airflow.exceptions import AirflowSkipException  # type: ignore[no-redef,attr-defined,unused-ignore]

    @task
    def find_orders_to_cancel() -> list[int]:
        with ORDERS_CSV.open(newline="") as rows:
            return [int(row["order_id"]) for row in csv.DictReader(rows)]

    @task
    def describe(plan: dict[str, Any], reason: str) -> str:
        """The approval form's text (Markdown): how many orders, which, and what will not be sent."""
        ids = plan["would_cancel"]
        if not ids:
            raise AirflowSkipException("Nothing to cancel: no review needed")
        shown = ", ".join(str(order_id) for order_id in ids[:SHOW_AT_MOST])
        more = f" … and {len(ids) - SHOW_AT_MOST} more" if len(ids) > SHOW_AT_MOST else ""
        return (
            f"**{len(ids)} orders** will be canceled with reason `{reason}`:\n\n{shown}{more}\n\n"
            f"Not sent: {len(plan['invalid'])} invalid entries, {len(plan['duplicates'])} duplicates. "
            "The full plan is the `plan` task's XCom (`would_cancel`).\n\n"
            "**Approve** cancels exactly these orders (it cannot be undone). **Reject** cancels nothing."
        )

    # [START howto_operator_kibo_review_before_cancel]
    @dag(
        schedule=None,
        catchup=False,
        tags=["kibo", "example"],
        params={
            "disposition_reason": Param(
                "created_by_mistake",
                enum=["customer_changed_mind", "created_by_mistake"],
                description="Reason sent with every cancel of this run.",
            )
        },
    )
    def example_kibo_review_before_cancel() -> None:
        plan = BulkCancelOrdersOperator(
            task_id="plan",
            orders=find_orders_to_cancel(),
            disposition_reason="{{ params.disposition_reason }}",
            dry_run=True,
            fail_on_error=False,  # invalid entries are shown to the reviewer, not a failure
        )
        review = ApprovalOperator(
            task_id="review",
            subject="Cancel {{ ti.xcom_pull(task_ids='plan')['would_cancel'] | length }} Kibo orders?",
            body=describe(plan.output, "{{ params.disposition_reason }}"),  # type: ignore[arg-type]
            response_timeout=timedelta(hours=12),  # no answer: the review fails and nothing is canceled
        )
        cancel = BulkCancelOrdersOperator(
            task_id="cancel",
            # The reviewed plan itself, from XCom; the rendered list's text is parsed by the operator.
            orders="{{ ti.xcom_pull(task_ids='plan')['would_cancel'] }}",
            disposition_reason="{{ params.disposition_reason }}",
        )
        review >> cancel  # Reject skips the cancel

    # [END howto_operator_kibo_review_before_cancel]

    example_kibo_review_before_cancel()
