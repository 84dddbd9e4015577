"""Errors raised by the Kibo provider.

Every error carries what Kibo support and an on-call engineer need: the HTTP status, Kibo's ``errorCode``
and ``message``, Kibo's per-problem ``items`` and ``additionalErrorData``, the order id and the correlation
id (``x-vol-correlation``). ``retryable`` tells the operator whether an Airflow task retry can help: input,
configuration, 400/403/404/405 and authentication errors cannot, so they fail the task at once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

#: Bounds on what Kibo's error body contributes, so one odd answer cannot flood a log line or an XCom.
MAX_ITEMS = 20  # items kept in ``KiboError.items``
MAX_ITEMS_SHOWN = 5  # items written into the message
MAX_TEXT = 200  # characters of one item (or of the additional data) in the message
MAX_VALUE = 500  # characters of any one string kept in the structured attributes


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _bounded(value: Any, depth: int = 0) -> Any:
    """A JSON value with long strings shortened and deep or wide structures cut, for attributes and XCom."""
    if isinstance(value, str):
        return value if len(value) <= MAX_VALUE else value[: MAX_VALUE - 3] + "..."
    if depth >= 3 and isinstance(value, dict | list):
        return _shorten(json.dumps(value, default=str), MAX_VALUE)
    if isinstance(value, dict):
        return {str(k): _bounded(v, depth + 1) for k, v in list(value.items())[:MAX_ITEMS]}
    if isinstance(value, list):
        return [_bounded(v, depth + 1) for v in value[:MAX_ITEMS]]
    if value is None or isinstance(value, bool | int | float):
        return value
    return _shorten(str(value), MAX_VALUE)


def _compact(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str, separators=(",", ":"))


def _describe_item(item: Any, top_code: str | None) -> str:
    """One of Kibo's ``items`` as text: its message, prefixed by its own errorCode when that differs."""
    if not isinstance(item, dict):
        return _compact(item)
    message = item.get("message")
    if not message:
        return _compact(item)
    code = item.get("errorCode")
    return f"{code}: {message}" if code and code != top_code else str(message)


_BASE_FIELDS = (
    "status",
    "error_code",
    "kibo_message",
    "order_id",
    "correlation_id",
    "items",
    "additional_error_data",
    "sent",
    "may_have_applied",
    "retryable",
    "rate_limited",
)


def _base(fields: dict[str, Any]) -> dict[str, Any]:
    return {name: fields[name] for name in _BASE_FIELDS if name in fields}


def _describe_additional(data: Any) -> str:
    """Kibo's ``additionalErrorData``: a list of ``{"name", "value"}`` pairs, or anything else as JSON."""
    if isinstance(data, list) and all(isinstance(d, dict) and "name" in d for d in data):
        return ", ".join(f"{d['name']}={_compact(d.get('value'))}" for d in data)
    if isinstance(data, dict):
        return ", ".join(f"{k}={_compact(v)}" for k, v in data.items())
    return _compact(data)


class KiboError(Exception):
    """Root of the provider's errors."""

    retryable: bool = False
    #: True when an attempt may have reached Kibo before this failure (a timeout, dropped connection or
    #: 5xx): a cancel is then resolved by reading the order back instead of failing blindly.
    may_have_applied: bool = False
    #: False when the call failed before any request left this machine (the run was stopped, the circuit
    #: was open, Kibo asked to wait, no token): a bulk run counts such an order as ``not_attempted``.
    sent: bool = True
    #: True when Kibo's rate limit is why this call did not complete (a 429, or a wait it asked for):
    #: the order was not canceled by it, and a deferred run sends it again after the wait.
    rate_limited: bool = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_code: str | None = None,
        kibo_message: str | None = None,
        order_id: int | None = None,
        correlation_id: str | None = None,
        items: list[Any] | None = None,
        additional_error_data: Any = None,
        sent: bool | None = None,
        may_have_applied: bool = False,
        retryable: bool | None = None,
        rate_limited: bool | None = None,
    ) -> None:
        # Everything is given here, once: an error is never changed after it was raised. A caller that
        # knows more (the order, what was sent) builds a new one with :meth:`replace`.
        self._fields: dict[str, Any] = {
            "status": status,
            "error_code": error_code,
            "kibo_message": kibo_message,
            "order_id": order_id,
            "correlation_id": correlation_id,
            "items": items,
            "additional_error_data": additional_error_data,
            "sent": sent,
            "may_have_applied": may_have_applied,
            "retryable": retryable,
            "rate_limited": rate_limited,
        }
        self.message = message
        self.status = status
        self.error_code = error_code
        self.kibo_message = kibo_message
        self.order_id = order_id
        self.correlation_id = correlation_id
        if sent is not None:
            self.sent = sent
        self.may_have_applied = may_have_applied
        if retryable is not None:
            self.retryable = retryable
        if rate_limited is not None:
            self.rate_limited = rate_limited
        #: Kibo's ``items`` (one entry per problem, e.g. each failed validation rule), bounded.
        self.items: list[Any] = _bounded(list(items or []))
        self._items_given = len(items or [])
        #: Kibo's ``additionalErrorData`` as it sent it (usually ``[{"name", "value"}]``), bounded.
        self.additional_error_data: Any = _bounded(additional_error_data)
        super().__init__(self._render())

    def replace(self, message: str | None = None, **changes: Any) -> KiboError:
        """A new error of the same kind with some fields changed (urllib3's ``Retry.new()`` idea)."""
        fields = {**self._fields, **self._own_fields(), **changes}
        error = type(self).__new__(type(self))
        KiboError.__init__(error, self.message if message is None else message, **_base(fields))
        error._set_own_fields(fields)
        return error

    def _own_fields(self) -> dict[str, Any]:
        """A subclass's own constructor fields, for :meth:`replace`."""
        return {}

    def _set_own_fields(self, fields: dict[str, Any]) -> None:
        """Set a subclass's own fields on a copy made by :meth:`replace`."""

    def to_dict(self) -> dict[str, Any]:
        """The error as plain JSON-serializable data, e.g. for a bulk summary's ``failed`` entries."""
        return {
            "order_id": self.order_id,
            "error": str(self),
            "status": self.status,
            "error_code": self.error_code,
            "kibo_message": self.kibo_message,
            "items": self.items,
            "additional_error_data": self.additional_error_data,
            "correlation_id": self.correlation_id,
            "retryable": self.retryable,
            "may_have_applied": self.may_have_applied,
        }

    def _render(self) -> str:
        details = []
        if self.order_id is not None:
            details.append(f"order {self.order_id}")
        if self.status is not None:
            details.append(f"HTTP {self.status}")
        if self.error_code:
            details.append(f"errorCode {self.error_code}")
        if self.kibo_message:
            details.append(f"Kibo says: {_shorten(self.kibo_message, MAX_VALUE)}")
        shown = [
            _shorten(text, MAX_TEXT)
            for text in (_describe_item(item, self.error_code) for item in self.items)
            if text and text != self.kibo_message
        ]
        if shown:
            more = len(shown) - MAX_ITEMS_SHOWN + self._items_given - len(self.items)
            details.append(
                "details: " + " | ".join(shown[:MAX_ITEMS_SHOWN]) + (f" | (+{more} more)" if more > 0 else "")
            )
        if self.additional_error_data not in (None, [], {}, ""):
            details.append(
                "additional data: " + _shorten(_describe_additional(self.additional_error_data), MAX_TEXT)
            )
        if self.correlation_id:
            details.append(f"correlation id {self.correlation_id}")
        return f"{self.message} ({'; '.join(details)})" if details else self.message


class KiboValidationError(KiboError, ValueError):
    """Input to a cancel failed the contract's rules; nothing was sent."""

    sent = False

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("Invalid cancel request, nothing was sent: " + "; ".join(problems))

    def _own_fields(self) -> dict[str, Any]:
        return {"problems": self.problems}

    def _set_own_fields(self, fields: dict[str, Any]) -> None:
        self.problems = fields["problems"]


class KiboConfigurationError(KiboError):
    """The Kibo connection is missing or misconfigured; nothing was sent."""

    sent = False


class KiboApiError(KiboError):
    """Kibo answered with an error status."""


class KiboBadRequestError(KiboApiError):
    """400 or 405: Kibo rejected the request as malformed."""


class KiboAuthenticationError(KiboApiError):
    """401, or the OAuth endpoint refused the application key and shared secret."""


class KiboForbiddenError(KiboApiError):
    """403: the credentials are valid but not allowed for this tenant or site."""


class KiboNotFoundError(KiboApiError):
    """404: the order (or tenant) does not exist."""


class KiboConflictError(KiboApiError):
    """409 for an order that is not canceled (for example shipped already)."""


class KiboRateLimitError(KiboApiError):
    """429 after every attempt, or a Retry-After longer than the configured cap."""

    retryable = True
    rate_limited = True

    def __init__(self, message: str, *, retry_after: float | None = None, **fields: Any) -> None:
        #: Seconds Kibo asked to wait (its Retry-After), when it gave one.
        self.retry_after = retry_after
        super().__init__(message, **fields)

    def _own_fields(self) -> dict[str, Any]:
        return {"retry_after": self.retry_after}

    def _set_own_fields(self, fields: dict[str, Any]) -> None:
        self.retry_after = fields.get("retry_after")


class KiboServerError(KiboApiError):
    """5xx after every attempt."""

    retryable = True


class KiboTransportError(KiboError):
    """Timeout or connection error after every attempt; the request may or may not have reached Kibo."""

    retryable = True


class KiboTLSError(KiboTransportError):
    """The TLS handshake failed (certificate not trusted, wrong host name): retrying cannot help."""

    retryable = False


class KiboRedirectError(KiboApiError):
    """Kibo (or something in its place) answered with a redirect; redirects are never followed."""


class KiboPreflightError(KiboError):
    """A call refused before sending anything: the order was not attempted."""

    sent = False


class KiboStoppedError(KiboPreflightError):
    """The hook was stopped (task timeout, kill, interrupt): no further request is sent."""

    retryable = True


class KiboCircuitOpenError(KiboPreflightError):
    """Kibo is evidently down (every request failed for a whole retry schedule): calls fail at once."""

    retryable = True


class KiboRateLimitWaitError(KiboPreflightError):
    """Kibo asked every caller to wait longer than this run may sleep; nothing more is sent until then."""

    retryable = True
    rate_limited = True

    def __init__(self, message: str, *, retry_after: float, resume_at: float, **fields: Any) -> None:
        #: Seconds still to wait when raised, and the wall-clock time (epoch seconds) Kibo accepts calls.
        self.retry_after = retry_after
        self.resume_at = resume_at
        super().__init__(message, **fields)

    def _own_fields(self) -> dict[str, Any]:
        return {"retry_after": self.retry_after, "resume_at": self.resume_at}

    def _set_own_fields(self, fields: dict[str, Any]) -> None:
        self.retry_after, self.resume_at = fields["retry_after"], fields["resume_at"]


class KiboResponseError(KiboError):
    """Kibo answered 2xx with something that is not the expected order (not JSON, wrong order id)."""

    retryable = True


class KiboBulkCancelError(KiboError):
    """A bulk cancel attempted everything and some orders failed or were invalid."""

    def __init__(
        self, message: str, *, summary: Mapping[str, Any], retryable: bool, resume_at: float | None = None
    ) -> None:
        self.summary = summary
        #: When Kibo's rate limit stopped the run: when Kibo accepts calls again (epoch seconds), for the
        #: retry policy to retry then.
        self.resume_at = resume_at
        # retryable: True when a failure was transient, so a task retry may finish the job.
        super().__init__(message, retryable=retryable, rate_limited=resume_at is not None)

    def _own_fields(self) -> dict[str, Any]:
        return {"summary": self.summary, "resume_at": self.resume_at}

    def _set_own_fields(self, fields: dict[str, Any]) -> None:
        self.summary = fields["summary"]
        self.resume_at = fields.get("resume_at")
