"""pytest fixtures for users' own DAG tests: a local Kibo, and a ``kibo`` connection pointing at it.

Installed with the provider and registered through the ``pytest11`` entry point, so any project that
installs the provider can ask for these fixtures without a conftest import. Importing this module
imports neither Airflow nor the emulator (a conftest may still set ``AIRFLOW_HOME`` before Airflow reads
its configuration); nothing starts and no port opens until a test asks for a fixture.

- ``kibo_emulator``: a :class:`~airflow_provider_kibo_cancel.emulator.KiboEmulator` on a free port of
  127.0.0.1 for one test, as ``kibo-emulator`` starts by default: tenant 30294, Application Key
  ``demo-app-key``, Shared Secret ``demo-shared-secret``, open orders 1000-1999, orders 2000-2099
  canceled already. Stopped after the test, also when it fails.
- ``kibo_conn_id``: ``"kibo_default"``; override it in a conftest to set up another connection id.
- ``kibo_connection``: sets ``AIRFLOW_CONN_<KIBO_CONN_ID>`` (JSON form) to a connection to
  ``kibo_emulator`` for one test, and returns that connection as a dict.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from airflow_provider_kibo_cancel.emulator import KiboEmulator

EMULATOR_TENANT = "30294"
EMULATOR_APP_KEY = "demo-app-key"
EMULATOR_SHARED_SECRET = "demo-shared-secret"


@pytest.fixture
def kibo_emulator() -> Iterator[KiboEmulator]:
    """A local Kibo for one test on a free 127.0.0.1 port (see the module docstring for its data)."""
    # pytest loads this plugin in every session of every project with the provider installed; the
    # emulator (~12 ms, measured) only for the tests that use it.
    from airflow_provider_kibo_cancel.emulator import KiboEmulator  # noqa: PLC0415

    emulator = KiboEmulator(tenants=(EMULATOR_TENANT,), clients={EMULATOR_APP_KEY: EMULATOR_SHARED_SECRET})
    emulator.add_orders(range(1000, 2000))
    emulator.add_orders(range(2000, 2100), status="CANCELED")
    with emulator:
        yield emulator


@pytest.fixture
def kibo_conn_id() -> str:
    """The connection id ``kibo_connection`` sets up; override this fixture for another."""
    return "kibo_default"


@pytest.fixture
def kibo_connection(
    kibo_emulator: KiboEmulator, kibo_conn_id: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """``AIRFLOW_CONN_<KIBO_CONN_ID>`` pointing at ``kibo_emulator`` for one test; returns the connection."""
    connection: dict[str, Any] = {
        "conn_type": "kibo",
        "login": EMULATOR_APP_KEY,
        "password": EMULATOR_SHARED_SECRET,
        "host": kibo_emulator.url,
        "extra": {"tenant_id": EMULATOR_TENANT, "environment": "sandbox"},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{kibo_conn_id.upper()}", json.dumps(connection))
    return connection
