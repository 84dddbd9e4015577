"""The bulk plan: a bulk operator's ``orders`` read, validated and split before anything is sent."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_kibo_cancel.cancel_request import CancelOrderRequest
from airflow_provider_kibo_cancel.exceptions import KiboValidationError
from airflow_provider_kibo_cancel.safety import nesting_exceeds, shown

if TYPE_CHECKING:
    from airflow_provider_kibo_cancel.operators.summary import DuplicateEntry, InvalidEntry

# A bulk input is a list of ids or of flat dicts; anything nested deeper is not one, and very deep
# nesting would end in a RecursionError in the parser, in repr() or in Airflow's XCom serializer.
_MAX_ORDERS_NESTING = 3

_BULK_ENTRY_KEYS = frozenset({"order_id", "disposition_reason", "disposition_other_reason"})


@dataclass(frozen=True)
class BulkCancelPlan:
    """A bulk input split up before anything is sent: unique valid cancels, invalid entries, duplicates."""

    requests: list[CancelOrderRequest]
    invalid: list[InvalidEntry]
    duplicates: list[DuplicateEntry]

    @property
    def total(self) -> int:
        return len(self.requests) + len(self.invalid) + len(self.duplicates)


def _json_safe(value: Any) -> Any:
    """An input echoed back in the summary (XCom is JSON): kept as is when it can be, else its repr."""
    try:
        json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        return shown(value, limit=200)
    return value


#: Order ids as a person types them: ``1313``, ``1301, 1302``, ``1301 1302`` (digits, commas, spaces).
_ID_LIST_TEXT = re.compile(r"^[0-9]+(?:(?:\s*,\s*|\s+)[0-9]+)*$")

_HOW_TO_PASS_A_LIST = (
    "pass a list, e.g. orders=[1311, 1312], or text that is one: a JSON list (from a template, e.g. "
    "\"{{ ti.xcom_pull(task_ids='find_orders') | tojson }}\" of a list) or order ids separated by commas "
    '("1311, 1312")'
)


def _not_a_list(value: Any, what: str) -> KiboValidationError:
    return KiboValidationError(
        [f"orders must be a list of order ids or dicts, got {shown(value)} ({what}); {_HOW_TO_PASS_A_LIST}"]
    )


def _list_from_text(text: str) -> list[Any] | tuple[Any, ...]:
    """
    Orders given as text (what a template renders): a JSON list, Python's repr of a list, or order ids
    separated by commas or spaces. Anything else is refused, never iterated character by character: a
    JSON string literal or a quoted id (``'"1001"'``, ``"'9001'"``) is a quoting mistake, not orders.
    """
    stripped = text.strip()
    if _ID_LIST_TEXT.match(stripped):
        return [int(part) for part in re.split(r"[\s,]+", stripped)]
    try:
        parsed = json.loads(stripped)
    except ValueError:
        try:
            parsed = ast.literal_eval(stripped)
        except RecursionError:
            raise KiboValidationError([_too_deep()]) from None
        except (ValueError, TypeError, SyntaxError, MemoryError):
            raise _not_a_list(text, "text that is neither a list nor order ids") from None
    except RecursionError:
        raise KiboValidationError([_too_deep()]) from None
    if isinstance(parsed, list | tuple):
        return parsed
    if isinstance(parsed, str):
        raise _not_a_list(text, "a quoted string, not a list: a string is never read as orders")
    raise _not_a_list(text, f"text that holds a {_kind(parsed)}, not a list")


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "single number"
    return {dict: "dict", float: "number", type(None): "null"}.get(type(value), type(value).__name__)


def _orders_sequence(orders: Any) -> Any:
    """``orders`` as something to iterate entry by entry, or a KiboValidationError saying how to pass it."""
    if isinstance(orders, bytes | bytearray | memoryview):
        try:
            orders = bytes(orders).decode("utf-8")
        except UnicodeDecodeError:
            raise _not_a_list(orders, "bytes that are not UTF-8 text") from None
    if isinstance(orders, str):
        return _list_from_text(orders)
    if isinstance(orders, int) and not isinstance(orders, bool):
        raise _not_a_list(orders, f"a single number: to cancel one order, pass [{shown(orders)}]")
    if isinstance(orders, Mapping):
        raise _not_a_list(orders, "a single dict: to cancel one order this way, pass [{...}]")
    if orders is None or isinstance(orders, bool | float) or not hasattr(orders, "__iter__"):
        raise _not_a_list(orders, f"a {_kind(orders)}")
    return orders


def _too_deep() -> str:
    return (
        f"orders is nested more than {_MAX_ORDERS_NESTING} levels deep; expected a list of order ids "
        "or of dicts with order_id, disposition_reason and disposition_other_reason"
    )


def plan_bulk_cancel(
    orders: Any, disposition_reason: Any = None, disposition_other_reason: Any = None
) -> BulkCancelPlan:
    """
    Validate every entry of a bulk cancel; the first occurrence of an order id wins, later ones are
    duplicates. An entry is an order id, or a dict with ``order_id`` and optional ``disposition_reason``
    / ``disposition_other_reason``; the defaults fill what it leaves out or gives as None (the default
    explanation only when the entry keeps the default reason).
    """
    orders = _orders_sequence(orders)
    if nesting_exceeds(orders, _MAX_ORDERS_NESTING):
        raise KiboValidationError([_too_deep()])

    requests: list[CancelOrderRequest] = []
    invalid: list[InvalidEntry] = []
    duplicates: list[DuplicateEntry] = []
    seen: set[int] = set()
    for entry in orders:
        if isinstance(entry, dict):
            unknown = sorted(set(entry) - _BULK_ENTRY_KEYS, key=str)
            if unknown or "order_id" not in entry:
                problem = f"unknown keys {unknown}" if unknown else "order_id is missing"
                invalid.append({"input": _json_safe(entry), "errors": [problem]})
                continue
            order_id = entry["order_id"]
            # An explicit None (a CSV's `row["reason"] or None`) means "use the default", as if left out.
            own_reason = entry.get("disposition_reason")
            reason = disposition_reason if own_reason is None else own_reason
            default_other = disposition_other_reason if own_reason is None else None
            own_other = entry.get("disposition_other_reason")
            other = default_other if own_other is None else own_other
        else:
            order_id, reason, other = entry, disposition_reason, disposition_other_reason
        if reason is None:
            invalid.append(
                {
                    "input": _json_safe(entry),
                    "errors": [
                        "disposition_reason is required: give it per order or as the operator's default"
                    ],
                }
            )
            continue
        try:
            request = CancelOrderRequest.from_raw(order_id, reason, other)
        except KiboValidationError as exc:
            invalid.append({"input": _json_safe(entry), "errors": exc.problems})
            continue
        if request.order_id in seen:
            duplicates.append({"order_id": request.order_id, "input": _json_safe(entry)})
            continue
        seen.add(request.order_id)
        requests.append(request)
    return BulkCancelPlan(requests, invalid, duplicates)
