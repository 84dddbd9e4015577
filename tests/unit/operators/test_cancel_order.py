"""CancelOrderOperator inside a real Airflow 3 DAG run in process (`dag.test()`), against the emulator
over HTTP."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from airflow_provider_kibo_cancel.emulator import KiboEmulator
from devtools.airflow_local import DagRunResult
from tests.dag_runs import Run, airflow_cli, run_in_process
from tests.support import (
    APP_KEY,
    CANCELED_ORDERS,
    OPEN_ORDERS,
    SHARED_SECRET,
    TENANT,
    kibo_connection,
    kibo_emulator,
    permanent_failure_line,
)

pytestmark = pytest.mark.dag_run


@pytest.fixture(scope="module")
def contract_run() -> Iterator[Run]:
    """One run of tests/dags/kibo_operator_contract.py (one run keeps Airflow's start-up cost down)."""
    emu = kibo_emulator(OPEN_ORDERS, CANCELED_ORDERS)
    with emu:
        extra = kibo_connection(emu)["extra"]
        airflow_cli(
            "connections",
            "add",
            "kibo_cli",
            "--conn-type",
            "kibo",
            "--conn-host",
            emu.url,
            "--conn-login",
            APP_KEY,
            "--conn-password",
            SHARED_SECRET,
            "--conn-extra",
            json.dumps(extra),
        )
        result = run_in_process(
            "kibo_operator_contract",
            conf={"order_id": "1003", "reason": "other", "note": "Customer called support"},
            connections={"kibo_default": kibo_connection(emu)},
        )
        yield result, emu


def test_plain_values_cancel_and_push_the_order(contract_run: tuple[DagRunResult, KiboEmulator]) -> None:
    result, emu = contract_run
    assert result.state("plain") == "success", result.output[-3000:]
    assert result.xcom[("plain", -1)] == emu.order(1001)
    assert result.xcom[("plain", -1)]["orderStatus"] == "CANCELED"


def cancels_of(emu: KiboEmulator, order_id: int) -> list[dict[str, object]]:
    return [r.body for r in emu.requests_to("cancel") if r.body["orderId"] == order_id]


def test_jinja_templates_are_rendered_then_validated(contract_run: Run) -> None:
    result, emu = contract_run
    assert result.state("templated") == "success"
    assert cancels_of(emu, 1002) == [{"orderId": 1002, "dispositionReason": "created_by_mistake"}]
    assert result.xcom[("templated", -1)]["orderID"] == 1002


def test_dag_run_conf_drives_the_cancel(contract_run: Run) -> None:
    result, emu = contract_run
    assert result.state("from_conf") == "success"
    assert cancels_of(emu, 1003) == [
        {"orderId": 1003, "dispositionReason": "other", "dispositionOtherReason": "Customer called support"}
    ]
    assert result.xcom[("from_conf", -1)]["orderStatus"] == "CANCELED"


def test_dynamic_task_mapping(contract_run: Run) -> None:
    result, emu = contract_run
    for index, order_id in enumerate((1004, 1005, 1006)):
        assert result.state("mapped", index) == "success"
        assert result.xcom[("mapped", index)]["orderID"] == order_id
        assert emu.cancels_applied(order_id) == 1
    assert result.xcom[("mapped_kwargs", 1)]["orderID"] == 1008
    assert cancels_of(emu, 1008) == [
        {"orderId": 1008, "dispositionReason": "other", "dispositionOtherReason": "duplicate"}
    ]


def test_downstream_task_reads_the_orders_from_xcom(contract_run: Run) -> None:
    result, _ = contract_run
    assert result.xcom[("report", -1)] == [
        [1001, "CANCELED"],
        [1004, "CANCELED"],
        [1005, "CANCELED"],
        [1006, "CANCELED"],
    ]


def test_dry_run_returns_the_request_and_sends_nothing(contract_run: Run) -> None:
    result, emu = contract_run
    preview = result.xcom[("dry_run", -1)]
    assert preview == {
        "dry_run": True,
        "method": "POST",
        "url": emu.url + "/api/v2/order/action/cancel",
        "headers": {"x-vol-tenant": TENANT, "Accept": "application/json", "Content-Type": "application/json"},
        "json": {"orderId": 1009, "dispositionReason": "other", "dispositionOtherReason": "just looking"},
    }
    assert cancels_of(emu, 1009) == []
    assert emu.order(1009)["orderStatus"] == "OPEN"  # type: ignore[index]


def test_an_order_canceled_already_succeeds_with_the_order(contract_run: Run) -> None:
    result, emu = contract_run
    assert result.state("already_canceled") == "success"
    assert result.xcom[("already_canceled", -1)]["orderStatus"] == "CANCELED"
    assert emu.cancels_applied(2001) == 0
    # One short line that does not read like a failure (no "failed", no HTTP 409 text).
    lines = [ln for ln in result.output.splitlines() if "Order 2001 " in ln]
    assert lines and all("Order 2001 was canceled already; nothing to do" in ln for ln in lines), lines
    assert not any("failed" in ln or "409" in ln for ln in lines), lines
    # One line (Airflow 3.0's `dags test` prints each log line twice: same text, other timestamps).
    assert len({ln[ln.index("Order 2001 ") :] for ln in lines}) == 1, lines


@pytest.mark.parametrize(
    ("task_id", "message"),
    [
        (
            "bad_input",
            "Invalid cancel request, nothing was sent: order_id must be an integer >= 1 or a "
            "string of digits, got 'abc'",
        ),
        (
            "unknown_order",
            "Kibo POST /api/v2/order/action/cancel failed (order 424242; HTTP 404; "
            "errorCode GENERIC_NOT_FOUND; Kibo says: Order 424242 not found; correlation id ",
        ),
    ],
)
def test_permanent_failures_fail_without_airflow_retries(
    contract_run: Run, task_id: str, message: str
) -> None:
    result, emu = contract_run
    assert result.state(task_id) == "failed"
    assert result.tries[(task_id, -1)] == 1  # retries=2 in the DAG, yet no second try
    assert re.search(permanent_failure_line(message), result.output)
    assert len(cancels_of(emu, 424242)) == 1


def test_secrets_and_tokens_never_reach_the_logs(contract_run: Run) -> None:
    result, emu = contract_run
    tokens = set(emu.issued_tokens())
    assert tokens and all(len(t) > 20 for t in tokens)
    # The run's output holds every task's log; make sure they are really there before searching them.
    assert "Order 1001: orderStatus CANCELED" in result.output
    assert SHARED_SECRET not in result.output
    for token in tokens:
        assert token not in result.output


def test_a_connection_added_with_the_cli_works(contract_run: Run) -> None:
    result, emu = contract_run
    assert result.state("cli_connection") == "success"
    assert result.xcom[("cli_connection", -1)]["orderID"] == 1010
    assert emu.cancels_applied(1010) == 1
