"""BulkCancelOrdersOperator: cancel thousands of Kibo orders in one task, for reconciliation runs."""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_kibo_cancel._compat import (
    AirflowFailException,
    BaseOperator,
    TaskDeferred,
    default_deferrable,
)
from airflow_provider_kibo_cancel.exceptions import KiboBulkCancelError, KiboError, KiboValidationError
from airflow_provider_kibo_cancel.operators.bulk_runner import (
    CREDENTIALS_REFUSED,
    FORBIDDEN,
    RATE_LIMITED,
    REPEATED_BAD_REQUEST,
)
from airflow_provider_kibo_cancel.operators.deferral import (
    DEFAULT_DEFER_THRESHOLD,
    DEFAULT_MAX_DEFERRED_WAIT,
    defer_until_kibo_accepts,
    deferral_problems,
)
from airflow_provider_kibo_cancel.operators.failing import fail_task_unless_retryable
from airflow_provider_kibo_cancel.operators.kill import on_kill_at_sigterm
from airflow_provider_kibo_cancel.operators.retry import with_kibo_retry_policy
from airflow_provider_kibo_cancel.provider_info import DEFAULT_CONN_ID

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_kibo_cancel.bulk_plan import BulkCancelPlan
    from airflow_provider_kibo_cancel.cancel_request import CancelOrderRequest
    from airflow_provider_kibo_cancel.hooks.kibo import KiboHook
    from airflow_provider_kibo_cancel.operators.bulk_runner import (
        BulkCancelOutcome,
        BulkRun,
        ProgressSnapshot,
    )
    from airflow_provider_kibo_cancel.operators.ledger import DurableBulkRun

MAX_CONCURRENCY = 64
#: The XCom key that holds the summary whatever the outcome (success, failure, stop).
SUMMARY_XCOM_KEY = "summary"


#: Default cap on the orders one run may cancel: well above a routine reconciliation run (tens to hundreds),
#: well below the open-order book a wrong join or an empty filter upstream would hand over.
DEFAULT_MAX_ORDERS = 2000
#: ``halted`` of the summary of a real run that ``max_orders`` refused before sending anything.
MAX_ORDERS_REFUSED = "max_orders"


def _order_limit(value: Any) -> int | None:
    """``max_orders`` as an int, or None for no limit; a template renders it as a string of digits."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        # A template renders None as the text 'None': that is refused rather than read as "no limit".
        hint = " (a template rendered None as text: pass max_orders=None itself)" if value == "None" else ""
        raise ValueError(
            f"max_orders must be an integer >= 1 (or a string of digits), or None for no limit; "
            f"got {value!r}{hint}"
        )
    return value


def counted(count: int, singular: str, plural: str | None = None) -> str:
    """``1 duplicate``, ``2 duplicates``."""
    return f"{count} {singular if count == 1 else plural or singular + 's'}"


class BulkCancelOrdersOperator(BaseOperator):
    """
    Cancel many Kibo orders in one task with bounded concurrency, one HTTP session and one token.

    Every entry is validated first; valid, de-duplicated orders are then canceled, ``max_concurrency``
    at a time, after one token request for the whole run. A 429 pauses every worker for its Retry-After.
    Returns a JSON summary in which every input entry appears exactly once, each bucket in input order:
    ``canceled``, ``already_canceled``, ``failed`` (with the error), ``not_attempted`` (never sent: the
    run stopped), ``invalid`` (never sent) and ``duplicates``. The same summary is in XCom key
    ``summary`` whatever the outcome. Re-running after a partial failure cancels only what is left; the
    rest lands in ``already_canceled``.

    The run stops dispatching at once when the task times out, is killed or interrupted, when the
    credentials are refused, when Kibo is evidently down (the hook's circuit breaker), or when Kibo asks to
    wait longer than ``max_retry_wait``; it waits a few seconds for requests in flight, keeps the summary
    and fails the task.

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
    :param progress_interval: seconds between progress lines (done/total, rate, ETA), > 0.
    :param deferrable: when Kibo asks to wait longer than ``defer_threshold`` (429 Retry-After), defer the
        whole run with its progress and resume with only the orders left, instead of failing; default
        ``[operators] default_deferrable``.
    :param defer_threshold: with ``deferrable``, waits longer than this many seconds (or than the
        connection's ``max_retry_wait``) are deferred; shorter ones are slept by the workers.
    :param max_deferred_wait: the most seconds spent deferred in all; beyond it the task fails (retryable).
    :param durable: on Airflow 3.3+, keep the run's ledger in the task state store, so that a new try of
        this task instance (a retry, a killed or lost worker) sends only what is unsettled and reports for
        the whole DAG run; no effect before 3.3. Default True.
    :param max_orders: the most orders one run may cancel (default 2000; ``None`` for no limit). A plan
        with more fails the task before anything is sent, without retries, with the would-be summary in
        XCom key ``summary``. Templated: an integer or a string of digits.
    """

    template_fields: Sequence[str] = (
        "orders",
        "disposition_reason",
        "disposition_other_reason",
        "kibo_conn_id",
        "max_orders",
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
        deferrable: bool = default_deferrable(),
        defer_threshold: float = DEFAULT_DEFER_THRESHOLD,
        max_deferred_wait: float = DEFAULT_MAX_DEFERRED_WAIT,
        max_orders: int | str | None = DEFAULT_MAX_ORDERS,
        durable: bool = True,
        **kwargs: Any,
    ) -> None:
        with_kibo_retry_policy(kwargs, max_deferred_wait)
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
        self.deferrable = deferrable
        self.defer_threshold = defer_threshold
        self.max_deferred_wait = max_deferred_wait
        self.max_orders = max_orders
        self.durable = durable
        self._killed = False  # on_kill came; a hook built after it is stopped at once
        self._reason_of: dict[int, str] = {}  # order id -> the reason it is sent with (set in execute)
        self._suggestions: dict[str, str] = {}  # a near-miss reason -> the published one it resembles

    @cached_property
    def hook(self) -> KiboHook:
        """The run's one hook (session, token, retry policy), built once the settings are checked."""
        from airflow_provider_kibo_cancel.hooks.kibo import KiboHook

        return KiboHook(
            kibo_conn_id=self.kibo_conn_id,
            pool_size=self.max_concurrency,
            requests_per_second=self.requests_per_second,
            max_sleep=self.defer_threshold if self.deferrable else None,
        )

    def execute(self, context: Context) -> dict[str, Any]:
        with on_kill_at_sigterm(self):
            return self._execute(context, None)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resumed after a deferred Retry-After: send only the orders left (the state is in the event)."""
        with on_kill_at_sigterm(self):
            return self._execute(context, event["state"])

    def _execute(self, context: Context, state: dict[str, Any] | None) -> dict[str, Any]:
        from airflow_provider_kibo_cancel import assets
        from airflow_provider_kibo_cancel.bulk_plan import plan_bulk_cancel
        from airflow_provider_kibo_cancel.operators.bulk_runner import BulkCancelOutcome, BulkRun

        try:
            self._check_settings()
            plan = plan_bulk_cancel(self.orders, self.disposition_reason, self.disposition_other_reason)
        except KiboError as exc:
            fail_task_unless_retryable(exc, self)
            raise
        self.log.info(
            "Bulk cancel: %s, %s to cancel, %s, %s",
            counted(plan.total, "entry", "entries"),
            counted(len(plan.requests), "order"),
            counted(len(plan.invalid), "invalid entry", "invalid entries"),
            counted(len(plan.duplicates), "duplicate"),
        )
        self._warn_unpublished_reasons(plan)
        self._enforce_max_orders(context, plan)
        if self.is_dry_run:
            return self._dry_run(context, plan)

        hook = self.hook
        if self._killed:
            hook.stop()  # killed while planning: nothing is sent, every order is not_attempted
        dispatched = False
        durable: DurableBulkRun | None = None
        run: BulkRun | None = None
        previous = BulkCancelOutcome()
        try:
            # A broken connection, refused credentials or an unreachable OAuth endpoint fail the task once
            # (one token request for the run), before any cancel is sent.
            self.log.info(
                "Kibo connection %r: tenant %s at %s",
                self.kibo_conn_id,
                hook.settings.tenant_id,
                hook.settings.base_url,
            )
            assets.check_outlets(self.outlets, hook.settings.tenant_id)
            durable = self._durable_run(context, plan, hook.settings.tenant_id)
            previous, todo = self._resume_point(plan, state, durable)
            run = BulkRun(
                hook,
                todo,
                max_concurrency=self.max_concurrency,
                keep_orders=self.include_orders,
                outcome=previous,
                journal=durable.journal if durable is not None else None,
            )
            self._authenticate(hook, plan, previous, state or {})
            dispatched = True
            outcome = run.run(progress=self._log_progress, progress_interval=self.progress_interval)
        except TaskDeferred:
            raise  # Kibo asked to wait before the first cancel: the resumed run reports, not this one
        except BaseException as exc:
            # A timeout, kill or interrupt (run() has stopped every request), or no token at all.
            so_far = run.outcome if run is not None else previous
            summary = self._summary(plan, so_far)
            if dispatched:  # a run refused before its first cancel (no token, bad outlet) has no outcomes
                self._count_outcomes(context, summary, durable, final=False)
            if durable is not None:
                durable.save(so_far)
            self._push_summary(context, summary)
            if isinstance(exc, KiboError):
                fail_task_unless_retryable(exc, self)
            raise
        return self._finish(context, plan, outcome, state, durable)

    def _finish(
        self,
        context: Context,
        plan: BulkCancelPlan,
        outcome: BulkCancelOutcome,
        state: dict[str, Any] | None,
        durable: DurableBulkRun | None,
    ) -> dict[str, Any]:
        """The end of a run that was not interrupted: defer, fail or succeed, with its summary."""
        deferral_refused = None
        if outcome.halted == RATE_LIMITED and self.deferrable:
            if durable is not None:
                durable.save(outcome)  # a deferral that cannot be resumed leaves the ledger for a retry
            deferral_refused = self._defer(plan, outcome, state or {})
        summary = self._summary(plan, outcome)
        halted = outcome.halted is not None and bool(summary["not_attempted"])
        failing = halted or (self.fail_on_error and bool(outcome.failures or plan.invalid))
        # A failure no retry can mend ends the DAG run's tries here: count what waited for a retry now.
        permanent = (halted and outcome.halted in _PERMANENT_HALTS) or (
            failing and not halted and not any(f["retryable"] for f in summary["failed"])
        )
        self._count_outcomes(context, summary, durable, final=not failing or permanent)
        if durable is not None:
            if not failing:  # the event below names them (an event is recorded only when the task succeeds)
                durable.emitted = set(summary["canceled"])
            durable.save(outcome)
        self._push_summary(context, summary)
        self._log_result(summary)
        if outcome.halted is not None and summary["not_attempted"]:
            self._fail_halted(outcome, summary, deferral_refused)
        if self.fail_on_error and (outcome.failures or plan.invalid):
            self._fail(summary, outcome.resume_at if outcome.halted == RATE_LIMITED else None)
        self._emit_event(context, self.hook.settings.tenant_id, summary)
        return summary

    def _durable_run(self, context: Context, plan: BulkCancelPlan, tenant_id: str) -> DurableBulkRun | None:
        """This try's ledger on Airflow 3.3+ (``durable``); None where there is no task state store."""
        from airflow_provider_kibo_cancel.operators.ledger import (
            DurableBulkRun,
            run_epoch,
            task_state_store,
            try_number,
        )

        if not self.durable:
            return None
        store = task_state_store(context)
        if store is None:
            self.log.info(
                "durable=True has no effect on this Airflow (no task state store before 3.3): each try "
                "starts afresh"
            )
            return None
        return DurableBulkRun(
            store,
            self.log,
            epoch=run_epoch(context),
            try_number=try_number(context),
            tenant=tenant_id,
            requests=plan.requests,
        )

    def _count_outcomes(
        self, context: Context, summary: dict[str, Any], durable: DurableBulkRun | None, *, final: bool
    ) -> None:
        """
        The outcome metrics, each order once per DAG run in a durable run: orders an earlier try counted
        are not counted again; orders a retry may still settle (not attempted, a retryable failure) are
        counted when the task ends with them (success, or its last try).
        """
        from airflow_provider_kibo_cancel import metrics

        if durable is None:
            metrics.cancel_outcomes(summary)
            return
        ti = context.get("ti")
        last_try = final or int(getattr(ti, "try_number", 0) or 0) > int(getattr(ti, "max_tries", 0) or 0)
        counts: dict[str, list[Any]] = {}
        for bucket in ("canceled", "already_canceled"):
            counts[bucket] = [i for i in summary[bucket] if i not in durable.counted]
        counts["failed"] = [
            f["order_id"]
            for f in summary["failed"]
            if f["order_id"] not in durable.counted and (last_try or not f.get("retryable"))
        ]
        counts["not_attempted"] = (
            [i for i in summary["not_attempted"] if i not in durable.counted] if last_try else []
        )
        counts["invalid"] = [] if durable.invalid_counted else list(summary["invalid"])
        metrics.cancel_outcomes(counts)
        for bucket in ("canceled", "already_canceled", "failed", "not_attempted"):
            durable.counted.update(counts[bucket])
        durable.invalid_counted = True

    def _emit_event(self, context: Context, tenant_id: str, summary: dict[str, Any]) -> None:
        """The asset event of a successful run (an alias gets one only when this run canceled orders)."""
        from airflow_provider_kibo_cancel import assets

        if for_nothing := assets.emit_summary_event(context, self.outlets, tenant_id, summary):
            self.log.info("%s", assets.nothing_canceled_note(for_nothing))

    def _resume_point(
        self, plan: BulkCancelPlan, state: dict[str, Any] | None, durable: DurableBulkRun | None
    ) -> tuple[BulkCancelOutcome, list[CancelOrderRequest]]:
        """What earlier segments of a deferred run, or earlier tries (the ledger), settled, and the orders
        still to send."""
        from airflow_provider_kibo_cancel.operators.bulk_runner import BulkCancelOutcome, restore_outcome

        from_ledger = durable.resume() if durable is not None else None
        # A deferral resumed within this try: its state is exact; otherwise what earlier tries settled.
        previous = restore_outcome(state) if state is not None else from_ledger or BulkCancelOutcome()
        todo = [request for request in plan.requests if request.order_id not in previous.results]
        if state is not None:
            self.log.info(
                "Resuming after Kibo's Retry-After (%.0f s deferred so far): %d settled, %d left to send",
                state.get("deferred_seconds", 0.0),
                len(previous.results),
                len(todo),
            )
        elif from_ledger is not None:
            self.log.info(
                "Durable run: %d orders settled by earlier tries, %d left to send",
                len(previous.results),
                len(todo),
            )
        return previous, todo

    def _authenticate(
        self, hook: KiboHook, plan: BulkCancelPlan, previous: BulkCancelOutcome, state: dict[str, Any]
    ) -> None:
        """The run's one token, before any cancel; a long 429 from the OAuth endpoint is deferred too."""
        from airflow_provider_kibo_cancel.exceptions import KiboRateLimitError

        if hook.stopped:
            return  # killed before the run began: the run settles every order as not attempted
        try:
            hook.authenticate()
        except KiboRateLimitError as exc:
            if not self.deferrable or exc.retry_after is None or exc.retry_after <= hook.longest_sleep:
                raise
            previous.resume_at = time.time() + exc.retry_after
            refused = self._defer(plan, previous, state)
            if refused is not None:  # beyond max_deferred_wait: say so, not just "429"
                raise KiboRateLimitError(f"{refused} ({exc})") from exc
            raise

    def _defer(self, plan: BulkCancelPlan, outcome: BulkCancelOutcome, state: dict[str, Any]) -> str | None:
        """
        Defer the whole run until Kibo accepts calls again, carrying what is settled (ids and buckets);
        returns (instead of deferring) why not when the wait would exceed ``max_deferred_wait``.
        """
        from airflow_provider_kibo_cancel.exceptions import KiboRateLimitError
        from airflow_provider_kibo_cancel.operators.bulk_runner import compact_outcome

        wait = max(1.0, (outcome.resume_at or time.time()) - time.time())
        try:
            defer_until_kibo_accepts(
                self,
                wait=wait,
                state={**state, **compact_outcome(plan.requests, outcome)},
                max_deferred_wait=self.max_deferred_wait,
            )
        except KiboRateLimitError as exc:
            self.log.warning("%s", exc)  # the run fails below as rate_limited, with its summary
            return str(exc)
        return None  # pragma: no cover - defer_until_kibo_accepts raises TaskDeferred

    def on_kill(self) -> None:
        """Task killed or marked failed (SIGTERM): stop dispatching; the requests in flight may finish."""
        self._killed = True
        hook = self.__dict__.get("hook")  # not the property: a kill while planning builds no hook
        if hook is not None:
            hook.stop()  # first: the log line below takes locks a signal handler may find held
        self.log.warning("Bulk cancel told to stop: no further cancel will be sent")

    def _dry_run(self, context: Context, plan: BulkCancelPlan) -> dict[str, Any]:
        summary = self._summary(plan, None)
        self.log.info("Dry run, nothing sent. Would cancel: %s", summary["would_cancel"])
        self._push_summary(context, summary)
        if self.outlets:  # the event names the tenant, so the connection is read; nothing is sent
            self._dry_run_event(context, self.hook, summary)
        return summary

    def _dry_run_event(self, context: Context, hook: KiboHook, summary: dict[str, Any]) -> None:
        from airflow_provider_kibo_cancel import assets

        try:
            assets.check_outlets(self.outlets, hook.settings.tenant_id)
        except KiboError as exc:
            fail_task_unless_retryable(exc, self)
            raise
        self._emit_event(context, hook.settings.tenant_id, summary)

    def _check_settings(self) -> None:
        problems = []
        if not _is_int_in(self.max_concurrency, 1, MAX_CONCURRENCY):
            problems.append(
                f"max_concurrency must be an integer from 1 to {MAX_CONCURRENCY}, "
                f"got {self.max_concurrency!r}"
            )
        if self.requests_per_second is not None and not _is_positive_number(self.requests_per_second):
            problems.append(
                f"requests_per_second must be a positive number or None, got {self.requests_per_second!r}"
            )
        problems += deferral_problems(self.deferrable, self.defer_threshold, self.max_deferred_wait)
        if not _is_positive_number(self.progress_interval):
            problems.append(
                f"progress_interval must be a positive number of seconds, got {self.progress_interval!r}"
            )
        for name in ("fail_on_error", "include_orders", "is_dry_run", "durable"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                problems.append(f"{name.removeprefix('is_')} must be True or False, got {value!r}")
        try:
            _order_limit(self.max_orders)
        except ValueError as exc:
            problems.append(str(exc))
        if problems:
            raise KiboValidationError(problems)

    def _enforce_max_orders(self, context: Context, plan: BulkCancelPlan) -> None:
        """
        Fail before anything is sent when the plan cancels more orders than ``max_orders`` allows.

        A dry run only warns: it sends nothing, and it is how an oversized plan is looked at.
        """
        limit = _order_limit(self.max_orders)
        count = len(plan.requests)
        if limit is None or count <= limit:
            return
        if self.is_dry_run:
            self.log.warning(
                "This plan has %d orders to cancel, more than max_orders=%d: a real run would fail.",
                count,
                limit,
            )
            return
        self._push_summary(context, self._summary(plan, None, refused=True))
        # Retrying cannot shrink the plan: a person has to look at it, so no Airflow retries.
        raise AirflowFailException(
            f"Refusing to cancel {count} orders: more than max_orders={limit}, nothing was sent. "
            f"The would-be summary (would_cancel) is in XCom key '{SUMMARY_XCOM_KEY}'. If {count} is "
            f"right, raise max_orders (e.g. max_orders={count}) or set max_orders=None for no limit."
        )

    def _warn_unpublished_reasons(self, plan: BulkCancelPlan) -> None:
        """One warning per run (with the count), not one per order; a near miss of a published reason
        gets a "did you mean" (kept for the failure message too)."""
        from airflow_provider_kibo_cancel.cancel_request import reason_suggestion

        unpublished: dict[str, int] = {}
        for request in plan.requests:
            if not request.is_published_reason:
                unpublished[request.disposition_reason] = unpublished.get(request.disposition_reason, 0) + 1
        self._reason_of = {request.order_id: request.disposition_reason for request in plan.requests}
        self._suggestions = {
            reason: suggestion for reason in unpublished if (suggestion := reason_suggestion(reason))
        }
        if unpublished:
            count = sum(unpublished.values())
            self.log.warning(
                "%s %s a disposition_reason Kibo does not publish (%s); sending as given%s",
                counted(count, "order"),
                "uses" if count == 1 else "use",
                ", ".join(f"{reason!r}: {count}" for reason, count in sorted(unpublished.items())),
                "".join(f"; did you mean {hint!r} for {typo!r}?" for typo, hint in self._suggestions.items()),
            )

    def _grouped_failures(self, failed: list[dict[str, Any]], limit: int = 3) -> list[str]:
        """Identical errors once, with their count and orders ("20 x HTTP 400 ...: ... (orders ...)"),
        plus a "did you mean" when those orders used a near miss of a published reason."""
        from airflow_provider_kibo_cancel.operators.bulk_runner import group_failures

        lines = []
        for description, order_ids in group_failures(failed)[:limit]:
            shown = ", ".join(str(order_id) for order_id in order_ids[:5])
            more = f" and {len(order_ids) - 5} more" if len(order_ids) > 5 else ""
            line = f"{len(order_ids)} x {description} ({counted(len(order_ids), 'order')}: {shown}{more})"
            reasons = dict.fromkeys(self._reason_of.get(order_id) for order_id in order_ids)
            hints = [
                f"did you mean {self._suggestions[reason]!r} instead of disposition_reason {reason!r}?"
                for reason in reasons
                if reason in self._suggestions
            ]
            lines.append(line + ("; " + " ".join(hints) if hints else ""))
        return lines

    def _log_progress(self, progress: ProgressSnapshot) -> None:
        """One progress line, from counts the run took under its lock (never the live outcome)."""
        rate = progress.rate
        eta = (progress.total - progress.done) / rate if rate else float("inf")
        self.log.info(
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

    def _log_result(self, summary: dict[str, Any]) -> None:
        for failure in summary["failed"]:
            self.log.debug("Order %s failed: %s", failure["order_id"], failure["error"])
        for order_id in summary["already_canceled"]:
            self.log.debug("Order %s was canceled already", order_id)
        self.log.info(
            "Bulk cancel finished in %.1f s: %s canceled, %s canceled already, %s failed, %s not attempted",
            summary.get("elapsed_seconds", 0.0),
            counted(len(summary["canceled"]), "order"),
            len(summary["already_canceled"]),
            len(summary["failed"]),
            len(summary["not_attempted"]),
        )

    def _summary(
        self, plan: BulkCancelPlan, outcome: BulkCancelOutcome | None, *, refused: bool = False
    ) -> dict[str, Any]:
        """
        Every entry once, each bucket in input order; ``outcome`` None for a dry run, or with
        ``refused`` for a real run refused by ``max_orders`` before sending (``dry_run`` false, every
        valid order ``not_attempted``, ``would_cancel`` the plan, ``halted`` ``max_orders``).
        """
        from airflow_provider_kibo_cancel.operators.bulk_runner import (
            ALREADY_CANCELED,
            CANCELED,
            FAILED,
            NOT_ATTEMPTED,
            BulkCancelOutcome,
        )

        dry_run = outcome is None and not refused
        outcome = outcome or BulkCancelOutcome()
        requests = plan.requests
        summary: dict[str, Any] = {
            "total": plan.total,
            "canceled": outcome.ids(requests, CANCELED),
            "already_canceled": outcome.ids(requests, ALREADY_CANCELED),
            "failed": [outcome.failures[order_id] for order_id in outcome.ids(requests, FAILED)],
            "not_attempted": [] if dry_run else outcome.ids(requests, NOT_ATTEMPTED),
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

    def _push_summary(self, context: Context, summary: dict[str, Any]) -> None:
        """The summary under one key whatever the outcome; a failed push must not hide the real error."""
        try:
            context["ti"].xcom_push(key=SUMMARY_XCOM_KEY, value=summary)
        except Exception:
            self.log.exception("Could not push the bulk cancel summary to XCom key %r", SUMMARY_XCOM_KEY)

    def _fail_halted(
        self, outcome: BulkCancelOutcome, summary: dict[str, Any], deferral_refused: str | None = None
    ) -> None:
        """The run stopped dispatching before the end: say why, and whether a task retry can help."""
        from airflow_provider_kibo_cancel.operators.bulk_runner import (
            CIRCUIT_OPEN,
            CREDENTIALS_REFUSED,
            FORBIDDEN,
            FORBIDDEN_IN_A_ROW,
            REPEATED_BAD_REQUEST,
            SAME_BAD_REQUEST_IN_A_ROW,
        )

        left = counted(len(summary["not_attempted"]), "order")
        done = (
            f"{len(summary['canceled'])} canceled, {len(summary['already_canceled'])} canceled already, "
            f"{len(summary['failed'])} failed, {left} not attempted; the summary is in XCom key "
            f"'{SUMMARY_XCOM_KEY}'"
        )
        retryable = True
        if outcome.halted == CREDENTIALS_REFUSED:
            reason, retryable = f"Kibo refused the credentials ({outcome.halt_error})", False
        elif outcome.halted == FORBIDDEN:
            reason, retryable = (
                f"Kibo refused this tenant or site for {FORBIDDEN_IN_A_ROW} orders in a row "
                f"({outcome.halt_error})",
                False,
            )
        elif outcome.halted == REPEATED_BAD_REQUEST:
            # The request itself is refused (a typo'd reason): every order with that reason would be
            # refused alike, and a retry sends the same request.
            refused = ", ".join(repr(r) for r in outcome.refused_reasons)
            reason, retryable = (
                f"Kibo refused {SAME_BAD_REQUEST_IN_A_ROW} orders in a row with the same error for "
                f"disposition_reason {refused}, so the other orders with it were not sent (orders with "
                f"other reasons were): {'; '.join(self._grouped_failures(summary['failed'], 1))}",
                False,
            )
        elif outcome.halted == CIRCUIT_OPEN:
            reason = f"Kibo looks down ({outcome.halt_error or 'every request failed for a retry schedule'})"
        elif outcome.halted == RATE_LIMITED:
            resume = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(outcome.resume_at or time.time()))
            if deferral_refused is not None:
                reason = (
                    f"Kibo asked to wait until {resume} (429 Retry-After), beyond max_deferred_wait "
                    f"({self.max_deferred_wait:g} s in all): {deferral_refused}"
                )
            else:
                reason = (
                    f"Kibo asked to wait longer than max_retry_wait (429 Retry-After); it accepts calls "
                    f"again at {resume}"
                )
            self.log.warning("Kibo rate limit: no cancel is sent before %s", resume)
        else:
            reason = "the task was stopped (timeout, kill or interrupt)"
        error = KiboBulkCancelError(
            f"Bulk cancel stopped early: {reason}. {done}",
            summary=summary,
            retryable=retryable,
            resume_at=(outcome.resume_at or time.time()) if outcome.halted == RATE_LIMITED else None,
        )
        fail_task_unless_retryable(error, self)
        raise error

    def _fail(self, summary: dict[str, Any], resume_at: float | None = None) -> None:
        """Fail after everything was attempted; the summary is in XCom (key ``summary``)."""
        first_problems = self._grouped_failures(summary["failed"]) + [
            f"{i['input']!r}: {'; '.join(i['errors'])}" for i in summary["invalid"][:3]
        ]
        message = (
            f"Bulk cancel finished with {len(summary['failed'])} failed and {len(summary['invalid'])} "
            f"invalid of {counted(summary['total'], 'entry', 'entries')} ({len(summary['canceled'])} "
            f"canceled, {len(summary['already_canceled'])} canceled already); the summary is in XCom key "
            f"'{SUMMARY_XCOM_KEY}'. First problems: {first_problems}"
        )
        # A 429 wall that met the last orders: the retry policy retries when Kibo accepts calls again.
        if resume_at is None and any(f.get("rate_limited") for f in summary["failed"]):
            wait = self.hook.rate_limit_wait()
            resume_at = time.time() + wait if wait > 0 else None
        error = KiboBulkCancelError(
            message,
            summary=summary,
            retryable=any(f["retryable"] for f in summary["failed"]),
            resume_at=resume_at,
        )
        fail_task_unless_retryable(error, self)
        raise error  # a task retry can help; orders canceled by now come back as already_canceled


#: Halts a task retry cannot mend (the Kibo retry policy fails them): their outcomes are final now.
_PERMANENT_HALTS = frozenset({CREDENTIALS_REFUSED, FORBIDDEN, REPEATED_BAD_REQUEST})


def _is_int_in(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _is_positive_number(value: Any) -> bool:
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and value > 0 and value != float("inf")
    )
