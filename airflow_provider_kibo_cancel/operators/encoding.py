"""The compact form of a bulk run's progress, shared by the deferral state and the durable ledger.

Order ids are written as one short text per set (:func:`encode_ids`): the ids sorted and de-duplicated,
then each stretch of consecutive ids as an unsigned LEB128 varint of ``gap * 2 + (length > 1)`` (the gap
from the end of the previous stretch), followed, for a stretch of more than one id, by a varint of its
length less one; the bytes in URL-safe base64 without padding. A reconciliation run's ids are usually
dense (order numbers close together): 10,000 consecutive ids take 4 characters, 10,000 ids one in ten
about 13 KB, 10,000 ids scattered over a billion about 39 KB (3 bytes each).

A failure is kept in its short form (:func:`compact_failures`): the status, Kibo's errorCode, the
error's text with the order id taken out (at most :data:`ERROR_CHARS` characters), and the flags a new
attempt needs (``retryable``, ``may_have_applied``, ``rate_limited``). Orders that failed alike share one
record with their ids encoded: a wall of identical 400s costs one record, not one per order. Neither
form holds a secret or an order's body; Kibo's per-problem items and correlation ids are left out (a
restored failure keeps Kibo's message within its text).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from airflow_provider_kibo_cancel.operators.summary import FailureRecord

#: The longest error text kept per failure record.
ERROR_CHARS = 300
#: Stands for the order id in a failure's text (``... order {order} ...``).
ORDER_PLACEHOLDER = "{order}"


def _varint(value: int, out: bytearray) -> None:
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def encode_ids(ids: Iterable[int]) -> str:
    """A set of order ids (>= 1) as compact text; ``""`` for none. Order and repeats are not kept."""
    out = bytearray()
    previous_end = 0  # the last id of the previous stretch (ids are >= 1)

    def stretch(start: int, end: int) -> None:
        _varint((start - previous_end) * 2 + (end > start), out)
        if end > start:
            _varint(end - start - 1, out)

    start = end = None
    for order_id in sorted(set(ids)):
        if end is not None and order_id == end + 1:
            end = order_id
            continue
        if start is not None and end is not None:
            stretch(start, end)
            previous_end = end
        start = end = order_id
    if start is not None and end is not None:
        stretch(start, end)
    return base64.urlsafe_b64encode(bytes(out)).decode("ascii").rstrip("=")


def decode_ids(text: str | list[int]) -> list[int]:
    """The ids :func:`encode_ids` wrote, ascending; a plain list (an older state) is taken as it is."""
    if isinstance(text, list):
        return [int(order_id) for order_id in text]
    if not text:
        return []
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    values: list[int] = []
    value = shift = 0
    for byte in data:
        value |= (byte & 0x7F) << shift
        if byte & 0x80:
            shift += 7
            continue
        values.append(value)
        value = shift = 0
    if shift:
        raise ValueError("truncated order id encoding")
    ids: list[int] = []
    end = 0
    values.reverse()
    while values:
        head = values.pop()
        start = end + (head >> 1)
        if head & 1:
            if not values:
                raise ValueError("truncated order id encoding")
            end = start + values.pop() + 1
        else:
            end = start
        ids.extend(range(start, end + 1))
    return ids


def _without_order_id(text: str, order_id: Any) -> str:
    text = " ".join(str(text).split())
    # Each answer's correlation id differs: kept, no two failures would be alike (the summary of the try
    # that met them has it; an earlier try's log too).
    text = re.sub(r"(; )?correlation id [^;)]*", "", text).replace(" ()", "")
    if not order_id:
        return text
    return re.sub(rf"(?<![0-9]){re.escape(str(order_id))}(?![0-9])", ORDER_PLACEHOLDER, text)


#: The fields of a failure entry its short form keeps (besides the text and the order id).
_SHORT_FIELDS = ("status", "error_code", "retryable", "may_have_applied", "rate_limited")


def compact_failures(entries: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Failure entries (``failure_entry``) in their short form, orders that failed alike together."""
    groups: dict[tuple[Any, ...], tuple[dict[str, Any], list[int]]] = {}
    for entry in entries:
        order_id = int(entry["order_id"])
        record = {name: entry.get(name) for name in _SHORT_FIELDS}
        record["error"] = _without_order_id(entry.get("error", ""), order_id)[:ERROR_CHARS]
        key = tuple(record.get(name) for name in (*_SHORT_FIELDS, "error"))
        groups.setdefault(key, (record, []))[1].append(order_id)
    return [{**record, "ids": encode_ids(ids)} for record, ids in groups.values()]


def restore_failures(records: Iterable[dict[str, Any]]) -> dict[int, FailureRecord]:
    """The failure entries :func:`compact_failures` wrote, by order id (Kibo's items and ids left out).

    Each entry has the keys of a summary's ``failed`` entries; a record from before this encoding (one
    entry per order, with ``order_id``) is taken as it is.
    """
    failures: dict[int, FailureRecord] = {}
    for record in records:
        if "ids" not in record:  # an entry of the older deferral state
            failures[int(record["order_id"])] = cast("FailureRecord", dict(record))
            continue
        for order_id in decode_ids(record["ids"]):
            failures[order_id] = {
                "order_id": order_id,
                "error": str(record.get("error", "")).replace(ORDER_PLACEHOLDER, str(order_id)),
                "status": record.get("status"),
                "error_code": record.get("error_code"),
                "kibo_message": None,
                "items": [],
                "additional_error_data": None,
                "correlation_id": None,
                "retryable": bool(record.get("retryable")),
                "may_have_applied": bool(record.get("may_have_applied")),
                "rate_limited": bool(record.get("rate_limited")),
            }
    return failures
