"""The request phase of a bulk cancel: worker threads over one hook, and a stop that holds.

What the run settles is kept in :mod:`~airflow_provider_kibo_cancel.operators.outcome`. Kept apart from the
operator so that what Airflow sees (templating, XCom, task failure) and what Kibo sees
(how many requests, when they stop) can each be read on its own.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from airflow_provider_kibo_cancel.exceptions import (
    KiboBadRequestError,
    KiboError,
    KiboForbiddenError,
    KiboRateLimitError,
    KiboRateLimitWaitError,
    KiboStoppedError,
)
from airflow_provider_kibo_cancel.operators.outcome import (
    ALREADY_CANCELED,
    CANCELED,
    CIRCUIT_OPEN,
    CREDENTIALS_REFUSED,
    FAILED,
    FORBIDDEN,
    FORBIDDEN_IN_A_ROW,
    NOT_ATTEMPTED,
    RATE_LIMITED,
    RATE_LIMITED_IN_A_ROW,
    REPEATED_BAD_REQUEST,
    SAME_BAD_REQUEST_IN_A_ROW,
    STOPPED,
    BulkCancelOutcome,
    ProgressSnapshot,
    halt_reason,
)
from airflow_provider_kibo_cancel.operators.summary import error_signature, failure_entry

if TYPE_CHECKING:
    from airflow_provider_kibo_cancel.cancel_request import CancelOrderRequest
    from airflow_provider_kibo_cancel.hooks.kibo import KiboHook

#: After a stop (timeout, kill, interrupt), how long requests already in flight may take to finish.
STOP_GRACE_SECONDS = 5.0
#: A durable run writes its ledger at least this often (seconds) while anything changes.
JOURNAL_INTERVAL = 1.0
#: A durable run lists this many seconds of orders (at the current rate) as pending before sending them.
RESERVE_SECONDS = 1.5
#: The most orders listed as pending ahead of the workers.
MAX_RESERVATION = 1000

#: Receives a durable run's progress: the outcome so far and the orders that may be applied (in flight or
#: about to be sent); returns False when the ledger could not be written (the run then goes on without).
Journal = Callable[["BulkCancelOutcome", list[int]], bool]


class BulkRun:
    """
    Send every cancel with at most ``max_concurrency`` in flight over the hook's one session and token.

    Kibo errors are collected, not raised. The run stops dispatching at once when the task is stopped
    (:meth:`stop`, or an exception such as a timeout reaching the thread that waits in :meth:`run`),
    when the hook's circuit opens, when Kibo asks every caller to wait longer than the hook may sleep,
    or when the credentials are refused; whatever was never sent is ``not_attempted``. Plain worker
    threads pulling from one iterator, rather than one Future per order: thousands of futures and their
    waiters cost more CPU than the requests' own Python code.
    """

    def __init__(
        self,
        hook: KiboHook,
        requests: list[CancelOrderRequest],
        *,
        max_concurrency: int,
        keep_orders: bool = False,
        outcome: BulkCancelOutcome | None = None,
        journal: Journal | None = None,
        journal_interval: float = JOURNAL_INTERVAL,
    ) -> None:
        self.hook = hook
        self.requests = requests
        self.max_concurrency = max_concurrency
        self.keep_orders = keep_orders
        # A resumed run starts from what earlier segments settled (their orders are not in ``requests``).
        self.outcome = outcome or BulkCancelOutcome()
        self._elapsed_before = self.outcome.elapsed
        self._lock = threading.Lock()
        # Workers wait on it for a reservation (durable runs), and tell run() when they end.
        self._cond = threading.Condition(self._lock)
        self._next = 0  # index of the next request to dispatch
        # A durable run sends only orders the ledger lists as pending (may be applied) beforehand:
        # requests[:_reserved] are so listed. Without a journal, every order is free to go.
        self.journal = journal
        self.journal_interval = journal_interval
        self._reserved = 0 if journal is not None else len(requests)
        self._want_reservation = False
        self._active = 0  # worker threads still running
        self._settled_before = len(self.outcome.results)
        #: Ledger writes this run made (for the figures in the tests and benchmarks).
        self.journal_writes = 0
        self._journaled: tuple[int, frozenset[int]] | None = None  # what the last write held
        self._in_flight: dict[int, CancelOrderRequest] = {}  # thread ident -> request
        self._total = len(requests) + len(self.outcome.results)  # a resumed run counts what was settled
        self._forbidden_in_a_row = 0
        # Per reason: the last 400's signature and how many orders in a row got it.
        self._same_bad_request: dict[str, tuple[tuple[Any, ...] | None, int]] = {}
        self._rate_limited_in_a_row = 0
        self._skipped_for_reason = 0  # orders not sent because Kibo refused their reason
        self._closed = False  # set once the outcome is final: late results are dropped
        self._crashed: list[BaseException] = []
        self._started: float | None = None  # monotonic time run() started

    def stop(self) -> None:
        """Stop dispatching and end every wait of the hook; requests on the wire may finish."""
        self.hook.stop()

    def run(
        self,
        progress: Callable[[ProgressSnapshot], None] | None = None,
        progress_interval: float = 10.0,
    ) -> BulkCancelOutcome:
        """
        Run to the end or to a halt; ``progress`` is called every ``progress_interval`` seconds and once
        at the end, with a :class:`ProgressSnapshot` taken under the run's lock. Any exception reaching
        this thread (a task timeout, an interrupt) stops the run, waits up to :data:`STOP_GRACE_SECONDS`
        for requests in flight, settles the outcome and re-raises.
        """
        started = time.monotonic()
        workers = [
            threading.Thread(target=self._work, name=f"kibo-cancel-{index}", daemon=True)
            for index in range(min(self.max_concurrency, len(self.requests)))
        ]
        try:
            self._active = len(workers)
            for thread in workers:
                thread.start()
            self._started = started
            next_report = started + progress_interval
            next_journal = started + self.journal_interval
            while True:
                # Waits of at most a second: a stop from on_kill (a signal handler) is seen within one.
                # Workers wake this thread when they end or need orders reserved in the ledger.
                now = time.monotonic()
                wait = 1.0
                if progress is not None:
                    wait = min(wait, next_report - now)
                if self.journal is not None:
                    wait = min(wait, next_journal - now)
                with self._cond:
                    if self._active and not self._want_reservation:
                        self._cond.wait(timeout=max(0.0, wait))
                    active, wanted = self._active, self._want_reservation
                if not active:
                    break
                if self.journal is not None and (wanted or time.monotonic() >= next_journal):
                    self._write_journal()
                    next_journal = time.monotonic() + self.journal_interval
                if progress is not None and time.monotonic() >= next_report:
                    progress(self.snapshot())
                    # A callback slower than the interval skips reports rather than repeating them.
                    next_report += progress_interval
                    if next_report <= time.monotonic():
                        next_report = time.monotonic() + progress_interval
            for thread in workers:
                thread.join()
        except BaseException:
            self.stop()
            self._join(workers, STOP_GRACE_SECONDS)
            self._settle(started)
            raise
        self._settle(started)
        if self._crashed:
            raise self._crashed[0]
        if progress is not None:
            progress(self.snapshot())
        return self.outcome

    def snapshot(self) -> ProgressSnapshot:
        """Consistent counts of the run so far, read under the lock the workers write under."""
        with self._lock:
            counts: dict[str, int] = {}
            for bucket in self.outcome.results.values():
                counts[bucket] = counts.get(bucket, 0) + 1
            if self._closed:
                elapsed = self.outcome.elapsed
            else:
                elapsed = self._elapsed_before + time.monotonic() - (self._started or time.monotonic())
        return ProgressSnapshot(
            total=self._total,
            done=sum(count for bucket, count in counts.items() if bucket != NOT_ATTEMPTED),
            elapsed=elapsed,
            canceled=counts.get(CANCELED, 0),
            already_canceled=counts.get(ALREADY_CANCELED, 0),
            failed=counts.get(FAILED, 0),
        )

    # --- worker threads ---------------------------------------------------------------------------------

    def _work(self) -> None:
        try:
            self._send_all()
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    def _take(self) -> CancelOrderRequest | None:
        """
        The next order to send (under the lock), once the ledger lists it; None when done or halted.
        Orders whose reason Kibo refused are skipped (not attempted).
        """
        while True:
            if self._halted() or self._next >= len(self.requests):
                return None
            if self._next < self._reserved:
                request = self.requests[self._next]
                self._next += 1
                if request.disposition_reason in self.outcome.refused_reasons:
                    self.outcome.results[request.order_id] = NOT_ATTEMPTED
                    self._skipped_for_reason += 1
                    continue
                return request
            self._want_reservation = True
            self._cond.notify_all()
            self._cond.wait(timeout=0.2)  # a stop is seen within 0.2 s

    def _send_all(self) -> None:
        ident = threading.get_ident()
        while True:
            with self._lock:
                request = self._take()
                if request is None:
                    return
                self._in_flight[ident] = request
            try:
                result = self.hook.cancel(request, warn_unpublished_reason=False)
            except KiboError as exc:
                self._record_failure(ident, request, exc)
                continue
            except BaseException as exc:  # a bug, not an answer from Kibo: stop every worker
                with self._lock:
                    self._crashed.append(exc)
                    # The request may have gone out: _settle records it as failed, possibly applied.
                self.stop()
                return
            with self._lock:
                self._in_flight.pop(ident, None)
                self._forbidden_in_a_row = 0
                self._rate_limited_in_a_row = 0
                self._same_bad_request.pop(request.disposition_reason, None)
                if self._closed:
                    return
                ours = request.order_id in self.outcome.maybe_applied
                bucket = ALREADY_CANCELED if result.already_canceled and not ours else CANCELED
                self.outcome.results[request.order_id] = bucket
                if self.keep_orders:
                    self.outcome.orders[str(request.order_id)] = result.order

    def _record_failure(self, ident: int, request: CancelOrderRequest, exc: KiboError) -> None:
        with self._lock:
            self._in_flight.pop(ident, None)
            if self._closed:
                return
            signature = None
            if not exc.sent:
                self.outcome.results[request.order_id] = NOT_ATTEMPTED
            else:
                self.outcome.results[request.order_id] = FAILED
                entry = self.outcome.failures[request.order_id] = failure_entry(request.order_id, exc)
                if isinstance(exc, KiboBadRequestError):
                    signature = error_signature(entry)
            self._forbidden_in_a_row = (
                self._forbidden_in_a_row + 1 if isinstance(exc, KiboForbiddenError) else 0
            )
            # A 429 after every attempt, again and again: a wall that does not lift within the retries.
            walled = isinstance(exc, KiboRateLimitError) and exc.sent
            self._rate_limited_in_a_row = self._rate_limited_in_a_row + 1 if walled else 0
            self._count_bad_request(request, signature, exc)
            halt = halt_reason(exc)
            if halt is None and self._forbidden_in_a_row >= FORBIDDEN_IN_A_ROW:
                halt = FORBIDDEN
            if halt is None and self._rate_limited_in_a_row >= RATE_LIMITED_IN_A_ROW:
                halt = RATE_LIMITED
                # Kibo said when only if it sent Retry-After; else wait as long as a retry may.
                wait = max(self.hook.rate_limit_wait(), getattr(exc, "retry_after", None) or 0.0)
                self.outcome.resume_at = time.time() + max(1.0, wait or self.hook.longest_sleep)
            if halt is not None and self.outcome.halted is None:
                self.outcome.halted, self.outcome.halt_error = halt, exc
                if isinstance(exc, KiboRateLimitWaitError):
                    self.outcome.resume_at = exc.resume_at

    def _count_bad_request(
        self, request: CancelOrderRequest, signature: tuple[Any, ...] | None, exc: KiboError
    ) -> None:
        """The same 400 for orders with one reason, several in a row: that reason is refused."""
        reason = request.disposition_reason
        last, count = self._same_bad_request.get(reason, (None, 0))
        if signature is None:
            self._same_bad_request.pop(reason, None)
            return
        count = count + 1 if signature == last else 1
        self._same_bad_request[reason] = (signature, count)
        if count >= SAME_BAD_REQUEST_IN_A_ROW and reason not in self.outcome.refused_reasons:
            self.outcome.refused_reasons[reason] = exc

    def _halted(self) -> bool:
        """Whether to stop dispatching (called under the lock, before each order)."""
        if self.outcome.halted is not None or self._crashed:
            return True
        hook = self.hook
        if hook.stopped:
            self.outcome.halted = STOPPED
        elif hook.credentials_refused:
            self.outcome.halted = CREDENTIALS_REFUSED
        elif hook.circuit_open:
            self.outcome.halted = CIRCUIT_OPEN
        elif (wait := hook.rate_limit_wait()) > hook.longest_sleep:
            self.outcome.halted = RATE_LIMITED
            self.outcome.resume_at = time.time() + wait
        return self.outcome.halted is not None

    # --- the durable ledger -----------------------------------------------------------------------------

    def _write_journal(self) -> None:
        """
        Hand the journal what is settled and what may be applied (in flight, or reserved to be sent next),
        reserving the next block first when the workers need it. Called by run()'s thread only; the
        reservation takes effect once the journal has it, so no order leaves before it is listed.
        """
        journal = self.journal
        if journal is None:
            return
        with self._cond:
            if self._closed:
                return
            elapsed = max(time.monotonic() - (self._started or time.monotonic()), 0.001)
            rate = (len(self.outcome.results) - self._settled_before) / elapsed
            # A block covers the next second and a half at the current rate (at least two orders per
            # worker): about one write per second, and few orders listed that are not on their way yet.
            block = min(MAX_RESERVATION, max(2 * self.max_concurrency, math.ceil(rate * RESERVE_SECONDS)))
            reserved = self._reserved
            if self._want_reservation or reserved - self._next < block // 2:
                reserved = min(len(self.requests), max(reserved, self._next + block))
            pending = [request.order_id for request in self._in_flight.values()]
            pending += [request.order_id for request in self.requests[self._next : reserved]]
            seen = (len(self.outcome.results), frozenset(pending))
            if seen == self._journaled and reserved == self._reserved:
                return  # nothing new to write
            self._journaled = seen
            snapshot = BulkCancelOutcome(
                results=dict(self.outcome.results),
                failures=dict(self.outcome.failures),
                elapsed=self._elapsed_before + elapsed,
                maybe_applied=set(self.outcome.maybe_applied),
            )
        kept = journal(snapshot, pending)
        self.journal_writes += 1
        with self._cond:
            if kept:
                self._reserved = max(self._reserved, reserved)
            else:  # the ledger cannot be written: the run goes on as a plain (non-durable) one
                self.journal = None
                self._reserved = len(self.requests)
            self._want_reservation = False
            self._cond.notify_all()

    # --- the end ----------------------------------------------------------------------------------------

    def _join(self, workers: list[threading.Thread], grace: float) -> None:
        deadline = time.monotonic() + grace
        for thread in workers:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def _settle(self, started: float) -> None:
        """Make the outcome final: in-flight requests failed (outcome unknown), the rest not attempted."""
        with self._lock:
            self._closed = True
            outcome = self.outcome
            if self.hook.stopped:
                outcome.halted = STOPPED
            if outcome.halted is None and self._skipped_for_reason:
                outcome.halted = REPEATED_BAD_REQUEST
                outcome.halt_error = next(iter(outcome.refused_reasons.values()))
            for request in self._in_flight.values():
                outcome.results[request.order_id] = FAILED
                in_flight = KiboStoppedError(
                    f"Cancel of order {request.order_id} was still in flight when the run stopped; "
                    "it may have been applied (a re-run settles it)",
                    order_id=request.order_id,
                    may_have_applied=True,
                )
                outcome.failures[request.order_id] = failure_entry(request.order_id, in_flight)
            for request in self.requests:
                outcome.results.setdefault(request.order_id, NOT_ATTEMPTED)
            outcome.elapsed = self._elapsed_before + time.monotonic() - started
