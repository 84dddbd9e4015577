"""The bulk plan: an operator's `orders` split into requests, invalid entries and duplicates."""

from __future__ import annotations

import pytest

from airflow_provider_kibo_cancel.bulk_plan import plan_bulk_cancel
from airflow_provider_kibo_cancel.exceptions import KiboValidationError


def test_plan_splits_the_input() -> None:
    plan = plan_bulk_cancel(
        [
            1,
            "2",
            2,
            {"order_id": 3, "disposition_reason": "other", "disposition_other_reason": "x"},
            0,
            {"order": 4},
            {"order_id": 5},
            {"order_id": 6, "disposition_reason": "created_by_mistake"},
        ],
        "other",
        "default note",
    )
    assert [(r.order_id, r.disposition_reason, r.disposition_other_reason) for r in plan.requests] == [
        (1, "other", "default note"),
        (2, "other", "default note"),
        (3, "other", "x"),
        (5, "other", "default note"),
        (6, "created_by_mistake", None),  # the default note goes with the default reason only
    ]
    assert plan.invalid == [
        {"input": 0, "errors": ["order_id must be >= 1, got 0"]},
        {"input": {"order": 4}, "errors": ["unknown keys ['order']"]},
    ]
    assert plan.duplicates == [{"order_id": 2, "input": 2}]
    assert plan.total == 8


@pytest.mark.parametrize("orders", [None, 5, {"order_id": 1}, "not a list"])
def test_orders_that_are_not_a_list_are_rejected(orders: object) -> None:
    with pytest.raises(KiboValidationError, match="orders must be a list of order ids or dicts"):
        plan_bulk_cancel(orders, "created_by_mistake")


def test_a_missing_reason_makes_an_entry_invalid() -> None:
    plan = plan_bulk_cancel([1], None)
    assert plan.invalid[0]["errors"] == [
        "disposition_reason is required: give it per order or as the operator's default"
    ]
