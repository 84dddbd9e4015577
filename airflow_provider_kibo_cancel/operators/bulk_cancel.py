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
from airflow_provider_kibo_cancel.exceptions import KiboError, KiboRateLimitError, KiboValidationError
from airflow_provider_kibo_cancel.operators.bulk_checks import bulk_settings_problems, order_limit
from airflow_provider_kibo_cancel.operators.bulk_durable import count_outcomes, open_durable_run, resume_point
from airflow_provider_kibo_cancel.operators.bulk_runner import BulkRun
from airflow_provider_kibo_cancel.operators.deferral import (
    DEFAULT_DEFER_THRESHOLD,
    DEFAULT_MAX_DEFERRED_WAIT,
    defer_until_kibo_accepts,
)
from airflow_provider_kibo_cancel.operators.failing import fail_task_unless_retryable
from airflow_provider_kibo_cancel.operators.kill import on_kill_at_sigterm
from airflow_provider_kibo_cancel.operators.ledger import (
    DurableBulkRun,
)
from airflow_provider_kibo_cancel.operators.outcome import (
    CREDENTIALS_REFUSED,
    FORBIDDEN,
    RATE_LIMITED,
    REPEATED_BAD_REQUEST,
    BulkCancelOutcome,
    compact_outcome,
)
from airflow_provider_kibo_cancel.operators.retry import with_kibo_retry_policy
from airflow_provider_kibo_cancel.operators.summary import (
    SUMMARY_XCOM_KEY,
    BulkCancelSummary,
    ReasonHints,
    build_summary,
    counted,
    failures_error,
    halt_error,
    log_progress,
    log_result,
    resume_time,
)
from airflow_provider_kibo_cancel.provider_info import DEFAULT_CONN_ID

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_kibo_cancel.bulk_plan import BulkCancelPlan
    from airflow_provider_kibo_cancel.hooks.kibo import KiboHook

#: Default cap on the orders one run may cancel: well above a routine reconciliation run (tens to hundreds),
#: well below the open-order book a wrong join or an empty filter upstream would hand over.
DEFAULT_MAX_ORDERS = 2000
#: Halts a task retry cannot mend (the Kibo retry policy fails them): their outcomes are final now.
_PERMANENT_HALTS = frozenset({CREDENTIALS_REFUSED, FORBIDDEN, REPEATED_BAD_REQUEST})


class BulkCancelOrdersOperator(BaseOperator):
    """
    Cancel many Kibo orders in one task with bounded concurrency, one HTTP session and one token.

    Every entry is validated first; valid, de-duplicated orders are then canceled, ``max_concurrency``
    at a time, after one token request for the whole run. A 429 pauses every worker for its Retry-After.
    Returns a JSON summary (:class:`~airflow_provider_kibo_cancel.operators.summary.BulkCancelSummary`)
    in which every input entry appears exactly once, each bucket in input order:
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
    template_fields_renderers = {"orders": "json"}  # noqa: RUF012 - BaseOperator declares it a dict
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
        self._hints = ReasonHints()  # each order's reason, and near misses of published ones (execute)

    @cached_property
    def hook(self) -> KiboHook:
        """The run's one hook (session, token, retry policy), built once the settings are checked; the
        only place it is built (``execute``, the dry run's asset event and ``on_kill`` use it)."""
        # Here, not at the top: the hook brings requests, ~40 ms of every DAG file's parse (measured).
        from airflow_provider_kibo_cancel.hooks.kibo import KiboHook  # noqa: PLC0415

        return KiboHook(
            kibo_conn_id=self.kibo_conn_id,
            pool_size=self.max_concurrency,
            requests_per_second=self.requests_per_second,
            max_sleep=self.defer_threshold if self.deferrable else None,
        )

    def execute(self, context: Context) -> BulkCancelSummary:
        with on_kill_at_sigterm(self):
            return self._execute(context, None)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> BulkCancelSummary:
        """Resumed after a deferred Retry-After: send only the orders left (the state is in the event)."""
        with on_kill_at_sigterm(self):
            return self._execute(context, event["state"])

    def _execute(self, context: Context, state: dict[str, Any] | None) -> BulkCancelSummary:
        # Here, not at the top: a DAG file's parse loads neither metrics nor assets code (test_signals.py),
        # and the plan's pydantic request model costs ~10 ms of it (measured).
        from airflow_provider_kibo_cancel import assets  # noqa: PLC0415
        from airflow_provider_kibo_cancel.bulk_plan import plan_bulk_cancel  # noqa: PLC0415

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
        self._hints = ReasonHints.of(plan.requests)
        self._hints.warn_unpublished(plan.requests, self.log)
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
            durable = (
                open_durable_run(context, plan.requests, hook.settings.tenant_id, self.log)
                if self.durable
                else None
            )
            previous, todo = resume_point(plan.requests, state, durable, self.log)
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
            outcome = run.run(
                progress=lambda progress: log_progress(self.log, progress),
                progress_interval=self.progress_interval,
            )
        except TaskDeferred:
            raise  # Kibo asked to wait before the first cancel: the resumed run reports, not this one
        except BaseException as exc:
            # A timeout, kill or interrupt (run() has stopped every request), or no token at all.
            so_far = run.outcome if run is not None else previous
            summary = build_summary(plan, so_far)
            if dispatched:  # a run refused before its first cancel (no token, bad outlet) has no outcomes
                count_outcomes(context, summary, durable, final=False)
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
    ) -> BulkCancelSummary:
        """The end of a run that was not interrupted: defer, fail or succeed, with its summary."""
        deferral_refused = None
        if outcome.halted == RATE_LIMITED and self.deferrable:
            if durable is not None:
                durable.save(outcome)  # a deferral that cannot be resumed leaves the ledger for a retry
            deferral_refused = self._defer(plan, outcome, state or {})
        summary = build_summary(plan, outcome)
        halted = outcome.halted is not None and bool(summary["not_attempted"])
        failing = halted or (self.fail_on_error and bool(outcome.failures or plan.invalid))
        # A failure no retry can mend ends the DAG run's tries here: count what waited for a retry now.
        permanent = (halted and outcome.halted in _PERMANENT_HALTS) or (
            failing and not halted and not any(f["retryable"] for f in summary["failed"])
        )
        count_outcomes(context, summary, durable, final=not failing or permanent)
        if durable is not None:
            if not failing:  # the event below names them (an event is recorded only when the task succeeds)
                durable.emitted = set(summary["canceled"])
            durable.save(outcome)
        self._push_summary(context, summary)
        log_result(self.log, summary)
        if outcome.halted is not None and summary["not_attempted"]:
            if outcome.halted == RATE_LIMITED:
                self.log.warning("Kibo rate limit: no cancel is sent before %s", resume_time(outcome))
            error = halt_error(
                outcome,
                summary,
                self._hints,
                max_deferred_wait=self.max_deferred_wait,
                deferral_refused=deferral_refused,
            )
            fail_task_unless_retryable(error, self)
            raise error
        if self.fail_on_error and (outcome.failures or plan.invalid):
            resume_at = outcome.resume_at if outcome.halted == RATE_LIMITED else None
            # A 429 wall that met the last orders: the retry policy retries when Kibo accepts calls again.
            if resume_at is None and any(f["rate_limited"] for f in summary["failed"]):
                wait = self.hook.rate_limit_wait()
                resume_at = time.time() + wait if wait > 0 else None
            error = failures_error(summary, self._hints, resume_at)
            fail_task_unless_retryable(error, self)
            raise error  # a task retry can help; orders canceled by now come back as already_canceled
        self._emit_event(context, self.hook.settings.tenant_id, summary)
        return summary

    def _emit_event(self, context: Context, tenant_id: str, summary: BulkCancelSummary) -> None:
        """The asset event of a successful run (an alias gets one only when this run canceled orders)."""
        # Here, not at the top: a DAG file's parse loads neither metrics nor assets code (test_signals.py).
        from airflow_provider_kibo_cancel import assets  # noqa: PLC0415

        if for_nothing := assets.emit_summary_event(context, self.outlets, tenant_id, summary):
            self.log.info("%s", assets.nothing_canceled_note(for_nothing))

    def _authenticate(
        self, hook: KiboHook, plan: BulkCancelPlan, previous: BulkCancelOutcome, state: dict[str, Any]
    ) -> None:
        """The run's one token, before any cancel; a long 429 from the OAuth endpoint is deferred too."""
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

    def _dry_run(self, context: Context, plan: BulkCancelPlan) -> BulkCancelSummary:
        # The connection is read (nothing is sent): a dry run passes only where the real run could start.
        self.hook.settings  # noqa: B018
        summary = build_summary(plan, None)
        self.log.info("Dry run, nothing sent. Would cancel: %s", summary["would_cancel"])
        self._push_summary(context, summary)
        if self.outlets:  # the event names the tenant
            self._dry_run_event(context, self.hook, summary)
        return summary

    def _dry_run_event(self, context: Context, hook: KiboHook, summary: BulkCancelSummary) -> None:
        # Here, not at the top: a DAG file's parse loads neither metrics nor assets code (test_signals.py).
        from airflow_provider_kibo_cancel import assets  # noqa: PLC0415

        try:
            assets.check_outlets(self.outlets, hook.settings.tenant_id)
        except KiboError as exc:
            fail_task_unless_retryable(exc, self)
            raise
        self._emit_event(context, hook.settings.tenant_id, summary)

    def _check_settings(self) -> None:
        problems = bulk_settings_problems(
            max_concurrency=self.max_concurrency,
            requests_per_second=self.requests_per_second,
            progress_interval=self.progress_interval,
            max_orders=self.max_orders,
            deferral=(self.deferrable, self.defer_threshold, self.max_deferred_wait),
            flags={
                "fail_on_error": self.fail_on_error,
                "include_orders": self.include_orders,
                "dry_run": self.is_dry_run,
                "durable": self.durable,
            },
        )
        if problems:
            raise KiboValidationError(problems)

    def _enforce_max_orders(self, context: Context, plan: BulkCancelPlan) -> None:
        """
        Fail before anything is sent when the plan cancels more orders than ``max_orders`` allows.

        A dry run only warns: it sends nothing, and it is how an oversized plan is looked at.
        """
        limit = order_limit(self.max_orders)
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
        self._push_summary(context, build_summary(plan, None, refused=True))
        # Retrying cannot shrink the plan: a person has to look at it, so no Airflow retries.
        raise AirflowFailException(
            f"Refusing to cancel {count} orders: more than max_orders={limit}, nothing was sent. "
            f"The would-be summary (would_cancel) is in XCom key '{SUMMARY_XCOM_KEY}'. If {count} is "
            f"right, raise max_orders (e.g. max_orders={count}) or set max_orders=None for no limit."
        )

    def _push_summary(self, context: Context, summary: BulkCancelSummary) -> None:
        """The summary under one key whatever the outcome; a failed push must not hide the real error."""
        try:
            context["ti"].xcom_push(key=SUMMARY_XCOM_KEY, value=summary)
        except Exception:
            self.log.exception("Could not push the bulk cancel summary to XCom key %r", SUMMARY_XCOM_KEY)
