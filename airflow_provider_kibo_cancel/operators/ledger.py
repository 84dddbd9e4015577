"""The durable ledger of a bulk run: what the DAG run's tries settled, kept in Airflow's task state store.

On Airflow 3.3+ ``context["task_state_store"]`` (AIP-103) keeps JSON values per task instance across its
tries, a worker that died included. A durable :class:`BulkCancelOrdersOperator` writes there, under
``LEDGER_KEY``, as it goes:

- ``canceled`` / ``already_canceled``: the orders settled so far (ids encoded as in
  :mod:`~airflow_provider_kibo_cancel.operators.encoding`, the deferral state's form);
- ``failed``: the failures' short records (status, errorCode, text without the order id, flags);
- ``maybe_applied``: orders that may have been applied without an answer: those in flight, and the next
  block the workers are about to send, written *before* they are sent, so a crash leaves them known;
- ``counted``: orders the provider's metrics counted already; ``emitted``: what a try's asset event named;
- ``epoch`` (the DAG run's ``clear_number``), ``tenant`` and ``plan`` (a fingerprint of the orders and
  their reasons), which say whether the ledger belongs to this run of the task.

It is written at least every second while anything changes, whenever the workers need a new block, and at
the end of a try. A document larger than ``SPLIT_BYTES`` is split into parts under
``LEDGER_KEY.<slot>.<n>`` (two alternating slots, the head written last), so a crash mid-write leaves
the previous complete ledger. Nothing in it is a secret or an order's body.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from airflow_provider_kibo_cancel.operators.encoding import (
    compact_failures,
    decode_ids,
    encode_ids,
    restore_failures,
)
from airflow_provider_kibo_cancel.operators.outcome import (
    ALREADY_CANCELED,
    CANCELED,
    FAILED,
    BulkCancelOutcome,
)

if TYPE_CHECKING:
    from airflow_provider_kibo_cancel.cancel_request import CancelOrderRequest
    from airflow_provider_kibo_cancel.operators.outcome import BulkCancelOutcome

LEDGER_KEY = "kibo_cancel.bulk_ledger"
SINGLE_KEY = "kibo_cancel.single_cancel"
VERSION = 1
#: Above this many bytes of JSON a ledger is split into parts of ``PART_CHARS`` characters, well
#: under ``[state_store] max_value_storage_bytes`` (65,535 by default).
SPLIT_BYTES = 48_000
PART_CHARS = 24_000
#: Pauses between the attempts of one ledger write (the last entry is never slept): a write that fails
#: three times in 1.5 s ends the ledger for the try; the end-of-try write is attempted all the same.
WRITE_RETRY_PAUSES = (0.5, 1.0, 0.0)


def task_state_store(context: Any) -> Any:
    """The task instance's state store (Airflow 3.3+), or None where Airflow has none (3.0-3.2)."""
    try:
        return context.get("task_state_store")
    except AttributeError:  # pragma: no cover - a context that is not a mapping
        return None


def run_epoch(context: Any) -> int:
    """The DAG run's ``clear_number``: a cleared task instance starts a new epoch, and a fresh ledger."""
    dag_run = context.get("dag_run")
    return int(getattr(dag_run, "clear_number", 0) or 0)


def try_number(context: Any) -> int:
    return int(getattr(context.get("ti"), "try_number", 0) or 0)


def plan_fingerprint(requests: list[CancelOrderRequest]) -> str:
    """The orders and the reasons they are sent with: a re-rendered plan that differs is noticed."""
    digest = hashlib.sha256()
    for request in sorted(requests, key=lambda r: r.order_id):
        other = request.disposition_other_reason or ""
        digest.update(f"{request.order_id}\t{request.disposition_reason}\t{other}\n".encode())
    return digest.hexdigest()[:20]


class Ledger:
    """Reads and writes one JSON document under ``key`` in a task state store, split when large."""

    def __init__(self, store: Any, key: str = LEDGER_KEY) -> None:
        self.store = store
        self.key = key
        self._slot = 0
        self._parts: dict[int, int] = {0: 0, 1: 0}  # parts last written to each slot
        #: Writes (``set`` calls) and the bytes of the largest document, for the figures.
        self.writes = 0
        self.largest = 0

    def read(self) -> dict[str, Any] | None:
        head = self.store.get(self.key, None)
        if not isinstance(head, dict):
            return None
        if "parts" not in head:
            return head
        slot, parts = int(head["slot"]), int(head["parts"])
        chunks = [self.store.get(f"{self.key}.{slot}.{index}", None) for index in range(parts)]
        if not all(isinstance(chunk, str) for chunk in chunks):
            return None
        text = "".join(chunks)
        if hashlib.sha256(text.encode()).hexdigest()[:20] != head.get("sha"):
            return None
        self._slot = slot
        self._parts[slot] = parts
        doc: dict[str, Any] = json.loads(text)
        return doc

    def write(self, doc: dict[str, Any]) -> None:
        text = json.dumps(doc, separators=(",", ":"))
        self.largest = max(self.largest, len(text))
        if len(text) <= SPLIT_BYTES:
            self.store.set(self.key, doc)
            self.writes += 1
            return
        slot = 1 - self._slot  # the other slot: the head still names a complete ledger meanwhile
        chunks = [text[index : index + PART_CHARS] for index in range(0, len(text), PART_CHARS)]
        for index, chunk in enumerate(chunks):
            self.store.set(f"{self.key}.{slot}.{index}", chunk)
        sha = hashlib.sha256(text.encode()).hexdigest()[:20]
        self.store.set(self.key, {"v": VERSION, "slot": slot, "parts": len(chunks), "sha": sha})
        self.writes += len(chunks) + 1
        for index in range(len(chunks), self._parts[slot]):  # leftovers of a longer earlier document
            self.store.delete(f"{self.key}.{slot}.{index}")
        self._slot, self._parts[slot] = slot, len(chunks)


def ledger_document(
    base: dict[str, Any],
    requests: list[CancelOrderRequest],
    outcome: BulkCancelOutcome,
    pending: Iterable[int] = (),
) -> dict[str, Any]:
    """The ledger for ``outcome`` (settled orders) and ``pending`` (may be applied, unanswered)."""
    by_bucket: dict[str, list[int]] = {CANCELED: [], ALREADY_CANCELED: [], FAILED: []}
    for order_id, bucket in outcome.results.items():
        if bucket in by_bucket:
            by_bucket[bucket].append(order_id)
    settled = set(by_bucket[CANCELED]) | set(by_bucket[ALREADY_CANCELED])
    maybe_applied = (set(outcome.maybe_applied) | set(pending)) - settled
    failures = [outcome.failures[order_id] for order_id in by_bucket[FAILED] if order_id in outcome.failures]
    maybe_applied |= {int(f["order_id"]) for f in failures if f.get("may_have_applied")}
    return {
        **base,
        "v": VERSION,
        "elapsed": round(outcome.elapsed, 3),
        CANCELED: encode_ids(by_bucket[CANCELED]),
        ALREADY_CANCELED: encode_ids(by_bucket[ALREADY_CANCELED]),
        FAILED: compact_failures(failures),
        "maybe_applied": encode_ids(maybe_applied),
    }


def restore_for_new_try(
    doc: dict[str, Any], requests: list[CancelOrderRequest], *, same_plan: bool
) -> tuple[BulkCancelOutcome, dict[str, int]]:
    """
    What an earlier try of this task instance settled, for a new try: ``canceled`` (this DAG run's),
    ``already_canceled`` and failures that a retry cannot mend stay settled; retryable failures, orders
    never sent and those that may have been applied are sent again (the last, found canceled, count as
    this run's). With a changed plan only orders still in it are kept, and no failure (its request may
    differ now). Returns the outcome and counts for the log line.
    """
    in_plan = {request.order_id for request in requests}
    outcome = BulkCancelOutcome(elapsed=float(doc.get("elapsed", 0.0)))
    dropped = 0
    for bucket in (CANCELED, ALREADY_CANCELED):
        for order_id in decode_ids(doc.get(bucket, "")):
            if order_id in in_plan:
                outcome.results[order_id] = bucket
            else:
                dropped += 1
    maybe_applied = set(decode_ids(doc.get("maybe_applied", "")))
    resend_failed = 0
    for order_id, entry in restore_failures(doc.get(FAILED, [])).items():
        if order_id not in in_plan:
            dropped += 1
        elif entry.get("retryable") or not same_plan:
            resend_failed += 1
            if entry.get("may_have_applied"):
                maybe_applied.add(order_id)
        else:
            outcome.results[order_id] = FAILED
            outcome.failures[order_id] = entry
    outcome.maybe_applied = {order_id for order_id in maybe_applied if order_id in in_plan} - set(
        outcome.results
    )
    counts = {
        "canceled": outcome.count(CANCELED),
        "already_canceled": outcome.count(ALREADY_CANCELED),
        "failed_kept": outcome.count(FAILED),
        "failed_resent": resend_failed,
        "maybe_applied": len(outcome.maybe_applied),
        "dropped": dropped,
    }
    return outcome, counts


class DurableBulkRun:
    """
    One try's use of the ledger: what earlier tries of this task instance settled (:meth:`resume`), the
    journal :class:`~.bulk_runner.BulkRun` writes as it goes, and the final write. A ledger that cannot be
    written is logged once and the run goes on as a plain one; a failing store never fails the task.
    """

    def __init__(
        self,
        store: Any,
        log: Any,
        *,
        epoch: int,
        try_number: int,
        tenant: str,
        requests: list[CancelOrderRequest],
    ) -> None:
        self.ledger = Ledger(store)
        self.log = log
        self.requests = requests
        self.fingerprint = plan_fingerprint(requests)
        self.base: dict[str, Any] = {
            "epoch": epoch,
            "tenant": str(tenant),
            "plan": self.fingerprint,
            "try": try_number,
        }
        self.counted: set[int] = set()  # orders the metrics counted already, in an earlier try or this one
        self.invalid_counted = False
        self.emitted: set[int] = set()
        self.broken = False

    def resume(self) -> BulkCancelOutcome | None:
        """What earlier tries settled (None: no ledger of this run, or one that cannot be used)."""
        try:
            doc = self.ledger.read()
        except Exception as exc:
            self.log.warning("Durable run: the ledger could not be read (%s); this try starts afresh", exc)
            return None
        if doc is None:
            return None
        if doc.get("v") != VERSION:
            self.log.warning("Durable run: a ledger of another version (%r) is ignored", doc.get("v"))
            return None
        if doc.get("epoch") != self.base["epoch"]:
            self.log.info(
                "Durable run: the task instance was cleared since the ledger was written (clear %s, now "
                "%s): this try starts afresh, orders canceled before count as already_canceled",
                doc.get("epoch"),
                self.base["epoch"],
            )
            return None
        if doc.get("tenant") != self.base["tenant"]:
            self.log.warning(
                "Durable run: the ledger is for tenant %s, the connection now for tenant %s: ignored, this "
                "try starts afresh",
                doc.get("tenant"),
                self.base["tenant"],
            )
            return None
        same_plan = doc.get("plan") == self.fingerprint
        outcome, counts = restore_for_new_try(doc, self.requests, same_plan=same_plan)
        in_plan = {request.order_id for request in self.requests}
        self.counted = set(decode_ids(doc.get("counted", ""))) & in_plan
        self.invalid_counted = bool(doc.get("invalid_counted")) and same_plan
        self.emitted = set(decode_ids(doc.get("emitted", ""))) & in_plan
        if doc.get("try") == self.base["try"]:
            return None  # this try's own ledger: a deferral resumed, its trigger event carries the state
        if not same_plan:
            self.log.warning(
                "Durable run: the orders (or their reasons) differ from those of try %s after rendering. "
                "Kept for orders still in the plan: what Kibo settled (canceled, already canceled, possibly "
                "applied); dropped: %d orders no longer in it and every failure (sent again)",
                doc.get("try"),
                counts["dropped"],
            )
        self.log.info(
            "Durable run: resuming from the ledger of try %s: %d canceled and %d already canceled by "
            "earlier tries, %d failures kept, %d failed orders sent again, %d possibly applied to check",
            doc.get("try"),
            counts["canceled"],
            counts["already_canceled"],
            counts["failed_kept"],
            counts["failed_resent"],
            counts["maybe_applied"],
        )
        return outcome

    def document(self, outcome: BulkCancelOutcome, pending: Any = ()) -> dict[str, Any]:
        base = {
            **self.base,
            "counted": encode_ids(self.counted),
            "invalid_counted": self.invalid_counted,
            "emitted": encode_ids(self.emitted),
        }
        return ledger_document(base, self.requests, outcome, list(pending))

    def journal(self, outcome: BulkCancelOutcome, pending: list[int]) -> bool:
        """
        :class:`~.bulk_runner.Journal`: write the ledger, trying again after a failed write (a passing
        fault of the execution API must not end the ledger); False (logged) when it still cannot be.
        """
        if self.broken:
            return False
        document = self.document(outcome, pending)
        for attempt, pause in enumerate(WRITE_RETRY_PAUSES, start=1):
            try:
                self.ledger.write(document)
            except Exception as exc:
                if attempt <= len(WRITE_RETRY_PAUSES) - 1:
                    self.log.warning("Durable run: writing the ledger failed (%s); trying again", exc)
                    time.sleep(pause)
                    continue
                self.broken = True
                self.log.warning(
                    "Durable run: the ledger could not be written (%s); this try goes on without it (a "
                    "retry would send again what this try sends from now on)",
                    exc,
                )
                return False
            return True
        return False  # pragma: no cover - the loop returns

    def save(self, outcome: BulkCancelOutcome) -> None:
        """
        The ledger at the end of a try (or before a deferral): what is settled, nothing in flight. Tried
        even after earlier writes failed: the end of a try is what its retry needs most.
        """
        self.broken = False
        self.journal(outcome, [])
