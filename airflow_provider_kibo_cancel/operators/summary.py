"""The bulk operator's summary: its shape (typed, field by field), how it is built, and what it says.

The summary is the provider's most important output: ``BulkCancelOrdersOperator`` returns it (XCom
``return_value``) and pushes it to XCom key ``summary`` whatever the outcome. Everything in it is plain
JSON. The halt and failure messages of a run are built here too, from the summary and the outcome they
describe.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, cast

from airflow_provider_kibo_cancel.exceptions import KiboBulkCancelError
from airflow_provider_kibo_cancel.operators import outcome as outcomes
from airflow_provider_kibo_cancel.operators.outcome import BulkCancelOutcome, ProgressSnapshot


class Logger(Protocol):
    """The operator's logger (stdlib's or the Task SDK's)."""

    def debug(self, msg: Any, /, *args: Any, **kwargs: Any) -> Any: ...

    def info(self, msg: Any, /, *args: Any, **kwargs: Any) -> Any: ...

    def warning(self, msg: Any, /, *args: Any, **kwargs: Any) -> Any: ...


if TYPE_CHECKING:
    from airflow_provider_kibo_cancel.bulk_plan import BulkCancelPlan
    from airflow_provider_kibo_cancel.cancel_request import CancelOrderRequest
    from airflow_provider_kibo_cancel.exceptions import KiboError

#: The XCom key that holds the summary whatever the outcome (success, failure, stop).
SUMMARY_XCOM_KEY = "summary"
#: ``halted`` of the summary of a real run that ``max_orders`` refused before sending anything.
MAX_ORDERS_REFUSED = "max_orders"


class InvalidEntry(TypedDict):
    """An input entry that failed validation: ``input`` as given (its repr when not JSON), ``errors``."""

    input: Any
    errors: list[str]


class DuplicateEntry(TypedDict):
    """A later entry of an order id given before: the ``order_id``, and the ``input`` as given."""

    order_id: int
    input: Any


class FailureRecord(TypedDict):
    """
    One failed order in a summary's ``failed`` list.

    - ``order_id`` (int): the order.
    - ``error`` (str): the whole error message (status, Kibo's errorCode and message, correlation id).
    - ``status`` (int or None): the HTTP status Kibo answered with; None when there was no answer
      (a timeout, a connection error, a stop).
    - ``error_code`` (str or None): Kibo's ``errorCode``.
    - ``kibo_message`` (str or None): Kibo's ``message``.
    - ``items`` (list): Kibo's ``items``, one per problem it found (bounded).
    - ``additional_error_data`` (any JSON): Kibo's ``additionalErrorData`` (bounded).
    - ``correlation_id`` (str or None): Kibo's correlation id, for its support.
    - ``retryable`` (bool): a task retry may settle the order (a transient failure).
    - ``may_have_applied`` (bool): an attempt may have reached Kibo and been applied.
    - ``rate_limited`` (bool): the order was refused with 429 after every attempt.
    """

    order_id: int
    error: str
    status: int | None
    error_code: str | None
    kibo_message: str | None
    items: list[Any]
    additional_error_data: Any
    correlation_id: str | None
    retryable: bool
    may_have_applied: bool
    rate_limited: bool


class _SummaryCore(TypedDict):
    total: int
    canceled: list[int]
    already_canceled: list[int]
    failed: list[FailureRecord]
    not_attempted: list[int]
    invalid: list[InvalidEntry]
    duplicates: list[DuplicateEntry]
    dry_run: bool


class BulkCancelSummary(_SummaryCore, total=False):
    """
    What a bulk cancel returns: every input entry appears exactly once, each list in input order.

    Always there:

    - ``total`` (int): the number of input entries.
    - ``canceled`` (list of int): orders this run canceled (a durable run: this DAG run).
    - ``already_canceled`` (list of int): orders Kibo had canceled before (a 409, or read back CANCELED).
    - ``failed`` (list of :class:`FailureRecord`): orders whose cancel failed, each with its error.
    - ``not_attempted`` (list of int): orders never sent because the run stopped (a timeout or kill, the
      circuit breaker, refused credentials, a rate-limit wait it could not spend, ``max_orders``).
    - ``invalid`` (list of :class:`InvalidEntry`): entries that
      failed validation, never sent: ``{"input": ..., "errors": [...]}``.
    - ``duplicates`` (list of :class:`DuplicateEntry`): later
      entries of an order id given before: ``{"order_id": ..., "input": ...}``.
    - ``dry_run`` (bool): True for a dry run (nothing sent).

    Sometimes there:

    - ``would_cancel`` (list of int): a dry run's plan, or the plan ``max_orders`` refused.
    - ``halted`` (str or None): why a real run stopped dispatching (``stopped``, ``circuit_open``,
      ``rate_limited``, ``credentials_refused``, ``forbidden``, ``repeated_bad_request``, ``max_orders``),
      None when it ran to the end; not in a dry run's summary.
    - ``elapsed_seconds`` (float): how long the request phase took, in all tries and deferrals.
    - ``orders`` (dict): with ``include_orders``, each canceled order as Kibo returned it, by order id.
    """

    would_cancel: list[int]
    halted: str | None
    elapsed_seconds: float
    orders: dict[str, dict[str, Any]]


def counted(count: int, singular: str, plural: str | None = None) -> str:
    """``1 duplicate``, ``2 duplicates``."""
    return f"{count} {singular if count == 1 else plural or singular + 's'}"


def failure_entry(order_id: int, exc: KiboError) -> FailureRecord:
    """One order's failure as the summary shows it (JSON, no secrets), Kibo's items included."""
    return cast("FailureRecord", {**exc.to_dict(), "order_id": order_id, "rate_limited": exc.rate_limited})


def _without_order_id(text: str, order_id: Any) -> str:
    text = " ".join(text.split())
    return re.sub(rf"(?<![0-9]){re.escape(str(order_id))}(?![0-9])", "{order}", text) if order_id else text


def error_description(entry: FailureRecord) -> str:
    """What Kibo said about one failed order, with its order id taken out ("... order {order} ...")."""
    order_id = entry.get("order_id")
    said = []
    if entry.get("kibo_message"):
        said.append(str(entry["kibo_message"]))
    for item in entry.get("items") or []:
        text = item.get("message") if isinstance(item, dict) else item
        if text and str(text) not in said:
            said.append(str(text))
    if entry.get("status") is None or not said:
        # No answer from Kibo to quote (a timeout, a stop): the error's own text, minus its order id.
        text = str(entry.get("error", ""))
        return _without_order_id(text, order_id)
    head = f"HTTP {entry['status']}" + (f" {entry['error_code']}" if entry.get("error_code") else "")
    return f"{head}: " + _without_order_id("; ".join(said), order_id)


def error_signature(entry: FailureRecord) -> tuple[Any, ...]:
    """Failures with equal signatures are the same error: same status, errorCode and message."""
    return (entry.get("status"), entry.get("error_code"), error_description(entry))


def group_failures(failed: list[FailureRecord]) -> list[tuple[str, list[int]]]:
    """Identical errors together, most frequent first: (description, the order ids it failed)."""
    groups: dict[tuple[Any, ...], tuple[str, list[int]]] = {}
    for entry in failed:
        key = error_signature(entry)
        if key not in groups:
            groups[key] = (error_description(entry), [])
        groups[key][1].append(entry["order_id"])
    return sorted(groups.values(), key=lambda group: -len(group[1]))


def build_summary(
    plan: BulkCancelPlan, outcome: BulkCancelOutcome | None, *, refused: bool = False
) -> BulkCancelSummary:
    """
    Every entry once, each bucket in input order; ``outcome`` None for a dry run, or with
    ``refused`` for a real run refused by ``max_orders`` before sending (``dry_run`` false, every
    valid order ``not_attempted``, ``would_cancel`` the plan, ``halted`` ``max_orders``).
    """
    dry_run = outcome is None and not refused
    outcome = outcome or BulkCancelOutcome()
    requests = plan.requests
    summary: BulkCancelSummary = {
        "total": plan.total,
        "canceled": outcome.ids(requests, outcomes.CANCELED),
        "already_canceled": outcome.ids(requests, outcomes.ALREADY_CANCELED),
        "failed": [outcome.failures[order_id] for order_id in outcome.ids(requests, outcomes.FAILED)],
        "not_attempted": [] if dry_run else outcome.ids(requests, outcomes.NOT_ATTEMPTED),
        "invalid": plan.invalid,
        "duplicates": plan.duplicates,
        "dry_run": dry_run,
    }
    if dry_run or refused:
        summary["would_cancel"] = [request.order_id for request in requests]
    if refused:
        summary["halted"] = MAX_ORDERS_REFUSED
    elif not dry_run:
        summary["elapsed_seconds"] = round(outcome.elapsed, 3)
        summary["halted"] = outcome.halted
    if outcome.orders:
        summary["orders"] = outcome.orders
    return summary


@dataclass(frozen=True)
class ReasonHints:
    """The reason each order is sent with, and the published reason a near-miss one resembles."""

    reason_of: dict[int, str] = field(default_factory=dict)
    suggestions: dict[str, str] = field(default_factory=dict)  # a near-miss reason -> the published one

    @classmethod
    def of(cls, requests: list[CancelOrderRequest]) -> ReasonHints:
        # Here, not at the top: the pydantic request model costs ~5 ms of every DAG file's parse.
        from airflow_provider_kibo_cancel.cancel_request import reason_suggestion  # noqa: PLC0415

        unpublished = dict.fromkeys(r.disposition_reason for r in requests if not r.is_published_reason)
        return cls(
            {request.order_id: request.disposition_reason for request in requests},
            {reason: hint for reason in unpublished if (hint := reason_suggestion(reason))},
        )

    def warn_unpublished(self, requests: list[CancelOrderRequest], log: Logger) -> None:
        """One warning per run (with the count), not one per order; a near miss of a published reason
        gets a "did you mean" (kept for the failure message too)."""
        unpublished: dict[str, int] = {}
        for request in requests:
            if not request.is_published_reason:
                unpublished[request.disposition_reason] = unpublished.get(request.disposition_reason, 0) + 1
        if unpublished:
            count = sum(unpublished.values())
            log.warning(
                "%s %s a disposition_reason Kibo does not publish (%s); sending as given%s",
                counted(count, "order"),
                "uses" if count == 1 else "use",
                ", ".join(f"{reason!r}: {count}" for reason, count in sorted(unpublished.items())),
                "".join(f"; did you mean {hint!r} for {typo!r}?" for typo, hint in self.suggestions.items()),
            )

    def grouped_failures(self, failed: list[FailureRecord], limit: int = 3) -> list[str]:
        """Identical errors once, with their count and orders ("20 x HTTP 400 ...: ... (orders ...)"),
        plus a "did you mean" when those orders used a near miss of a published reason."""
        lines = []
        for description, order_ids in group_failures(failed)[:limit]:
            shown = ", ".join(str(order_id) for order_id in order_ids[:5])
            more = f" and {len(order_ids) - 5} more" if len(order_ids) > 5 else ""
            line = f"{len(order_ids)} x {description} ({counted(len(order_ids), 'order')}: {shown}{more})"
            reasons = dict.fromkeys(self.reason_of.get(order_id) for order_id in order_ids)
            hints = [
                f"did you mean {self.suggestions[reason]!r} instead of disposition_reason {reason!r}?"
                for reason in reasons
                if reason in self.suggestions
            ]
            lines.append(line + ("; " + " ".join(hints) if hints else ""))
        return lines


def halt_error(
    outcome: BulkCancelOutcome,
    summary: BulkCancelSummary,
    hints: ReasonHints,
    *,
    max_deferred_wait: float,
    deferral_refused: str | None = None,
) -> KiboBulkCancelError:
    """The error of a run that stopped dispatching before the end: why, and whether a retry can help."""
    left = counted(len(summary["not_attempted"]), "order")
    done = (
        f"{len(summary['canceled'])} canceled, {len(summary['already_canceled'])} canceled already, "
        f"{len(summary['failed'])} failed, {left} not attempted; the summary is in XCom key "
        f"'{SUMMARY_XCOM_KEY}'"
    )
    retryable = True
    if outcome.halted == outcomes.CREDENTIALS_REFUSED:
        reason, retryable = f"Kibo refused the credentials ({outcome.halt_error})", False
    elif outcome.halted == outcomes.FORBIDDEN:
        reason, retryable = (
            f"Kibo refused this tenant or site for {outcomes.FORBIDDEN_IN_A_ROW} orders in a row "
            f"({outcome.halt_error})",
            False,
        )
    elif outcome.halted == outcomes.REPEATED_BAD_REQUEST:
        # The request itself is refused (a typo'd reason): every order with that reason would be
        # refused alike, and a retry sends the same request.
        refused = ", ".join(repr(r) for r in outcome.refused_reasons)
        reason, retryable = (
            f"Kibo refused {outcomes.SAME_BAD_REQUEST_IN_A_ROW} orders in a row with the same error for "
            f"disposition_reason {refused}, so the other orders with it were not sent (orders with "
            f"other reasons were): {'; '.join(hints.grouped_failures(summary['failed'], 1))}",
            False,
        )
    elif outcome.halted == outcomes.CIRCUIT_OPEN:
        reason = f"Kibo looks down ({outcome.halt_error or 'every request failed for a retry schedule'})"
    elif outcome.halted == outcomes.RATE_LIMITED:
        resume = resume_time(outcome)
        if deferral_refused is not None:
            reason = (
                f"Kibo asked to wait until {resume} (429 Retry-After), beyond max_deferred_wait "
                f"({max_deferred_wait:g} s in all): {deferral_refused}"
            )
        else:
            reason = (
                f"Kibo asked to wait longer than max_retry_wait (429 Retry-After); it accepts calls "
                f"again at {resume}"
            )
    else:
        reason = "the task was stopped (timeout, kill or interrupt)"
    return KiboBulkCancelError(
        f"Bulk cancel stopped early: {reason}. {done}",
        summary=summary,
        retryable=retryable,
        resume_at=(outcome.resume_at or time.time()) if outcome.halted == outcomes.RATE_LIMITED else None,
    )


def resume_time(outcome: BulkCancelOutcome) -> str:
    """When a rate-limited run may send again, as a person reads it."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(outcome.resume_at or time.time()))


def failures_error(
    summary: BulkCancelSummary, hints: ReasonHints, resume_at: float | None
) -> KiboBulkCancelError:
    """The error of a run that attempted everything and had failed or invalid entries."""
    first_problems = hints.grouped_failures(summary["failed"]) + [
        f"{i['input']!r}: {'; '.join(i['errors'])}" for i in summary["invalid"][:3]
    ]
    message = (
        f"Bulk cancel finished with {len(summary['failed'])} failed and {len(summary['invalid'])} "
        f"invalid of {counted(summary['total'], 'entry', 'entries')} ({len(summary['canceled'])} "
        f"canceled, {len(summary['already_canceled'])} canceled already); the summary is in XCom key "
        f"'{SUMMARY_XCOM_KEY}'. First problems: {first_problems}"
    )
    return KiboBulkCancelError(
        message,
        summary=summary,
        retryable=any(f["retryable"] for f in summary["failed"]),
        resume_at=resume_at,
    )


def log_progress(log: Logger, progress: ProgressSnapshot) -> None:
    """One progress line, from counts the run took under its lock (never the live outcome)."""
    rate = progress.rate
    eta = (progress.total - progress.done) / rate if rate else float("inf")
    log.info(
        "Bulk cancel progress: %d/%d done (%.0f%%), %.1f orders/s, ETA %.0f s; "
        "%d canceled, %d already canceled, %d failed",
        progress.done,
        progress.total,
        100 * progress.done / progress.total if progress.total else 100,
        rate,
        eta,
        progress.canceled,
        progress.already_canceled,
        progress.failed,
    )


def log_result(log: Logger, summary: BulkCancelSummary) -> None:
    """The run's result: one line, and each failure and already canceled order at debug level."""
    for failure in summary["failed"]:
        log.debug("Order %s failed: %s", failure["order_id"], failure["error"])
    for order_id in summary["already_canceled"]:
        log.debug("Order %s was canceled already", order_id)
    log.info(
        "Bulk cancel finished in %.1f s: %s canceled, %s canceled already, %s failed, %s not attempted",
        summary.get("elapsed_seconds", 0.0),
        counted(len(summary["canceled"]), "order"),
        len(summary["already_canceled"]),
        len(summary["failed"]),
        len(summary["not_attempted"]),
    )
