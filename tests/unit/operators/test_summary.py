"""operators/summary.py: the bulk summary's shape, as documented, and how it is built."""

from __future__ import annotations

import json
import typing

import pytest

from airflow_provider_kibo_cancel.bulk_plan import plan_bulk_cancel
from airflow_provider_kibo_cancel.exceptions import KiboBadRequestError
from airflow_provider_kibo_cancel.operators.outcome import (
    CANCELED,
    FAILED,
    NOT_ATTEMPTED,
    STOPPED,
    BulkCancelOutcome,
)
from airflow_provider_kibo_cancel.operators.summary import (
    MAX_ORDERS_REFUSED,
    BulkCancelSummary,
    FailureRecord,
    ReasonHints,
    build_summary,
    failure_entry,
    failures_error,
)


@pytest.mark.parametrize("shape", [BulkCancelSummary, FailureRecord])
def test_every_field_is_documented(shape: type) -> None:
    doc = shape.__doc__ or ""
    for key in typing.get_type_hints(shape):
        assert f"``{key}``" in doc, key


def test_a_real_run_puts_every_entry_in_exactly_one_bucket() -> None:
    plan = plan_bulk_cancel([1001, 1002, 1003, 1001, "x"], "created_by_mistake")
    outcome = BulkCancelOutcome(elapsed=1.23456, halted=STOPPED)
    outcome.results = {1001: CANCELED, 1002: FAILED, 1003: NOT_ATTEMPTED}
    error = KiboBadRequestError("Kibo POST failed", status=400, order_id=1002)
    outcome.failures[1002] = failure_entry(1002, error)
    summary = build_summary(plan, outcome)
    assert summary["canceled"] == [1001] and summary["not_attempted"] == [1003]
    assert [f["order_id"] for f in summary["failed"]] == [1002]
    assert summary["failed"][0]["status"] == 400 and summary["failed"][0]["rate_limited"] is False
    assert [d["order_id"] for d in summary["duplicates"]] == [1001]
    assert len(summary["invalid"]) == 1 and summary["total"] == 5
    assert summary["halted"] == STOPPED and summary["elapsed_seconds"] == 1.235
    assert summary["dry_run"] is False and "would_cancel" not in summary
    assert json.loads(json.dumps(summary)) == summary  # XCom is JSON


def test_a_dry_run_and_a_refused_run_say_what_would_be_canceled() -> None:
    plan = plan_bulk_cancel([1001, 1002], "created_by_mistake")
    dry = build_summary(plan, None)
    assert dry["dry_run"] and dry["would_cancel"] == [1001, 1002] and dry["not_attempted"] == []
    assert "halted" not in dry
    refused = build_summary(plan, None, refused=True)
    assert not refused["dry_run"] and refused["halted"] == MAX_ORDERS_REFUSED
    assert refused["not_attempted"] == [1001, 1002] == refused["would_cancel"]


def test_identical_failures_are_grouped_with_a_did_you_mean() -> None:
    plan = plan_bulk_cancel([1001, 1002], "created_by_mistak")
    outcome = BulkCancelOutcome(results={1001: FAILED, 1002: FAILED})
    for order_id in (1001, 1002):
        refusal = KiboBadRequestError(
            f"Kibo POST failed for order {order_id}", status=400, kibo_message="Validation error"
        )
        outcome.failures[order_id] = failure_entry(order_id, refusal.replace(order_id=order_id))
    summary = build_summary(plan, outcome)
    error = failures_error(summary, ReasonHints.of(plan.requests), resume_at=None)
    assert "2 x HTTP 400: Validation error (2 orders: 1001, 1002)" in str(error)
    assert "did you mean 'created_by_mistake'" in str(error)
    assert error.summary is summary and not error.retryable
