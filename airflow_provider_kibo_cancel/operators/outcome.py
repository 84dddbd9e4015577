"""A bulk run's accounting: the buckets and halts, the outcome order by order, and its compact form.

The worker loop (:mod:`~airflow_provider_kibo_cancel.operators.bulk_runner`) writes a
:class:`BulkCancelOutcome`; the summary (:mod:`~airflow_provider_kibo_cancel.operators.summary`), the
deferral's state and the durable ledger read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_kibo_cancel.exceptions import (
    KiboAuthenticationError,
    KiboCircuitOpenError,
    KiboError,
    KiboRateLimitWaitError,
    KiboStoppedError,
)
from airflow_provider_kibo_cancel.operators.encoding import decode_ids, encode_ids, restore_failures

if TYPE_CHECKING:
    from airflow_provider_kibo_cancel.cancel_request import CancelOrderRequest
    from airflow_provider_kibo_cancel.operators.summary import FailureRecord

CANCELED = "canceled"
ALREADY_CANCELED = "already_canceled"
FAILED = "failed"
NOT_ATTEMPTED = "not_attempted"

# Why a run stopped dispatching before the end.
STOPPED = "stopped"  # the task's timeout, kill or interrupt
CIRCUIT_OPEN = "circuit_open"  # Kibo evidently down
RATE_LIMITED = "rate_limited"  # Kibo asked to wait longer than the run may sleep
CREDENTIALS_REFUSED = "credentials_refused"
FORBIDDEN = "forbidden"  # Kibo refused this tenant or site for several orders in a row
#: 403s in a row (no other answer between) that stop a run: one order may be another site's, three are not.
FORBIDDEN_IN_A_ROW = 3
#: Kibo refused the request itself, the same way, for several orders in a row (a typo'd reason repeats
#: into every order): the rest would be refused alike.
REPEATED_BAD_REQUEST = "repeated_bad_request"
#: Identical 400s in a row (same status, errorCode and message once the order id is taken out) that stop
#: a run: one order's 400 may be about that order, three alike are about the request.
SAME_BAD_REQUEST_IN_A_ROW = 3
#: Orders in a row that used up all their attempts on 429 (no other answer between) that halt a run as
#: rate limited: a wall that does not lift within a retry schedule would cost every order its schedule.
RATE_LIMITED_IN_A_ROW = 3


@dataclass
class BulkCancelOutcome:
    """What the request phase ended with, order by order (order id -> bucket), plus why it ended."""

    results: dict[int, str] = field(default_factory=dict)
    failures: dict[int, FailureRecord] = field(default_factory=dict)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    elapsed: float = 0.0
    halted: str | None = None  # STOPPED, CIRCUIT_OPEN, RATE_LIMITED, CREDENTIALS_REFUSED, ... or None
    halt_error: KiboError | None = None  # the error that made the run stop dispatching, when there is one
    resume_at: float | None = None  # with RATE_LIMITED: when Kibo accepts calls again (epoch seconds)
    # Orders whose earlier attempt (before a deferral) may have been applied: found canceled when sent
    # again, the cancel was most likely ours, as the hook decides within one call.
    maybe_applied: set[int] = field(default_factory=set)
    # Reasons Kibo refused the same way for several orders in a row (a typo'd reason): the other orders
    # with that reason are not sent; orders with other reasons are. Reason -> the refusal.
    refused_reasons: dict[str, KiboError] = field(default_factory=dict)

    def count(self, bucket: str) -> int:
        """How many orders are in ``bucket``: for a settled outcome (a running one: BulkRun.snapshot)."""
        return sum(1 for value in self.results.values() if value == bucket)

    def ids(self, requests: list[CancelOrderRequest], bucket: str) -> list[int]:
        """Order ids in ``bucket``, in input order."""
        return [r.order_id for r in requests if self.results.get(r.order_id, NOT_ATTEMPTED) == bucket]


@dataclass(frozen=True)
class ProgressSnapshot:
    """The counts of a running bulk cancel at one moment, taken under the run's lock (see
    :meth:`BulkRun.snapshot`): a progress line reads this, never the outcome the workers are writing."""

    total: int
    done: int
    elapsed: float
    canceled: int
    already_canceled: int
    failed: int

    @property
    def rate(self) -> float:
        """Orders settled per second so far."""
        return self.done / self.elapsed if self.elapsed > 0 else 0.0


#: Longest error text kept per failed order across a deferral.
_STATE_ERROR_CHARS = 300


def compact_outcome(requests: list[CancelOrderRequest], outcome: BulkCancelOutcome) -> dict[str, Any]:
    """
    What a deferred run carries to its resumption: settled order ids by bucket (encoded, see
    :mod:`~airflow_provider_kibo_cancel.operators.encoding`) and the failures' short records, never
    orders. Orders refused with a 429 and those never sent are left out: they are sent again after the
    wait, and those whose earlier attempt may have been applied (a 5xx, then the 429) are listed, so that
    finding them canceled then counts as this run's cancel. Ids are encoded as the durable ledger does.
    """
    failed: list[FailureRecord] = []
    maybe_applied = set(outcome.maybe_applied)
    for order_id in outcome.ids(requests, FAILED):
        entry = outcome.failures[order_id]
        if not entry.get("rate_limited"):
            failed.append(entry)
        elif entry.get("may_have_applied"):
            maybe_applied.add(order_id)
    return {
        "elapsed": outcome.elapsed,
        CANCELED: encode_ids(outcome.ids(requests, CANCELED)),
        ALREADY_CANCELED: encode_ids(outcome.ids(requests, ALREADY_CANCELED)),
        # Each failure whole (its text bounded), Kibo's items and correlation id kept: a deferral's state
        # is not held to the state store's size, and the summary after the wait must still say them.
        FAILED: [{**entry, "error": entry["error"][:_STATE_ERROR_CHARS]} for entry in failed],
        "maybe_applied": encode_ids(maybe_applied),
    }


def restore_outcome(state: dict[str, Any]) -> BulkCancelOutcome:
    """The outcome a deferred run had settled, from :func:`compact_outcome`'s state (empty for none)."""
    outcome = BulkCancelOutcome(elapsed=float(state.get("elapsed", 0.0)))
    for bucket in (CANCELED, ALREADY_CANCELED):
        for order_id in decode_ids(state.get(bucket, "")):
            outcome.results[order_id] = bucket
    for order_id, entry in restore_failures(state.get(FAILED, [])).items():
        outcome.results[order_id] = FAILED
        outcome.failures[order_id] = entry
    outcome.maybe_applied = set(decode_ids(state.get("maybe_applied", "")))
    return outcome


def halt_reason(exc: KiboError) -> str | None:
    """The run-wide condition an order's error reveals, if any."""
    if isinstance(exc, KiboStoppedError):
        return STOPPED
    if isinstance(exc, KiboCircuitOpenError):
        return CIRCUIT_OPEN
    if isinstance(exc, KiboRateLimitWaitError):
        return RATE_LIMITED
    if isinstance(exc, KiboAuthenticationError):
        return CREDENTIALS_REFUSED  # refused at the token request, or a 401 even after a fresh token
    return None
