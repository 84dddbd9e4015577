"""BulkCancelOrdersOperator's blast-radius limit, max_orders: in a real DAG run against the emulator."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_kibo_cancel.emulator import KiboEmulator
from airflow_provider_kibo_cancel.operators.bulk_cancel import (
    DEFAULT_MAX_ORDERS,
    BulkCancelOrdersOperator,
    _order_limit,
)
from devtools.airflow_local import XCOM_STORED_TWICE_ENCODED, AirflowEnv, DagRunResult
from tests.support import APP_KEY, SHARED_SECRET, TENANT, kibo_connection

Run = tuple[DagRunResult, KiboEmulator, AirflowEnv]


@pytest.fixture(scope="module")
def limit_run(airflow_env: AirflowEnv) -> Iterator[Run]:
    with KiboEmulator(tenants=(TENANT,), clients={APP_KEY: SHARED_SECRET}) as emu:
        emu.add_orders(range(10000, 15002))
        result = airflow_env.run_dag(
            "kibo_max_orders",
            conf={"limit": 5},
            connections={"kibo_default": kibo_connection(emu)},
        )
        yield result, emu, airflow_env


def summary_xcom(env: AirflowEnv, dag_id: str, task_id: str) -> Any:
    """XCom key `summary` of the latest run (run_dag reads return_value only)."""
    with contextlib.closing(sqlite3.connect(env.home / "airflow.db")) as db:
        row = db.execute(
            "SELECT value FROM xcom WHERE dag_id = ? AND task_id = ? AND key = 'summary' "
            "AND run_id = (SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1)",
            (dag_id, task_id, dag_id),
        ).fetchone()
    assert row is not None, f"no XCom 'summary' for {task_id}"
    value = json.loads(row[0])
    return json.loads(value) if XCOM_STORED_TWICE_ENCODED else value


def cancels_sent(emu: KiboEmulator, orders: range) -> list[int]:
    return [r.body["orderId"] for r in emu.requests_to("cancel") if r.body["orderId"] in orders]


def test_over_the_limit_sends_nothing_and_fails_without_retries(limit_run: Run) -> None:
    result, emu, env = limit_run
    assert result.state("over_limit") == "failed"
    assert result.tries[("over_limit", -1)] == 1  # retries=2 configured, none used
    assert cancels_sent(emu, range(10000, 10011)) == []
    assert (
        "Refusing to cancel 11 orders: more than max_orders=10, nothing was sent. The would-be summary "
        "(would_cancel) is in XCom key 'summary'. If 11 is right, raise max_orders (e.g. max_orders=11) "
        "or set max_orders=None for no limit."
    ) in result.output
    summary = summary_xcom(env, "kibo_max_orders", "over_limit")
    assert summary["would_cancel"] == list(range(10000, 10011))
    assert summary["canceled"] == [] and summary["dry_run"] is False  # a real run, refused
    assert summary["not_attempted"] == list(range(10000, 10011)) and summary["halted"] == "max_orders"
    assert [i["input"] for i in summary["invalid"]] == ["bad"]
    assert summary["duplicates"] == [{"order_id": 10000, "input": 10000}]
    assert ("over_limit", -1) not in result.xcom  # no return_value: the task failed


def test_at_the_limit_cancels(limit_run: Run) -> None:
    result, emu, _ = limit_run
    assert result.state("at_limit") == "success", result.output[-3000:]
    assert sorted(result.xcom[("at_limit", -1)]["canceled"]) == list(range(10100, 10110))
    assert all(emu.cancels_applied(order_id) == 1 for order_id in range(10100, 10110))


def test_a_limit_from_a_param_is_rendered(limit_run: Run) -> None:
    """The Param defaults to 1; the run's conf sets 5: five orders cancel, six are refused."""
    result, emu, env = limit_run
    assert result.state("param_at_limit") == "success", result.output[-3000:]
    assert sorted(result.xcom[("param_at_limit", -1)]["canceled"]) == list(range(10200, 10205))
    assert result.state("param_over_limit") == "failed"
    assert result.tries[("param_over_limit", -1)] == 1
    assert cancels_sent(emu, range(10300, 10306)) == []
    assert "Refusing to cancel 6 orders: more than max_orders=5" in result.output
    assert summary_xcom(env, "kibo_max_orders", "param_over_limit")["would_cancel"] == list(
        range(10300, 10306)
    )


def test_a_limit_relative_to_a_count_from_upstream(limit_run: Run) -> None:
    result, emu, _ = limit_run
    assert result.state("share_over_limit") == "failed"
    assert result.tries[("share_over_limit", -1)] == 1
    assert cancels_sent(emu, range(10400, 10406)) == []
    assert "Refusing to cancel 6 orders: more than max_orders=5" in result.output


def test_the_default_limit_applies(limit_run: Run) -> None:
    result, emu, env = limit_run
    assert DEFAULT_MAX_ORDERS == 2000
    assert result.state("default_limit") == "failed"
    assert result.tries[("default_limit", -1)] == 1
    assert cancels_sent(emu, range(11000, 13001)) == []
    assert "Refusing to cancel 2001 orders: more than max_orders=2000" in result.output
    assert len(summary_xcom(env, "kibo_max_orders", "default_limit")["would_cancel"]) == 2001


def test_none_disables_the_limit(limit_run: Run) -> None:
    result, emu, _ = limit_run
    assert result.state("no_limit") == "success", result.output[-3000:]
    assert len(result.xcom[("no_limit", -1)]["canceled"]) == 2001
    assert all(emu.cancels_applied(order_id) == 1 for order_id in range(13001, 15002))


def test_a_dry_run_over_the_limit_only_warns(limit_run: Run) -> None:
    result, emu, _ = limit_run
    assert result.state("dry_run_over_limit") == "success", result.output[-3000:]
    assert result.xcom[("dry_run_over_limit", -1)]["would_cancel"] == [10500, 10501, 10502]
    assert "This plan has 3 orders to cancel, more than max_orders=2: a real run would fail." in result.output
    assert cancels_sent(emu, range(10500, 10503)) == []


def test_a_bad_limit_fails_before_anything_is_sent(limit_run: Run) -> None:
    result, emu, _ = limit_run
    assert result.state("bad_limit") == "failed"
    assert result.tries[("bad_limit", -1)] == 1
    assert cancels_sent(emu, range(10600, 10603)) == []
    assert (
        "max_orders must be an integer >= 1 (or a string of digits), or None for no limit; got 'None' "
        "(a template rendered None as text: pass max_orders=None itself)"
    ) in result.output


@pytest.mark.parametrize(
    ("value", "limit"), [(None, None), (1, 1), (5000, 5000), ("5000", 5000), (" 12 ", 12)]
)
def test_accepted_limits(value: object, limit: int | None) -> None:
    assert _order_limit(value) == limit


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "", "abc", "1e3", "-5", "0", "\uff11\uff12", [5]])
def test_rejected_limits(value: object) -> None:
    with pytest.raises(ValueError, match=r"max_orders must be an integer >= 1 .*; got "):
        _order_limit(value)


def test_max_orders_is_templated_and_unchecked_at_parse_time() -> None:
    assert "max_orders" in BulkCancelOrdersOperator.template_fields
    op = BulkCancelOrdersOperator(task_id="t", orders=[1], max_orders="{{ params.limit }}")
    assert op.max_orders == "{{ params.limit }}"
    assert BulkCancelOrdersOperator(task_id="u", orders=[1]).max_orders == DEFAULT_MAX_ORDERS
