"""
Cancel one Kibo order on demand.

Trigger it from the UI: the form below validates the order id and the reason before the run starts.
Or from the CLI: ``airflow dags trigger example_kibo_cancel_order -c '{"order_id": 1001,
"disposition_reason": "customer_changed_mind"}'``. The canceled order lands in XCom for the next task.

Needs a ``kibo`` connection named ``kibo_default`` (see the README's "Connection set-up").
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, dag, task

from airflow_provider_kibo_cancel.operators.cancel_order import CancelOrderOperator


# [START howto_operator_kibo_cancel_order]
@dag(
    schedule=None,
    catchup=False,
    tags=["kibo", "example"],
    params={
        "order_id": Param(
            1001, type="integer", minimum=1, title="Order ID", description="Kibo order to cancel"
        ),
        "disposition_reason": Param(
            "customer_changed_mind",
            type="string",
            enum=["customer_changed_mind", "created_by_mistake", "other"],
            title="Reason",
        ),
        "note": Param(
            None,
            type=["null", "string"],
            maxLength=255,
            title="Explanation",
            description="Required when the reason is 'other'; leave empty otherwise.",
        ),
    },
)
def example_kibo_cancel_order() -> None:
    cancel = CancelOrderOperator(
        task_id="cancel_order",
        order_id="{{ params.order_id }}",
        disposition_reason="{{ params.disposition_reason }}",
        # Jinja renders None as "None": `or ''` leaves the explanation out when it is not given.
        disposition_other_reason="{{ params.note or '' }}",
    )

    @task
    def confirm(order: dict[str, Any]) -> str:
        """A downstream task reads the canceled order from XCom like any other value."""
        summary = f"Order {order['orderID']} is {order['orderStatus']} (total {order.get('total')})"
        print(summary)
        return summary

    confirm(cancel.output)  # type: ignore[arg-type]  # resolved from XCom at run time


# [END howto_operator_kibo_cancel_order]


example_kibo_cancel_order()
