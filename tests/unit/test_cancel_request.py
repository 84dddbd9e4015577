"""The contract's input rules, checked before anything is sent."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_kibo_cancel.cancel_request import CancelOrderRequest
from airflow_provider_kibo_cancel.emulator import KiboEmulator
from airflow_provider_kibo_cancel.exceptions import KiboValidationError
from airflow_provider_kibo_cancel.hooks.kibo import KiboHook

VALID: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    ((1, "customer_changed_mind"), {"orderId": 1, "dispositionReason": "customer_changed_mind"}),
    (("1010101", "created_by_mistake"), {"orderId": 1010101, "dispositionReason": "created_by_mistake"}),
    ((" 42\n", " Created_By_Mistake "), {"orderId": 42, "dispositionReason": "created_by_mistake"}),
    (
        (7, "OTHER", "  Customer changed mind  "),
        {"orderId": 7, "dispositionReason": "other", "dispositionOtherReason": "Customer changed mind"},
    ),
    (
        (7, "other", "x" * 255),
        {"orderId": 7, "dispositionReason": "other", "dispositionOtherReason": "x" * 255},
    ),
    ((8, "fraud_suspected"), {"orderId": 8, "dispositionReason": "fraud_suspected"}),
    # A blank explanation is "not given" (what an unused template renders), so it is not sent.
    ((9, "customer_changed_mind", "  "), {"orderId": 9, "dispositionReason": "customer_changed_mind"}),
    (
        (2**63 - 1, "other", "x"),
        {"orderId": 2**63 - 1, "dispositionReason": "other", "dispositionOtherReason": "x"},
    ),
]


@pytest.mark.parametrize(("args", "body"), VALID)
def test_valid_input_builds_the_exact_body(args: tuple[Any, ...], body: dict[str, Any]) -> None:
    assert CancelOrderRequest.from_raw(*args).body() == body


INVALID: list[tuple[tuple[Any, ...], list[str]]] = [
    ((True, "other", "x"), ["order_id must be an integer >= 1 or a string of digits, got True"]),
    ((False, "other", "x"), ["order_id must be an integer >= 1 or a string of digits, got False"]),
    ((1.5, "other", "x"), ["order_id must be an integer >= 1 or a string of digits, got 1.5"]),
    ((2.0, "other", "x"), ["got 2.0"]),
    (("abc", "other", "x"), ["order_id must be an integer >= 1 or a string of digits, got 'abc'"]),
    ((0, "other", "x"), ["order_id must be >= 1, got 0"]),
    ((-1, "other", "x"), ["order_id must be >= 1, got -1"]),
    (("-5", "other", "x"), ["got '-5'"]),
    (("", "other", "x"), ["got ''"]),
    ((None, "other", "x"), ["got None"]),
    (("1e3", "other", "x"), ["got '1e3'"]),
    ((["1"], "other", "x"), ["got ['1']"]),
    ((2**63, "other", "x"), ["order_id must be a 64-bit integer"]),
    ((1, ""), ["disposition_reason is empty"]),
    ((1, "   "), ["disposition_reason is empty"]),
    ((1, None), ["disposition_reason must be a string, got None"]),
    ((1, 5), ["disposition_reason must be a string, got 5"]),
    (
        (1, "changed mind"),
        ["disposition_reason must be lower-case letters, digits and underscores", "got 'changed mind'"],
    ),
    ((1, "customer-changed-mind"), ["got 'customer-changed-mind'"]),
    ((1, "a" * 101), ["disposition_reason must be lower-case letters"]),
    ((1, "other"), ["disposition_other_reason is required when disposition_reason is 'other'"]),
    ((1, "other", "   "), ["disposition_other_reason is required when disposition_reason is 'other'"]),
    (
        (1, "other", "x" * 256),
        ["disposition_other_reason must be at most 255 characters after trimming, got 256"],
    ),
    ((1, "other", 12), ["disposition_other_reason must be a string, got 12"]),
    (
        (1, "customer_changed_mind", "because"),
        [
            "disposition_other_reason is only allowed when disposition_reason is 'other'",
            "got reason 'customer_changed_mind' with disposition_other_reason 'because'",
        ],
    ),
    # Every problem is named at once, fields and pairing alike.
    (("abc", "other", None), ["got 'abc'", "disposition_other_reason is required"]),
    ((0, "", None), ["order_id must be >= 1, got 0", "disposition_reason is empty"]),
]


@pytest.mark.parametrize(("args", "expected"), INVALID)
def test_invalid_input_is_rejected_naming_each_problem(
    args: tuple[Any, ...], expected: list[str], kibo_conn: KiboEmulator
) -> None:
    with pytest.raises(KiboValidationError) as caught:
        KiboHook().cancel_order(*args)
    message = str(caught.value)
    assert message.startswith("Invalid cancel request, nothing was sent: ")
    for fragment in expected:
        assert fragment in message
    assert caught.value.retryable is False
    assert kibo_conn.requests == []  # not even a token was requested


def test_problems_are_listed_separately() -> None:
    with pytest.raises(KiboValidationError) as caught:
        CancelOrderRequest.from_raw(-3, "Bad Reason!", None)
    assert len(caught.value.problems) == 2


def test_the_model_itself_refuses_an_unpaired_explanation() -> None:
    with pytest.raises(ValueError, match="only allowed when disposition_reason is 'other'"):
        CancelOrderRequest(order_id=1, disposition_reason="created_by_mistake", disposition_other_reason="x")
