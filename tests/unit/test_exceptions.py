"""Kibo's own explanation of an error (``items``, ``additionalErrorData``) reaches the user, bounded.

The emulator answers a bad reason over real HTTP with an ``items`` entry; other body shapes are fed to the
hook's response parser directly (a narrower tool, for shapes the emulator does not produce).
"""

from __future__ import annotations

import json
import re
from importlib.metadata import version
from typing import Any

import pytest
import requests

from airflow_provider_kibo_cancel.emulator import KiboEmulator
from airflow_provider_kibo_cancel.exceptions import (
    MAX_ITEMS,
    MAX_TEXT,
    KiboApiError,
    KiboBadRequestError,
    KiboConflictError,
    KiboError,
    KiboNotFoundError,
)
from airflow_provider_kibo_cancel.hooks import responses
from airflow_provider_kibo_cancel.hooks.kibo import KiboHook
from tests.dag_runs import run_in_process
from tests.support import kibo_connection, permanent_failure_line

pytestmark = pytest.mark.dag_run

AIRFLOW_3_0 = version("apache-airflow-core").startswith("3.0.")
TYPO_ITEM = "dispositionReason 'created_by_mistak' is not a valid disposition reason"


def response(status: int, body: Any) -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp._content = json.dumps(body).encode() if not isinstance(body, bytes) else body
    resp.headers["x-vol-correlation"] = "corr-1"
    return resp


def error_from(status: int, body: Any) -> KiboError:
    return responses.error_from(response(status, body), "Kibo POST /x failed", order_id=7)


def test_a_400_carries_kibos_items_in_the_message_and_as_data(kibo_conn: KiboEmulator) -> None:
    with pytest.raises(KiboBadRequestError) as caught:
        KiboHook().cancel_order(1001, "created_by_mistak")
    error = caught.value
    assert error.items == [{"errorCode": "INVALID_REQUEST_DATA", "message": TYPO_ITEM}]
    assert str(error) == (
        "Kibo POST /api/v2/order/action/cancel failed (order 1001; HTTP 400; errorCode INVALID_REQUEST_DATA; "
        f"Kibo says: Validation error; details: {TYPO_ITEM}; correlation id {error.correlation_id})"
    )
    data = error.to_dict()
    assert json.loads(json.dumps(data)) == data  # plain JSON, ready for XCom
    assert data == {
        "order_id": 1001,
        "error": str(error),
        "status": 400,
        "error_code": "INVALID_REQUEST_DATA",
        "kibo_message": "Validation error",
        "items": [{"errorCode": "INVALID_REQUEST_DATA", "message": TYPO_ITEM}],
        "additional_error_data": None,
        "correlation_id": error.correlation_id,
        "retryable": False,
        "may_have_applied": False,
    }
    assert len(kibo_conn.requests_to("cancel")) == 1


def test_an_error_without_items_reads_as_before(kibo_conn: KiboEmulator) -> None:
    with pytest.raises(KiboNotFoundError) as caught:
        KiboHook().cancel_order(424242, "created_by_mistake")
    assert caught.value.items == []
    assert "details" not in str(caught.value) and "additional data" not in str(caught.value)
    assert str(caught.value).endswith(
        f"Kibo says: Order 424242 not found; correlation id {caught.value.correlation_id})"
    )


def test_every_problem_is_listed_with_its_own_code() -> None:
    error = error_from(
        400,
        {
            "message": "Validation error",
            "errorCode": "INVALID_REQUEST_DATA",
            "items": [
                {"errorCode": "INVALID_REQUEST_DATA", "message": "orderId must be an integer >= 1"},
                {"errorCode": "MISSING_FIELD", "message": "dispositionReason is required"},
                {"name": "no message here"},
                "a bare string",
                {"errorCode": "INVALID_REQUEST_DATA", "message": "Validation error"},  # repeats the message
            ],
        },
    )
    assert isinstance(error, KiboBadRequestError)
    assert (
        "Kibo says: Validation error; details: orderId must be an integer >= 1 | "
        'MISSING_FIELD: dispositionReason is required | {"name":"no message here"} | a bare string; '
        "correlation id corr-1)"
    ) in str(error)
    assert str(error).count("Validation error") == 1


def test_additional_error_data_is_shown_and_kept() -> None:
    data = [{"name": "orderStatus", "value": "COMPLETED"}, {"name": "shipments", "value": [1, 2]}]
    error = error_from(
        409, {"message": "Cannot cancel", "errorCode": "INVALID_ORDER_STATE", "additionalErrorData": data}
    )
    assert isinstance(error, KiboConflictError)
    assert error.additional_error_data == data
    assert "; additional data: orderStatus=COMPLETED, shipments=[1,2]; correlation id corr-1)" in str(error)
    as_dict = error_from(409, {"additionalErrorData": {"reason": "shipped"}})
    assert "additional data: reason=shipped" in str(as_dict)


def test_items_are_truncated_sensibly() -> None:
    long_item = {"message": "x" * 5000}
    many = [{"message": f"problem {n}"} for n in range(100)]
    error = error_from(400, {"message": "Validation error", "items": [long_item, *many]})
    text = str(error)
    assert len(text) < 1500
    assert "x" * (MAX_TEXT - 3) + "..." in text and "x" * MAX_TEXT not in text
    assert "problem 3 | (+96 more); correlation id" in text  # 5 shown of 101
    assert len(error.items) == MAX_ITEMS
    assert len(error.items[0]["message"]) == 500  # kept longer than shown, still bounded
    huge_data = {"blob": "y" * 10_000}
    assert len(str(error_from(500, {"additionalErrorData": huge_data}))) < 600


def test_a_non_list_items_value_is_kept_as_one_item() -> None:
    error = error_from(400, {"message": "Bad", "items": "one problem"})
    assert isinstance(error, KiboApiError)
    assert error.items == ["one problem"]
    assert "details: one problem" in str(error)


def test_a_failed_task_shows_kibos_explanation_once_with_a_short_traceback(
    emulator: KiboEmulator,
) -> None:
    result = run_in_process("kibo_first_contact", connections={"kibo_default": kibo_connection(emulator)})
    assert result.state("reason_typo") == "failed"
    assert result.tries[("reason_typo", -1)] == 1  # a 400: no Airflow retries
    output = result.output
    lines = [line for line in output.splitlines() if TYPO_ITEM in line]
    # Only as the failing exception's message (the KiboBadRequestError the Kibo retry policy fails on
    # 3.3+, AirflowFailException before): never again as a chained KiboError's.
    shown = permanent_failure_line("Kibo POST /api/v2/order/action/cancel failed (order 1001; HTTP 400")
    assert lines and all(re.search(shown, line) for line in lines), output[-5000:]
    assert "direct cause" not in output and "During handling" not in output
    if AIRFLOW_3_0:
        # Airflow 3.0's `dags test` itself logs a failure three times (two handlers, then once more).
        assert len(lines) == 3
        return
    assert len(lines) == 1
    failure = output[output.index("Task failed with exception") :]
    failure = failure[: re.search(shown, failure).start()]  # type: ignore[union-attr]
    assert failure.count("Traceback (most recent call last)") == 1
    assert "hooks/kibo.py" not in failure  # the hook's internals are not repeated in a second traceback
