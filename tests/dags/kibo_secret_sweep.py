"""Test DAG: every failure mode that handles a secret, in one run; tests/integration/test_secret_sweep.py
sets the emulators and connections up, then searches the logs, XComs and rendered fields for the secrets."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import dag

from airflow_provider_kibo_cancel.operators.bulk_cancel import BulkCancelOrdersOperator
from airflow_provider_kibo_cancel.operators.cancel_order import CancelOrderOperator

# Permanent failures must not use these; transient ones may.
RETRY: dict[str, Any] = {"retries": 1, "retry_delay": timedelta(seconds=1)}


@dag(schedule=None, catchup=False, tags=["test"])
def kibo_secret_sweep() -> None:
    def cancel(task_id: str, order_id: int | str, conn_id: str = "kibo_default", **kwargs: Any) -> None:
        kwargs.setdefault("disposition_reason", "created_by_mistake")
        CancelOrderOperator(task_id=task_id, order_id=order_id, kibo_conn_id=conn_id, **RETRY, **kwargs)

    # Succeeds: tokens are issued and used; a templated explanation lands in the rendered fields.
    cancel(
        "success",
        "{{ 1000 + 61 }}",
        disposition_reason="other",
        disposition_other_reason="sweep-note-{{ 7700 + 31 }}",
    )
    cancel("wrong_secret", 1062, "kibo_wrong_secret")
    cancel("unauthorized_401", 1063)  # 401 twice: the token is refreshed once, then the task fails
    cancel("revoked_access_token", 1064, "kibo_revoked_token")  # a pre-issued token Kibo refuses
    cancel("server_error_5xx", 1065, "kibo_fast")
    cancel("unparsable_oauth_answer", 1066, "kibo_broken_oauth")  # the token answer cut in two
    cancel("unusable_expires_in", 1067, "kibo_odd_expiry")  # succeeds with the fallback lifetime
    cancel("userinfo_url", 1068, "kibo_userinfo")
    cancel("plain_http_refused", 1069, "kibo_plain_http")
    cancel("dry_run", 1070, dry_run=True)
    cancel("control_character", 1071, disposition_reason="other", disposition_other_reason="a\x1b[2Jb")
    cancel("oversized_order_id", "9" * 5000)
    BulkCancelOrdersOperator(
        task_id="deeply_nested_orders",
        orders="[" * 5000 + "1072" + "]" * 5000,
        disposition_reason="created_by_mistake",
        **RETRY,
    )


kibo_secret_sweep()
