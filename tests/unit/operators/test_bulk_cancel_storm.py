"""BulkCancelOrdersOperator through a 429 storm, in a DAG run in process (`dag.test()`): every order
canceled once, each rate-limited one sent twice, progress logged. A file of its own: the storm's
pauses take most of its 25 s, which run beside the other test files."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.dag_runs import Run, run_in_process
from tests.support import kibo_connection
from tests.unit.operators.test_bulk_cancel import emulator_with_orders

pytestmark = pytest.mark.dag_run


@pytest.fixture(scope="module")
def bulk_run() -> Iterator[Run]:
    with emulator_with_orders() as emu:
        for order_id in range(1100, 1300, 8):  # a storm: one in eight storm orders is rate limited first
            emu.inject("status", status=429, retry_after="1", order_id=order_id)
        result = run_in_process(
            "kibo_bulk_storm", connections={"kibo_default": kibo_connection(emu, max_attempts=10)}
        )
        yield result, emu


def test_a_429_storm_still_cancels_everything_once(bulk_run: Run) -> None:
    result, emu = bulk_run
    assert result.state("storm") == "success", result.output[-3000:]
    summary = result.xcom[("storm", -1)]
    assert sorted(summary["canceled"]) == list(range(1100, 1300))
    assert summary["failed"] == [] and summary["already_canceled"] == []
    assert all(emu.cancels_applied(order_id) == 1 for order_id in range(1100, 1300))
    assert "Bulk cancel progress: " in result.output and "orders/s, ETA" in result.output
    limited = [r for r in emu.requests_to("cancel") if r.body["orderId"] in range(1100, 1300, 8)]
    assert len(limited) == 2 * 25  # each rate-limited order was sent twice, and canceled once
    waited = re.findall(r"for order (\d+): HTTP 429 on attempt 1 of 10; retrying in 1\.0 s", result.output)
    assert {int(order_id) for order_id in waited} == set(range(1100, 1300, 8))
