"""CancelOrderOperator: cancel one Kibo order and push the canceled order to XCom."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_kibo_cancel._compat import BaseOperator, default_deferrable
from airflow_provider_kibo_cancel.exceptions import (
    KiboError,
    KiboRateLimitError,
    KiboRateLimitWaitError,
    KiboValidationError,
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

    from airflow_provider_kibo_cancel.hooks.kibo import KiboHook


class CancelOrderOperator(BaseOperator):
    """
    Cancel a whole Kibo order and return it (pushed to XCom as ``return_value``, a plain dict).

    Parameters are validated in ``execute()`` after templating, so Jinja, ``dag_run.conf`` and dynamic task
    mapping work. An order canceled already (a re-run, or a retry after a lost answer) succeeds and
    returns the order as Kibo has it.

    :param order_id: Kibo order id, an integer >= 1 or a string of digits. Templated.
    :param disposition_reason: ``customer_changed_mind``, ``created_by_mistake``, ``other`` or another
        lower-case Kibo reason (sent with a warning). Templated.
    :param disposition_other_reason: explanation, 1..255 characters, required only with ``other``. Templated.
    :param kibo_conn_id: the ``kibo`` connection. Templated.
    :param dry_run: validate and return the request that would be sent, without sending it.
    :param deferrable: spend a long Kibo-requested wait (429 Retry-After) deferred in the triggerer instead
        of holding a worker slot; default ``[operators] default_deferrable``.
    :param defer_threshold: with ``deferrable``, waits longer than this many seconds (or than the
        connection's ``max_retry_wait``) are deferred; shorter ones are slept.
    :param max_deferred_wait: the most seconds spent deferred in all; beyond it the task fails (retryable).
    :param durable: on Airflow 3.3+, record in the task state store that the cancel was sent (before it
        is sent), so that a new try finding the order canceled reports the cancel as this run's, not as
        canceled already. No effect before 3.3. Default True.
    """

    template_fields: Sequence[str] = (
        "order_id",
        "disposition_reason",
        "disposition_other_reason",
        "kibo_conn_id",
    )
    ui_color = "#f4a261"

    def __init__(
        self,
        *,
        order_id: int | str,
        disposition_reason: str,
        disposition_other_reason: str | None = None,
        kibo_conn_id: str = DEFAULT_CONN_ID,
        dry_run: bool = False,
        deferrable: bool = default_deferrable(),
        defer_threshold: float = DEFAULT_DEFER_THRESHOLD,
        max_deferred_wait: float = DEFAULT_MAX_DEFERRED_WAIT,
        durable: bool = True,
        **kwargs: Any,
    ) -> None:
        with_kibo_retry_policy(kwargs, max_deferred_wait)
        super().__init__(**kwargs)
        # No validation here: __init__ runs at every DAG parse, before templates are rendered.
        self.order_id = order_id
        self.disposition_reason = disposition_reason
        self.disposition_other_reason = disposition_other_reason
        self.kibo_conn_id = kibo_conn_id
        # Not self.dry_run: that name is BaseOperator's template-rendering method.
        self.is_dry_run = dry_run
        self.deferrable = deferrable
        self.defer_threshold = defer_threshold
        self.max_deferred_wait = max_deferred_wait
        self.durable = durable
        self._killed = False

    @cached_property
    def hook(self) -> KiboHook:
        """The task's hook; built on first use, after the parameters were rendered; the only place it is
        built (``execute``, the dry run and ``on_kill`` use it)."""
        # Here, not at the top: the hook brings requests, ~40 ms of every DAG file's parse (measured).
        from airflow_provider_kibo_cancel.hooks.kibo import KiboHook  # noqa: PLC0415

        return KiboHook(
            kibo_conn_id=self.kibo_conn_id, max_sleep=self.defer_threshold if self.deferrable else None
        )

    def execute(self, context: Context) -> dict[str, Any]:
        with on_kill_at_sigterm(self):
            return self._cancel(context, {"deferred_seconds": 0.0})

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resumed after a deferred Retry-After: the worker sends the cancel again."""
        with on_kill_at_sigterm(self):
            return self._cancel(context, event["state"])

    def on_kill(self) -> None:
        """Killed, marked failed or timed out (SIGTERM): a cancel waiting to be sent is not sent."""
        self._killed = True
        hook = self.__dict__.get("hook")  # not the property: a kill before the hook exists builds none
        if hook is not None:
            hook.stop()  # first: the log line below takes locks a signal handler may find held
            self.log.warning("Cancel told to stop: it will not be sent (again)")

    def _cancel(self, context: Context, state: dict[str, Any]) -> dict[str, Any]:
        # Here, not at the top: a DAG file's parse loads neither metrics nor assets code (test_signals.py),
        # and building the pydantic request model costs ~5 ms of it (make bench row 2).
        from airflow_provider_kibo_cancel import assets, metrics  # noqa: PLC0415
        from airflow_provider_kibo_cancel.cancel_request import (  # noqa: PLC0415
            CancelOrderRequest,
            reason_suggestion,
        )

        hook = self.hook
        if self._killed:
            hook.stop()  # the kill came before the hook existed
        try:
            problems = deferral_problems(self.deferrable, self.defer_threshold, self.max_deferred_wait)
            if not isinstance(self.durable, bool):
                problems.append(f"durable must be True or False, got {self.durable!r}")
            if problems:
                raise KiboValidationError(problems)
            request = CancelOrderRequest.from_raw(
                self.order_id, self.disposition_reason, self.disposition_other_reason
            )
            assets.check_outlets(self.outlets, hook.settings.tenant_id)
            if suggestion := reason_suggestion(request.disposition_reason):
                self.log.warning(
                    "disposition_reason %r is not one Kibo publishes: did you mean %r?",
                    request.disposition_reason,
                    suggestion,
                )
            if self.is_dry_run:
                preview = {"dry_run": True, **hook.describe_cancel(request)}
                self.log.info("Dry run, nothing sent. Would send: %s", preview)
                assets.emit_order_event(
                    context, self.outlets, hook.settings.tenant_id, request.order_id, dry_run=True
                )
                return preview
            sent_before = self._record_sending(context, hook.settings.tenant_id, request.order_id)
            if sent_before:
                state = {**state, "may_have_applied": True}
            try:
                result = hook.cancel(request)
            except KiboError as exc:
                # Not applied by this try (never sent, or refused): a retry must not claim a cancel
                # that someone else made meanwhile.
                if not exc.may_have_applied and not sent_before:
                    self._record_sending(context, hook.settings.tenant_id, request.order_id, applied=False)
                if not isinstance(exc, KiboRateLimitError | KiboRateLimitWaitError):
                    raise
                wait = exc.retry_after
                if not self.deferrable or wait is None or wait <= hook.longest_sleep:
                    raise
                # An attempt that may have been applied (a timeout or 5xx before the 429) is remembered:
                # found canceled after the wait, the cancel was most likely this task's.
                maybe_applied = bool(state.get("may_have_applied")) or exc.may_have_applied
                defer_until_kibo_accepts(
                    self,
                    wait=wait,
                    state={**state, "may_have_applied": maybe_applied},
                    max_deferred_wait=self.max_deferred_wait,
                )
        except KiboError as exc:
            metrics.cancel_error(exc)
            fail_task_unless_retryable(exc, self)
            raise
        already_canceled = result.already_canceled and not state.get("may_have_applied")
        metrics.cancel_outcome("already_canceled" if already_canceled else "canceled")
        order = result.order
        if already_canceled:
            self.log.info("Order %s was canceled already; nothing to do", request.order_id)
        else:
            self.log.info(
                "Order %s: orderStatus %s", request.order_id, order.get("orderStatus", "(not given)")
            )
        if for_nothing := assets.emit_order_event(
            context,
            self.outlets,
            hook.settings.tenant_id,
            request.order_id,
            already_canceled=already_canceled,
        ):
            self.log.info("%s", assets.nothing_canceled_note(for_nothing))
        return order

    def _record_sending(
        self, context: Context, tenant_id: str, order_id: int, *, applied: bool = True
    ) -> bool:
        """
        Durable (Airflow 3.3+): record, before the cancel goes out, that it is sent and may be applied;
        returns whether an earlier try of this task instance recorded the same (so a cancel found applied
        now was that try's: this run's). ``applied=False`` records that Kibo refused this try's cancel.
        """
        # Here, not at the top: the bulk run's ledger costs ~3 ms of a DAG parse that uses only this
        # operator (measured: make bench row 2), and only a running durable task needs it.
        from airflow_provider_kibo_cancel.operators.ledger import (  # noqa: PLC0415
            SINGLE_KEY,
            run_epoch,
            task_state_store,
            try_number,
        )

        store = task_state_store(context) if self.durable else None
        if store is None:
            if self.durable and applied:
                self.log.info(
                    "durable=True has no effect here: the task context has no task state store (Airflow "
                    "3.3+ gives one to every running task): a retry finding the order canceled reports it "
                    "as canceled already"
                )
            return False
        this_try = try_number(context)
        record = {"v": 1, "epoch": run_epoch(context), "tenant": str(tenant_id), "order_id": order_id}
        try:
            earlier = store.get(SINGLE_KEY, None)
            same = isinstance(earlier, dict) and all(earlier.get(k) == v for k, v in record.items())
            sent_before = bool(same and earlier.get("try") != this_try and earlier.get("may_have_applied"))
            store.set(SINGLE_KEY, {**record, "try": this_try, "may_have_applied": applied or sent_before})
        except Exception as exc:  # the ledger never fails the cancel
            self.log.warning("Durable run: the task state store could not be used (%s)", exc)
            return False
        if sent_before and applied:
            self.log.info(
                "Durable run: try %s sent this cancel and may have had it applied; found canceled now, it "
                "counts as this run's cancel",
                earlier.get("try") if isinstance(earlier, dict) else "?",
            )
        return sent_before
