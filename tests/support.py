"""Constants and helpers shared by the tests."""

from __future__ import annotations

from typing import Any

from airflow_provider_kibo_cancel.emulator import KiboEmulator

APP_KEY = "demo-app-key"
SHARED_SECRET = "s3cr3t-shared-value-4711"
TENANT = "30294"
OPEN_ORDERS = range(1000, 1100)
CANCELED_ORDERS = range(2000, 2010)
COMPLETED_ORDER = 3000


def kibo_connection(emu: KiboEmulator | str, **extra: Any) -> dict[str, Any]:
    """The JSON form of a `kibo` connection to the emulator (or its URL); fast retries unless overridden."""
    fields: dict[str, Any] = {"tenant_id": TENANT, "environment": "sandbox", "backoff_base": 0.05}
    fields.update(extra)
    login = fields.pop("login", APP_KEY)
    password = fields.pop("password", SHARED_SECRET)
    return {
        "conn_type": "kibo",
        "login": login,
        "password": password,
        "host": emu if isinstance(emu, str) else emu.url,
        "extra": fields,
    }
