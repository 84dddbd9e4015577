"""Settling a cancel: its answer, or, when it may have been applied (a 409, a lost answer), the order
read back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from airflow_provider_kibo_cancel.cancel_request import CANCELED_STATUS, CancelResult
from airflow_provider_kibo_cancel.exceptions import KiboConflictError, KiboError, KiboResponseError
from airflow_provider_kibo_cancel.hooks.decision import Answer
from airflow_provider_kibo_cancel.hooks.responses import order_from


class _Log(Protocol):
    def debug(self, msg: Any, /, *args: Any, **kwargs: Any) -> Any: ...


def read_back_canceled(
    get_order: Callable[[int], dict[str, Any]], order_id: int, cause: KiboError, log: _Log
) -> dict[str, Any]:
    """Resolve a cancel that may have been applied before: succeed if the order reads CANCELED."""
    try:
        order = get_order(order_id)
    except KiboError as read_error:
        # The cancel's own error stays the one reported; the read-back adds why it could not settle it.
        raise cause.replace(
            f"{cause.message}; reading the order back to settle it failed too: {read_error.message}",
            # Undecided: a later (task) retry may settle it.
            retryable=cause.retryable or read_error.retryable,
            rate_limited=cause.rate_limited or read_error.rate_limited,
        ) from None
    status = str(order.get("orderStatus") or order.get("status") or "")
    if status.upper() != CANCELED_STATUS:
        raise cause
    log.debug("Order %s reads CANCELED after %s", order_id, cause)
    return order


def settle_cancel(
    send: Callable[[], Answer], get_order: Callable[[int], dict[str, Any]], order_id: int, log: _Log
) -> CancelResult:
    """
    Send a cancel (``send``) and settle what it did. Any 2xx settles the order as canceled by this call:
    when its body is not the order, the order is read back. A 409, or a failure after an attempt that
    may have been applied, is settled by reading the order back too.
    """
    try:
        answer = send()
    except KiboError as exc:
        if not (isinstance(exc, KiboConflictError) or exc.may_have_applied):
            raise
        # After an attempt that may have landed, a CANCELED order was most likely canceled by it.
        order = read_back_canceled(get_order, order_id, exc, log)
        return CancelResult(order, already_canceled=not exc.may_have_applied)
    try:
        order = order_from(answer.response, order_id)
    except KiboResponseError as exc:
        # Kibo answered 2xx, so the cancel was most likely applied: the order itself tells.
        applied = exc.replace(
            exc.message + "; Kibo answered the cancel with a 2xx, so it may have been applied",
            may_have_applied=True,
        )
        return CancelResult(
            read_back_canceled(get_order, order_id, applied, log),
            already_canceled=False,
        )
    return CancelResult(order, already_canceled=False)
