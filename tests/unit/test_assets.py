"""assets.py: the tenant's asset URI, the event's extra (capped ids), outlets of another tenant refused.
The events of real DAG runs: tests/integration/test_signals.py."""

from __future__ import annotations

import json

import pytest
from airflow.sdk import Asset

from airflow_provider_kibo_cancel import assets
from airflow_provider_kibo_cancel.exceptions import KiboConfigurationError
from tests.support import TENANT

CANCELED_URI = "kibo://30294/orders/canceled"


def test_the_asset_uri_names_the_tenant() -> None:
    assert assets.kibo_orders_canceled_asset(30294).uri == CANCELED_URI
    assert assets.kibo_orders_canceled_asset(" 30294 ").name == CANCELED_URI
    with pytest.raises(ValueError, match="digits only, got 'acme'"):
        assets.kibo_orders_canceled_uri("acme")


def test_airflow_refuses_a_kibo_uri_without_a_tenant() -> None:

    with pytest.raises(ValueError, match="names a tenant"):
        Asset("kibo://acme/orders/canceled")


def test_ids_are_capped_and_truncation_is_said() -> None:
    extra = assets.canceled_orders_extra(
        tenant_id="1", canceled=[1, 2, 3], already_canceled=[4, 5], counts={"canceled": 3}, cap=4
    )
    assert (extra["canceled"], extra["already_canceled"], extra["truncated"]) == ([1, 2, 3], [4], True)
    extra = assets.canceled_orders_extra(
        tenant_id="1", canceled=[1, 2], already_canceled=[3], counts={}, cap=3
    )
    assert extra["truncated"] is False
    big = assets.extra_for_summary("1", {"total": 5000, "canceled": list(range(5000)), "dry_run": False})
    assert len(big["canceled"]) == assets.MAX_EVENT_ORDER_IDS and big["truncated"] is True
    assert big["counts"] == {"total": 5000, "canceled": 5000}
    assert len(json.dumps(big)) < 10_000  # stays a small row in the metadata database


def test_outlets_of_another_tenant_are_refused() -> None:

    assets.check_outlets([Asset(CANCELED_URI), Asset("anything")], TENANT)
    with pytest.raises(KiboConfigurationError, match="names tenant 1 but the connection is for tenant 30294"):
        assets.check_outlets([Asset("kibo://1/orders/canceled")], TENANT)
