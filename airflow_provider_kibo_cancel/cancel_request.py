"""The cancel request: the contract's input rules for one cancel, and the body it is sent as.

Validation runs before any network call and collects every problem, so one failed task names all of them.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from airflow_provider_kibo_cancel.connection import DEFAULT_ORDER_ID_FIELD, OrderIdField
from airflow_provider_kibo_cancel.exceptions import KiboValidationError
from airflow_provider_kibo_cancel.safety import shown, text_problems, utf16_length

# Kibo's page lists these and says "etc.": other well-formed values must stay possible.
PUBLISHED_REASONS = frozenset({"customer_changed_mind", "created_by_mistake", "other"})
OTHER_REASON = "other"
OTHER_REASON_MAX_LENGTH = 255
_REASON_PATTERN = re.compile(r"^[a-z0-9_]+$")
_REASON_MAX_LENGTH = 100
_DIGITS = re.compile(r"^[0-9]+$")
# orderId is an integer with minimum 1; the upper bound keeps it a 64-bit integer on the wire.
_MAX_ORDER_ID = 2**63 - 1
_MAX_ORDER_ID_DIGITS = len(str(_MAX_ORDER_ID))

CANCELED_STATUS = "CANCELED"


def reason_suggestion(reason: str) -> str | None:
    """The published reason ``reason`` is a near miss of (``created_by_mistak``), or None."""
    if reason in PUBLISHED_REASONS:
        return None
    matches = difflib.get_close_matches(reason, sorted(PUBLISHED_REASONS), n=1, cutoff=0.8)
    return matches[0] if matches else None


def parse_order_id(value: Any) -> int:
    """An integer >= 1, or a string of digits (what Jinja renders); raise ValueError naming the value."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"order_id must be an integer >= 1 or a string of digits, got {shown(value)}")
    too_large = f"order_id must be a 64-bit integer (at most {_MAX_ORDER_ID}), got "
    if isinstance(value, str):
        text = value.strip()
        if not _DIGITS.match(text):
            raise ValueError(f"order_id must be an integer >= 1 or a string of digits, got {shown(value)}")
        # Checked before int(): Python refuses to convert more than 4300 digits with its own message.
        if len(text.lstrip("0")) > _MAX_ORDER_ID_DIGITS:
            raise ValueError(f"{too_large}{len(text)} digits: {shown(value)}")
        value = int(text)
    number: int = value
    if number < 1:
        raise ValueError(f"order_id must be >= 1, got {shown(number)}")
    if number > _MAX_ORDER_ID:
        raise ValueError(f"{too_large}{shown(number)}")
    return number


def _problems(exc: ValidationError) -> list[str]:
    return [str(error["msg"]).removeprefix("Value error, ") for error in exc.errors()]


def _pairing_problems(reason: str | None, other: str | None) -> list[str]:
    """disposition_other_reason goes with 'other' and only with it."""
    if reason == OTHER_REASON:
        if not other:
            return [
                "disposition_other_reason is required when disposition_reason is 'other' "
                f"(1..{OTHER_REASON_MAX_LENGTH} characters)"
            ]
        # Kibo runs on .NET, whose strings count UTF-16 code units: an emoji is 2 of the 255.
        if utf16_length(other) > OTHER_REASON_MAX_LENGTH:
            return [
                f"disposition_other_reason must be at most {OTHER_REASON_MAX_LENGTH} characters "
                f"after trimming, got {utf16_length(other)} (counted as Kibo counts them, in UTF-16 "
                "code units: a character beyond U+FFFF, such as an emoji, counts 2)"
            ]
    elif reason and other:
        return [
            "disposition_other_reason is only allowed when disposition_reason is 'other', "
            f"got reason {reason!r} with disposition_other_reason {shown(other)}"
        ]
    return []


class CancelOrderRequest(BaseModel):
    """A validated cancel: build it with :meth:`from_raw`, send it with :meth:`body`."""

    model_config = ConfigDict(frozen=True)

    order_id: int
    disposition_reason: str
    disposition_other_reason: str | None = None

    @classmethod
    def from_raw(
        cls, order_id: Any, disposition_reason: Any, disposition_other_reason: Any = None
    ) -> CancelOrderRequest:
        """Validate raw (possibly Jinja-rendered) values; raise KiboValidationError naming every problem."""
        try:
            return cls.model_validate(
                {
                    "order_id": order_id,
                    "disposition_reason": disposition_reason,
                    "disposition_other_reason": disposition_other_reason,
                }
            )
        except ValidationError as exc:
            problems = _problems(exc)
        # The pairing check above runs only once every field is valid; name its problems anyway.
        reason = disposition_reason.strip().lower() if isinstance(disposition_reason, str) else None
        other = (
            disposition_other_reason.strip() or None if isinstance(disposition_other_reason, str) else None
        )
        if reason and _REASON_PATTERN.match(reason):
            problems += [p for p in _pairing_problems(reason, other) if p not in problems]
        raise KiboValidationError(problems)

    @field_validator("order_id", mode="plain")
    @classmethod
    def _check_order_id(cls, value: Any) -> int:
        return parse_order_id(value)

    @field_validator("disposition_reason", mode="plain")
    @classmethod
    def _check_reason(cls, value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"disposition_reason must be a string, got {shown(value)}")
        reason = value.strip().lower()
        if not reason:
            raise ValueError(
                "disposition_reason is empty; use e.g. customer_changed_mind, created_by_mistake or other"
            )
        if len(reason) > _REASON_MAX_LENGTH or not _REASON_PATTERN.match(reason):
            raise ValueError(
                "disposition_reason must be lower-case letters, digits and underscores "
                f"(e.g. customer_changed_mind), got {shown(value)}"
            )
        return reason

    @field_validator("disposition_other_reason", mode="plain")
    @classmethod
    def _check_other_reason(cls, value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise ValueError(f"disposition_other_reason must be a string, got {shown(value)}")
        if problems := text_problems(value, "disposition_other_reason"):
            raise ValueError("; ".join(problems))
        # Blank counts as "not given": a template like "{{ params.note }}" renders "" when unused.
        return value.strip() or None

    @model_validator(mode="after")
    def _check_other_reason_matches_reason(self) -> CancelOrderRequest:
        if problems := _pairing_problems(self.disposition_reason, self.disposition_other_reason):
            raise ValueError(problems[0])  # there is never more than one
        return self

    @property
    def is_published_reason(self) -> bool:
        return self.disposition_reason in PUBLISHED_REASONS

    def body(self, order_id_field: OrderIdField = DEFAULT_ORDER_ID_FIELD) -> dict[str, Any]:
        """The JSON body as the specification gives it; the order id key as the connection spells it."""
        body: dict[str, Any] = {order_id_field: self.order_id, "dispositionReason": self.disposition_reason}
        if self.disposition_reason == OTHER_REASON:
            body["dispositionOtherReason"] = self.disposition_other_reason
        return body


@dataclass(frozen=True)
class CancelResult:
    """What a cancel ended with: the order as Kibo has it, and whether an earlier call had canceled it."""

    order: dict[str, Any]
    already_canceled: bool
