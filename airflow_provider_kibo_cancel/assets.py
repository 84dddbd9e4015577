"""Asset events for canceled orders: downstream DAGs scheduled on "orders were canceled in Kibo".

The asset of a tenant is ``kibo://{tenant_id}/orders/canceled`` (:func:`kibo_orders_canceled_asset`).
The operators attach an ``extra`` describing what they canceled to every ``Asset`` in their ``outlets``,
and add that tenant's asset to every ``AssetAlias`` in them, when the task succeeds.

Only an alias gives an event just when something happened: Airflow itself records an event for every
``Asset`` a task declares in ``outlets`` each time the task succeeds, whatever the task does (checked in
``TaskInstance.register_asset_changes_in_db``, 3.0 to 3.3: an outlet without a payload is registered
with ``extra=None``); a task cannot withdraw it short of failing. So the operators add the tenant's asset
to an ``AssetAlias`` only when the run canceled at least one order itself (``counts.canceled >= 1``): a
run that canceled nothing new (everything canceled already, all failed or invalid, a dry run) starts no
consumer scheduled on the asset. A declared ``Asset`` still gets its event; its extra then says
``counts.canceled`` 0, which is how a consumer tells.

Importing this module is cheap (no Airflow import at the top): Airflow imports it to normalize ``kibo://``
URIs (the ``asset-uris`` handler in ``get_provider_info()``) and DAG files import it to name the asset.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, AssetAlias

from airflow_provider_kibo_cancel.exceptions import KiboConfigurationError

if TYPE_CHECKING:
    from urllib.parse import SplitResult

    from airflow.sdk import Asset, Context

SCHEME = "kibo"
#: At most this many order ids (``canceled`` and ``already_canceled`` together) go into one event's extra;
#: the counts always give the full numbers, and ``truncated`` says when ids were left out.
MAX_EVENT_ORDER_IDS = 1000


def kibo_orders_canceled_uri(tenant_id: str | int) -> str:
    tenant = str(tenant_id).strip()
    if not tenant.isdigit():
        raise ValueError(f"Kibo tenant_id must be digits only, got {tenant_id!r}")
    return f"{SCHEME}://{tenant}/orders/canceled"


def kibo_orders_canceled_asset(tenant_id: str | int) -> Asset:
    """The asset "orders were canceled in Kibo tenant ``tenant_id``": ``kibo://{tenant_id}/orders/canceled``."""
    return Asset(kibo_orders_canceled_uri(tenant_id))


def normalize_kibo_uri(parts: SplitResult) -> SplitResult:
    """Airflow's ``asset-uris`` handler for ``kibo://``: the tenant must be digits (a typo fails parsing)."""
    if not parts.netloc.isdigit():
        raise ValueError(
            f"A kibo:// asset URI names a tenant (digits) as its host, e.g. kibo://30294/orders/canceled; "
            f"got {parts.geturl()!r}"
        )
    return parts


def _tenant_of(outlet: Any) -> str | None:
    uri = str(getattr(outlet, "uri", ""))
    if not uri.startswith(f"{SCHEME}://"):
        return None
    return uri[len(SCHEME) + 3 :].split("/", 1)[0]


def check_outlets(outlets: Iterable[Any], tenant_id: str) -> None:
    """Refuse, before anything is sent, a ``kibo://`` outlet naming another tenant than the connection's."""
    problems = [
        f"outlet {outlet.uri!r} names tenant {tenant} but the connection is for tenant {tenant_id}"
        for outlet in outlets
        if (tenant := _tenant_of(outlet)) is not None and tenant != str(tenant_id)
    ]
    if problems:
        raise KiboConfigurationError(
            "Asset outlets do not match the Kibo connection, nothing was sent: " + "; ".join(problems)
        )


def canceled_orders_extra(
    *,
    tenant_id: str,
    canceled: list[int],
    already_canceled: list[int],
    counts: dict[str, int],
    dry_run: bool = False,
    cap: int = MAX_EVENT_ORDER_IDS,
) -> dict[str, Any]:
    """The ``extra`` of an event: tenant, order ids (at most ``cap`` in all, ``canceled`` first), counts."""
    kept_canceled = canceled[:cap]
    kept_already = already_canceled[: max(0, cap - len(kept_canceled))]
    return {
        "tenant_id": str(tenant_id),
        "canceled": kept_canceled,
        "already_canceled": kept_already,
        "counts": dict(counts),
        "truncated": len(kept_canceled) + len(kept_already) < len(canceled) + len(already_canceled),
        "dry_run": dry_run,
    }


def alias_extra(extra: dict[str, Any]) -> dict[str, Any]:
    """
    ``extra`` as an alias event can carry it on this Airflow.

    Airflow before 3.2 hashes an alias event's extra (``frozenset(extra.items())``, checked in 3.0.0's
    ``register_asset_changes_in_db``; 3.2 compares JSON), so a list in it fails the task's state update.
    There, lists and dicts travel as JSON text (``json.loads(extra["canceled"])``).
    """
    if _airflow_version() >= (3, 2):
        return extra
    return {
        key: value if value is None or isinstance(value, str | int | float) else json.dumps(value)
        for key, value in extra.items()
    }


def event_extra(extra: Any) -> dict[str, Any]:
    """
    An event's extra as the operators wrote it, whichever way it came: for a consumer reading
    ``triggering_asset_events`` (an alias event's lists and dicts are JSON text before Airflow 3.2).
    """
    decoded: dict[str, Any] = dict(extra or {})
    for key in ("canceled", "already_canceled", "counts"):
        if isinstance(decoded.get(key), str):
            with contextlib.suppress(ValueError):
                decoded[key] = json.loads(decoded[key])
    return decoded


def _airflow_version() -> tuple[int, int]:
    major, minor = version("apache-airflow-core").split(".")[:2]
    return int(major), int(minor)


def canceled_any(extra: dict[str, Any]) -> bool:
    """Whether the run an event describes canceled at least one order itself (a dry run cancels none)."""
    return not extra.get("dry_run") and int(extra.get("counts", {}).get("canceled", 0)) > 0


def emit_canceled_orders(context: Context, outlets: Iterable[Any], extra: dict[str, Any]) -> list[Any]:
    """
    Attach ``extra`` to each ``Asset`` outlet's event and add the tenant's asset to each ``AssetAlias``
    when the run canceled at least one order (:func:`canceled_any`).

    Airflow records an event for a declared ``Asset`` outlet whenever the task succeeds, a dry run or a
    run that canceled nothing included (its extra then says so: ``dry_run``, ``counts.canceled`` 0); an
    alias gets no event then. Returns the ``Asset`` outlets that get an event although nothing was
    canceled, so that the operator can say so.
    """
    events = context["outlet_events"]
    emitted_for_nothing = []
    for outlet in outlets:
        if isinstance(outlet, AssetAlias):
            if canceled_any(extra):
                events[outlet].add(kibo_orders_canceled_asset(extra["tenant_id"]), extra=alias_extra(extra))
        elif isinstance(outlet, Asset):
            events[outlet].extra.update(extra)
            if not canceled_any(extra):
                emitted_for_nothing.append(outlet)
    return emitted_for_nothing


def nothing_canceled_note(outlets: list[Any]) -> str:
    """The log line for :func:`emit_canceled_orders`'s Asset outlets that get an event for nothing."""
    names = ", ".join(repr(getattr(outlet, "uri", outlet)) for outlet in outlets)
    return (
        f"This run canceled no order, but Airflow records an event for the declared Asset outlet(s) {names} "
        "whenever the task succeeds (its extra says counts.canceled 0). To get events only when orders "
        "were canceled, declare an AssetAlias in outlets instead: the tenant's asset is then added to it "
        "only then."
    )


def extra_for_order(
    tenant_id: str, order_id: int, *, already_canceled: bool, dry_run: bool
) -> dict[str, Any]:
    """The event extra of ``CancelOrderOperator``: one order (none on a dry run)."""
    done = [] if dry_run else [order_id]
    return canceled_orders_extra(
        tenant_id=tenant_id,
        canceled=[] if already_canceled else done,
        already_canceled=done if already_canceled else [],
        counts={
            "total": 1,
            "canceled": int(bool(done) and not already_canceled),
            "already_canceled": int(bool(done) and already_canceled),
        },
        dry_run=dry_run,
    )


def extra_for_summary(tenant_id: str, summary: Mapping[str, Any]) -> dict[str, Any]:
    """The event extra of ``BulkCancelOrdersOperator``: its summary's counts and canceled ids, capped."""
    counts = {"total": int(summary.get("total", 0))}
    for bucket in ("canceled", "already_canceled", "failed", "not_attempted", "invalid", "duplicates"):
        if isinstance(summary.get(bucket), list):
            counts[bucket] = len(summary[bucket])
    return canceled_orders_extra(
        tenant_id=tenant_id,
        canceled=list(summary.get("canceled", [])),
        already_canceled=list(summary.get("already_canceled", [])),
        counts=counts,
        dry_run=bool(summary.get("dry_run")),
    )


def emit_order_event(
    context: Context,
    outlets: Iterable[Any],
    tenant_id: str,
    order_id: int,
    *,
    already_canceled: bool = False,
    dry_run: bool = False,
) -> list[Any]:
    """``CancelOrderOperator``'s call: the event for one order, when it has outlets; returns the Asset
    outlets that get an event although nothing was canceled."""
    if not outlets:
        return []
    extra = extra_for_order(tenant_id, order_id, already_canceled=already_canceled, dry_run=dry_run)
    return emit_canceled_orders(context, outlets, extra)


def emit_summary_event(
    context: Context, outlets: Iterable[Any], tenant_id: str, summary: Mapping[str, Any]
) -> list[Any]:
    """``BulkCancelOrdersOperator``'s call: the event for a bulk run's summary, when it has outlets;
    returns the Asset outlets that get an event although nothing was canceled."""
    if not outlets:
        return []
    return emit_canceled_orders(context, outlets, extra_for_summary(tenant_id, summary))
