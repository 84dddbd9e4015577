"""What Kibo answered, interpreted: the order a call returned, or the ``KiboError`` its status means.

Pure functions of a ``requests.Response``, kept apart from the hook's transport, token and retry policy.
"""

from __future__ import annotations

from typing import Any

import requests

from airflow_provider_kibo_cancel.exceptions import (
    KiboApiError,
    KiboAuthenticationError,
    KiboBadRequestError,
    KiboConflictError,
    KiboError,
    KiboForbiddenError,
    KiboNotFoundError,
    KiboRateLimitError,
    KiboRedirectError,
    KiboResponseError,
    KiboServerError,
)
from airflow_provider_kibo_cancel.hooks.policy import retry_after_seconds
from airflow_provider_kibo_cancel.safety import without_userinfo

ERROR_CLASSES: dict[int, type[KiboApiError]] = {
    400: KiboBadRequestError,
    401: KiboAuthenticationError,
    403: KiboForbiddenError,
    404: KiboNotFoundError,
    405: KiboBadRequestError,
    409: KiboConflictError,
    429: KiboRateLimitError,
}
_EXCERPT = 200
#: Keys of a JSON error body in Kibo's shape (how test_connection tells Kibo from another server's 404).
KIBO_ERROR_KEYS = frozenset({"message", "errorCode", "applicationName", "correlationId", "items"})


def correlation_id(response: requests.Response, body: Any) -> str | None:
    header = response.headers.get("x-vol-correlation")
    if header:
        return header
    return body.get("correlationId") if isinstance(body, dict) else None


def excerpt(response: requests.Response) -> str:
    text = " ".join(response.text[:_EXCERPT].split())
    return text + ("..." if len(response.text) > _EXCERPT else "")


def order_from(response: requests.Response, order_id: int) -> dict[str, Any]:
    try:
        order = response.json()
    except (ValueError, RecursionError):  # not JSON, or nested past Python's limit
        order = None
    correlation = correlation_id(response, order)
    if not isinstance(order, dict):
        raise KiboResponseError(
            f"Kibo answered with something that is not an order: {excerpt(response)!r}",
            status=response.status_code,
            order_id=order_id,
            correlation_id=correlation,
        )
    returned = order.get("orderID", order.get("orderId", order.get("id")))
    if str(returned) != str(order_id):
        raise KiboResponseError(
            f"Kibo returned order {returned!r} instead of the order requested",
            status=response.status_code,
            order_id=order_id,
            correlation_id=correlation,
        )
    return order


def error_from(
    response: requests.Response,
    message: str,
    *,
    order_id: int | None,
    may_have_applied: bool = False,
    hint: str | None = None,
) -> KiboError:
    """The error an answer's status means, built once with everything known about the call."""
    try:
        body = response.json()
    except (ValueError, RecursionError):  # not JSON, or nested past Python's limit
        body = None
    fields = body if isinstance(body, dict) else {}
    status = response.status_code
    cls = ERROR_CLASSES.get(status) or (KiboServerError if status >= 500 else KiboApiError)
    kibo_message = fields.get("message")
    if kibo_message is None and response.text and not isinstance(body, dict):
        kibo_message = excerpt(response)
    extra: dict[str, Any] = {}
    if status == 429:
        retry_after = response.headers.get("Retry-After")
        message += f", rate limited (Retry-After {retry_after or 'not given'})"
        extra["retry_after"] = retry_after_seconds(retry_after)
    elif 300 <= status < 400:
        cls = KiboRedirectError
        location = without_userinfo(response.headers.get("Location") or "(no Location header)")
        message += (
            f": redirected to {location}, and redirects are never followed (a redirected request "
            "could carry the shared secret or the cancel elsewhere); set the connection's host or "
            "auth_url to the final address"
        )
        kibo_message = None
    if hint:
        message += f". {hint}"
    items = fields.get("items")
    return cls(
        message,
        status=status,
        error_code=fields.get("errorCode"),
        kibo_message=kibo_message,
        order_id=order_id,
        correlation_id=correlation_id(response, body),
        # Kibo's own explanation of a 400 is often only here (one item per problem).
        items=items if isinstance(items, list) else [items] if items else None,
        additional_error_data=fields.get("additionalErrorData"),
        may_have_applied=may_have_applied,
        **extra,
    )
