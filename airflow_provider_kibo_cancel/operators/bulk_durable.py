"""Where a bulk run starts from and what it has counted: the durable ledger (Airflow 3.3+), the state a
deferral carries, and the outcome metrics, counted once per order and DAG run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from airflow_provider_kibo_cancel.operators.ledger import (
    DurableBulkRun,
    run_epoch,
    task_state_store,
    try_number,
)
from airflow_provider_kibo_cancel.operators.outcome import BulkCancelOutcome, restore_outcome

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_kibo_cancel.cancel_request import CancelOrderRequest
    from airflow_provider_kibo_cancel.operators.summary import BulkCancelSummary


class Logger(Protocol):
    """The operator's logger (stdlib's or the Task SDK's)."""

    def info(self, msg: Any, /, *args: Any, **kwargs: Any) -> Any: ...


def open_durable_run(
    context: Context, requests: list[CancelOrderRequest], tenant_id: str, log: Logger
) -> DurableBulkRun | None:
    """This try's ledger on Airflow 3.3+; None where there is no task state store."""
    store = task_state_store(context)
    if store is None:
        log.info(
            "durable=True has no effect here: the task context has no task state store (Airflow 3.3+ "
            "gives one to every running task): each try starts afresh"
        )
        return None
    return DurableBulkRun(
        store,
        log,
        epoch=run_epoch(context),
        try_number=try_number(context),
        tenant=tenant_id,
        requests=requests,
    )


def resume_point(
    requests: list[CancelOrderRequest],
    state: dict[str, Any] | None,
    durable: DurableBulkRun | None,
    log: Logger,
) -> tuple[BulkCancelOutcome, list[CancelOrderRequest]]:
    """What earlier segments of a deferred run, or earlier tries (the ledger), settled, and the orders
    still to send."""
    from_ledger = durable.resume() if durable is not None else None
    # A deferral resumed within this try: its state is exact; otherwise what earlier tries settled.
    previous = restore_outcome(state) if state is not None else from_ledger or BulkCancelOutcome()
    todo = [request for request in requests if request.order_id not in previous.results]
    if state is not None:
        log.info(
            "Resuming after Kibo's Retry-After (%.0f s deferred so far): %d settled, %d left to send",
            state.get("deferred_seconds", 0.0),
            len(previous.results),
            len(todo),
        )
    elif from_ledger is not None:
        log.info(
            "Durable run: %d orders settled by earlier tries, %d left to send",
            len(previous.results),
            len(todo),
        )
    return previous, todo


def count_outcomes(
    context: Context, summary: BulkCancelSummary, durable: DurableBulkRun | None, *, final: bool
) -> None:
    """
    The outcome metrics, each order once per DAG run in a durable run: orders an earlier try counted
    are not counted again; orders a retry may still settle (not attempted, a retryable failure) are
    counted when the task ends with them (success, or its last try).
    """
    # Here, not at the top: a DAG file's parse loads neither metrics nor assets code (test_signals.py).
    from airflow_provider_kibo_cancel import metrics  # noqa: PLC0415

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
