"""BulkCancelOrdersOperator: cancel thousands of Kibo orders in one task, for reconciliation runs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_kibo_cancel._compat import BaseOperator
from airflow_provider_kibo_cancel.exceptions import KiboBulkCancelError, KiboError, KiboValidationError
from airflow_provider_kibo_cancel.operators import fail_task_unless_retryable
from airflow_provider_kibo_cancel.provider_info import DEFAULT_CONN_ID

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_kibo_cancel.hooks.kibo import KiboHook
    from airflow_provider_kibo_cancel.models import BulkCancelPlan, CancelOrderRequest

MAX_CONCURRENCY = 64


@dataclass
class BulkCancelOutcome:
    """What the request phase of a bulk cancel ended with, order by order."""

    canceled: list[int] = field(default_factory=list)
    already_canceled: list[int] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    elapsed: float = 0.0

    @property
    def done(self) -> int:
        return len(self.canceled) + len(self.already_canceled) + len(self.failed)


def cancel_all(
    hook: KiboHook,
    requests: list[CancelOrderRequest],
    *,
    max_concurrency: int,
    keep_orders: bool = False,
    progress: Callable[[BulkCancelOutcome, int], None] | None = None,
    progress_interval: float = 10.0,
) -> BulkCancelOutcome:
    """
    Send every cancel with at most ``max_concurrency`` in flight over the hook's one session and token.

    Every request is attempted; Kibo errors are collected, not raised. ``progress`` is called every
    ``progress_interval`` seconds and once at the end. Plain worker threads pulling from one iterator,
    rather than one Future per order: thousands of futures and their waiters cost more CPU than the
    requests' own Python code.
    """
    outcome = BulkCancelOutcome()
    lock = threading.Lock()
    todo = iter(requests)
    crashed: list[BaseException] = []

    def worker() -> None:
        while not crashed:
            with lock:
                request = next(todo, None)
            if request is None:
                return
            try:
                result = hook.cancel(request)
            except KiboError as exc:
                with lock:
                    outcome.failed.append(_failure(request.order_id, exc))
                continue
            except BaseException as exc:  # a bug, not an answer from Kibo: stop every worker
                crashed.append(exc)
                return
            with lock:
                bucket = outcome.already_canceled if result.already_canceled else outcome.canceled
                bucket.append(request.order_id)
                if keep_orders:
                    outcome.orders[str(request.order_id)] = result.order

    started = time.monotonic()
    workers = [
        threading.Thread(target=worker, name=f"kibo-cancel-{index}", daemon=True)
        for index in range(min(max_concurrency, len(requests)))
    ]
    for thread in workers:
        thread.start()
    next_report = started + progress_interval
    for thread in workers:
        while thread.is_alive():
            thread.join(timeout=max(0.0, next_report - time.monotonic()))
            if progress is not None and time.monotonic() >= next_report:
                outcome.elapsed = time.monotonic() - started
                progress(outcome, len(requests))
                next_report += progress_interval
    outcome.elapsed = time.monotonic() - started
    if crashed:
        raise crashed[0]
    if progress is not None:
        progress(outcome, len(requests))
    return outcome


def _failure(order_id: int, exc: KiboError) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "error": str(exc),
        "status": exc.status,
        "error_code": exc.error_code,
        "correlation_id": exc.correlation_id,
        "retryable": exc.retryable,
    }


class BulkCancelOrdersOperator(BaseOperator):
    """
    Cancel many Kibo orders in one task with bounded concurrency, one HTTP session and one token.

    Every entry is validated first; valid, de-duplicated orders are then canceled, ``max_concurrency``
    at a time. A 429 pauses every worker for its Retry-After. Returns a JSON summary in which every input
    entry appears exactly once: ``canceled``, ``already_canceled``, ``failed`` (with the error),
    ``invalid`` (never sent) and ``duplicates``. Re-running after a partial failure cancels only what is
    left; the rest lands in ``already_canceled``.

    :param orders: order ids, or dicts with ``order_id`` and optional ``disposition_reason`` /
        ``disposition_other_reason``; a list, an upstream XComArg, or a template rendering one. Templated.
    :param disposition_reason: default reason for entries that give none. Templated.
    :param disposition_other_reason: default explanation, used with the default reason. Templated.
    :param kibo_conn_id: the ``kibo`` connection. Templated.
    :param max_concurrency: cancels in flight at once (1..64).
    :param fail_on_error: fail the task at the end when any order failed or was invalid.
    :param dry_run: validate and return the plan (``would_cancel``) without sending anything.
    :param requests_per_second: optional cap on the request rate, all workers together.
    :param include_orders: also return every canceled order in ``orders`` (large XCom; off by default).
    :param progress_interval: seconds between progress lines (done/total, rate, ETA).
    """

    template_fields: Sequence[str] = (
        "orders",
        "disposition_reason",
        "disposition_other_reason",
        "kibo_conn_id",
    )
    ui_color = "#e76f51"

    def __init__(
        self,
        *,
        orders: Any,
        disposition_reason: str | None = None,
        disposition_other_reason: str | None = None,
        kibo_conn_id: str = DEFAULT_CONN_ID,
        max_concurrency: int = 8,
        fail_on_error: bool = True,
        dry_run: bool = False,
        requests_per_second: float | None = None,
        include_orders: bool = False,
        progress_interval: float = 10.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # No validation here: __init__ runs at every DAG parse, before templates are rendered.
        self.orders = orders
        self.disposition_reason = disposition_reason
        self.disposition_other_reason = disposition_other_reason
        self.kibo_conn_id = kibo_conn_id
        self.max_concurrency = max_concurrency
        self.fail_on_error = fail_on_error
        self.is_dry_run = dry_run  # not self.dry_run: that is BaseOperator's template-rendering method
        self.requests_per_second = requests_per_second
        self.include_orders = include_orders
        self.progress_interval = progress_interval

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_kibo_cancel import assets, metrics
        from airflow_provider_kibo_cancel.hooks.kibo import KiboHook
        from airflow_provider_kibo_cancel.models import plan_bulk_cancel

        try:
            self._check_settings()
            plan = plan_bulk_cancel(self.orders, self.disposition_reason, self.disposition_other_reason)
        except KiboError as exc:
            fail_task_unless_retryable(exc)
            raise
        self.log.info(
            "Bulk cancel: %d entries, %d to cancel, %d invalid, %d duplicates",
            plan.total,
            len(plan.requests),
            len(plan.invalid),
            len(plan.duplicates),
        )
        if self.is_dry_run:
            summary = self._summary(plan, BulkCancelOutcome(), dry_run=True)
            self.log.info("Dry run, nothing sent. Would cancel: %s", summary["would_cancel"])
            if self.outlets:  # the event names the tenant, so the connection is read; nothing is sent
                self._dry_run_event(context, KiboHook(kibo_conn_id=self.kibo_conn_id), summary)
            return summary

        hook = KiboHook(
            kibo_conn_id=self.kibo_conn_id,
            pool_size=self.max_concurrency,
            requests_per_second=self.requests_per_second,
        )
        try:  # a broken connection fails the task once, not once per order
            self.log.info("Kibo tenant %s at %s", hook.settings.tenant_id, hook.settings.base_url)
            assets.check_outlets(self.outlets, hook.settings.tenant_id)
        except KiboError as exc:
            fail_task_unless_retryable(exc)
            raise
        outcome = cancel_all(
            hook,
            plan.requests,
            max_concurrency=self.max_concurrency,
            keep_orders=self.include_orders,
            progress=self._log_progress,
            progress_interval=self.progress_interval,
        )
        summary = self._summary(plan, outcome, dry_run=False)
        metrics.cancel_outcomes(summary)
        if self.fail_on_error and (outcome.failed or plan.invalid):
            self._fail(context, summary)
        assets.emit_summary_event(context, self.outlets, hook.settings.tenant_id, summary)
        return summary

    def _dry_run_event(self, context: Context, hook: KiboHook, summary: dict[str, Any]) -> None:
        from airflow_provider_kibo_cancel import assets

        try:
            assets.check_outlets(self.outlets, hook.settings.tenant_id)
        except KiboError as exc:
            fail_task_unless_retryable(exc)
            raise
        assets.emit_summary_event(context, self.outlets, hook.settings.tenant_id, summary)

    def _check_settings(self) -> None:
        problems = []
        if (
            isinstance(self.max_concurrency, bool)
            or not isinstance(self.max_concurrency, int)
            or not (1 <= self.max_concurrency <= MAX_CONCURRENCY)
        ):
            problems.append(
                f"max_concurrency must be an integer from 1 to {MAX_CONCURRENCY}, "
                f"got {self.max_concurrency!r}"
            )
        if self.requests_per_second is not None and not (
            isinstance(self.requests_per_second, int | float) and self.requests_per_second > 0
        ):
            problems.append(
                f"requests_per_second must be a positive number, got {self.requests_per_second!r}"
            )
        if problems:
            raise KiboValidationError(problems)

    def _log_progress(self, outcome: BulkCancelOutcome, total: int) -> None:
        rate = outcome.done / outcome.elapsed if outcome.elapsed else 0.0
        eta = (total - outcome.done) / rate if rate else float("inf")
        self.log.info(
            "Bulk cancel progress: %d/%d done (%.0f%%), %.1f orders/s, ETA %.0f s; "
            "%d canceled, %d already canceled, %d failed",
            outcome.done,
            total,
            100 * outcome.done / total if total else 100,
            rate,
            eta,
            len(outcome.canceled),
            len(outcome.already_canceled),
            len(outcome.failed),
        )

    @staticmethod
    def _summary(plan: BulkCancelPlan, outcome: BulkCancelOutcome, *, dry_run: bool) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "total": plan.total,
            "canceled": outcome.canceled,
            "already_canceled": outcome.already_canceled,
            "failed": outcome.failed,
            "invalid": plan.invalid,
            "duplicates": plan.duplicates,
            "dry_run": dry_run,
        }
        if dry_run:
            summary["would_cancel"] = [request.order_id for request in plan.requests]
        else:
            summary["elapsed_seconds"] = round(outcome.elapsed, 3)
        if outcome.orders:
            summary["orders"] = outcome.orders
        return summary

    def _fail(self, context: Context, summary: dict[str, Any]) -> None:
        """Fail after everything was attempted, keeping the summary in XCom (key ``summary``)."""
        context["ti"].xcom_push(key="summary", value=summary)
        first_problems = [f["error"] for f in summary["failed"][:3]] + [
            f"{i['input']!r}: {'; '.join(i['errors'])}" for i in summary["invalid"][:3]
        ]
        message = (
            f"Bulk cancel finished with {len(summary['failed'])} failed and {len(summary['invalid'])} "
            f"invalid of {summary['total']} entries ({len(summary['canceled'])} canceled, "
            f"{len(summary['already_canceled'])} already canceled); the summary is in XCom key 'summary'. "
            f"First problems: {first_problems}"
        )
        error = KiboBulkCancelError(
            message, summary=summary, retryable=any(f["retryable"] for f in summary["failed"])
        )
        fail_task_unless_retryable(error)
        raise error  # a task retry can help; orders canceled by now come back as already_canceled
