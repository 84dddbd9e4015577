"""Hostile or absurd input gets the normal validation error, names the problem and sends nothing."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import requests

from airflow_provider_kibo_cancel.bulk_plan import plan_bulk_cancel
from airflow_provider_kibo_cancel.cancel_request import CancelOrderRequest
from airflow_provider_kibo_cancel.emulator import KiboEmulator
from airflow_provider_kibo_cancel.exceptions import KiboValidationError
from airflow_provider_kibo_cancel.hooks.kibo import KiboHook
from airflow_provider_kibo_cancel.safety import BIDI_CONTROLS, utf16_length


def refused(kibo_conn: KiboEmulator, *args: Any) -> str:
    """Cancel through a real hook and return the error text; nothing may reach the emulator."""
    with pytest.raises(KiboValidationError) as caught:
        KiboHook().cancel_order(*args)
    assert kibo_conn.requests == []
    message = str(caught.value)
    assert message.startswith("Invalid cancel request, nothing was sent: ")
    return message


@pytest.mark.parametrize("char", sorted(BIDI_CONTROLS))
def test_bidi_controls_are_refused_by_name(kibo_conn: KiboEmulator, char: str) -> None:
    message = refused(kibo_conn, 1001, "other", f"refund {char}lanigiro")
    assert f"U+{ord(char):04X}" in message
    assert "bidirectional control character" in message
    assert char not in message  # named, never printed: it would reorder the log line itself


@pytest.mark.parametrize(
    ("char", "name"),
    [
        ("\x00", "U+0000 NULL"),
        ("\x1b", "U+001B ESCAPE"),
        ("\r", "U+000D CARRIAGE RETURN"),
        ("\x7f", "U+007F"),
    ],
)
def test_control_characters_are_refused_by_name(kibo_conn: KiboEmulator, char: str, name: str) -> None:
    message = refused(kibo_conn, 1001, "other", f"late{char}delivery")
    assert f"contains {name} at position 5: a control character (only tab and newline are allowed)" in message


def test_a_lone_surrogate_is_refused(kibo_conn: KiboEmulator) -> None:
    assert "U+D800" in refused(kibo_conn, 1001, "other", "broken \ud800 text")


def test_tab_newline_and_right_to_left_text_are_ordinary(kibo_conn: KiboEmulator) -> None:
    note = "Customer wrote:\n\t\u05e9\u05dc\u05d5\u05dd\u200f, please cancel"  # Hebrew, a right-to-left mark
    KiboHook().cancel_order(1001, "other", note)
    (cancel,) = kibo_conn.requests_to("cancel")
    assert cancel.body["dispositionOtherReason"] == note


def test_the_length_limit_counts_utf16_code_units_as_dotnet_does(kibo_conn: KiboEmulator) -> None:
    fits = "\U0001f600" * 127 + "a"  # 128 characters, 255 UTF-16 code units
    assert utf16_length(fits) == 255
    assert CancelOrderRequest.from_raw(1, "other", fits).disposition_other_reason == fits
    too_long = "\U0001f600" * 128  # 128 characters, 256 code units
    message = refused(kibo_conn, 1001, "other", too_long)
    assert "must be at most 255 characters after trimming, got 256" in message
    assert "UTF-16 code units" in message


@pytest.mark.parametrize(
    ("order_id", "expected"),
    [
        ("9" * 5000, "order_id must be a 64-bit integer (at most 9223372036854775807), got 5000 digits"),
        (10**5000, "order_id must be a 64-bit integer (at most 9223372036854775807), got an integer of"),
        (-(10**5000), "order_id must be >= 1, got an integer of about 5001 digits"),
        ("9223372036854775808", "order_id must be a 64-bit integer"),
    ],
    ids=["5000-digit-string", "5000-digit-int", "negative-5000-digit-int", "2**63"],
)
def test_oversized_order_ids_get_the_normal_error(
    kibo_conn: KiboEmulator, order_id: Any, expected: str
) -> None:
    message = refused(kibo_conn, order_id, "created_by_mistake")
    assert expected in message
    assert "int_max_str_digits" not in message and "Exceeds the limit" not in message
    assert len(message) < 300


def test_leading_zeros_do_not_count_against_the_64_bit_limit() -> None:
    assert CancelOrderRequest.from_raw("0" * 40 + "42", "created_by_mistake").order_id == 42


@pytest.mark.parametrize(
    "orders",
    [
        "[" * 100_000 + "]" * 100_000,  # JSON: RecursionError in the decoder
        "[" * 900 + "1" + "]" * 900,  # parses, but would break repr() and XCom later
        "(" * 5000 + ")" * 5000,  # Python literal syntax
        [[[[[1001]]]]],  # an upstream task's list, not text
        [{"order_id": [[[1001]]]}],
    ],
    ids=["json-100k", "json-900", "python-5000", "list", "dict-value"],
)
def test_deeply_nested_orders_are_a_validation_error(orders: Any) -> None:
    with pytest.raises(KiboValidationError) as caught:
        plan_bulk_cancel(orders, "created_by_mistake")
    assert not isinstance(caught.value.__cause__, RecursionError)
    assert "orders" in str(caught.value)


def test_ordinary_nesting_still_works() -> None:
    plan = plan_bulk_cancel(
        '[1001, {"order_id": 1002, "disposition_reason": "other", '
        '"disposition_other_reason": "dup"}, [1003]]',
        "created_by_mistake",
    )
    assert [r.order_id for r in plan.requests] == [1001, 1002]
    assert plan.invalid[0]["input"] == [1003]


def test_one_session_per_hook_however_many_threads_start_at_once(
    kibo_conn: KiboEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[requests.Session] = []
    start = threading.Barrier(32)

    class SlowSession(requests.Session):
        """Building a session takes long enough for every racing thread to arrive meanwhile."""

        def __init__(self) -> None:
            super().__init__()
            built.append(self)
            threading.Event().wait(0.2)

    monkeypatch.setattr(requests, "Session", SlowSession)  # the hook calls requests.Session()
    hook = KiboHook()
    seen: list[requests.Session] = []

    def touch() -> None:
        start.wait()
        seen.append(hook.session)

    threads = [threading.Thread(target=touch) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(built) == 1
    assert len(seen) == 32 and all(session is built[0] for session in seen)
    assert hook.get_conn() is built[0]
