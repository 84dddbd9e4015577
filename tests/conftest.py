"""Shared fixtures: the Kibo emulator on a free 127.0.0.1 port, and connections pointing at it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_kibo_cancel.emulator import KiboEmulator
from devtools.airflow_local import AirflowEnv
from tests.support import (
    APP_KEY,
    CANCELED_ORDERS,
    COMPLETED_ORDER,
    OPEN_ORDERS,
    SHARED_SECRET,
    TENANT,
    kibo_connection,
)

# Airflow reads its configuration when first imported: keep it away from ~/airflow and quiet.
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")


@pytest.fixture
def emulator() -> Iterator[KiboEmulator]:
    """A fresh emulator per test: open orders 1000-1099, canceled 2000-2009, completed 3000."""
    emu = KiboEmulator(tenants=(TENANT,), clients={APP_KEY: SHARED_SECRET})
    emu.add_orders(OPEN_ORDERS)
    emu.add_orders(CANCELED_ORDERS, status="CANCELED")
    emu.add_orders([COMPLETED_ORDER], status="COMPLETED")
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def kibo_conn(emulator: KiboEmulator, monkeypatch: pytest.MonkeyPatch) -> KiboEmulator:
    """`kibo_default` set through AIRFLOW_CONN_KIBO_DEFAULT, pointing at the emulator."""
    monkeypatch.setenv("AIRFLOW_CONN_KIBO_DEFAULT", json.dumps(kibo_connection(emulator)))
    return emulator


@pytest.fixture(scope="session")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> AirflowEnv:
    """A real Airflow 3 home with a migrated SQLite database; DAG files from tests/dags."""
    env = AirflowEnv(tmp_path_factory.mktemp("airflow_home"), Path(__file__).parent / "dags")
    env.migrate()
    return env


# The modules that start Airflow (`airflow dags test`, a scheduler, an API server), marked `integration`:
# the matrix's core legs leave them out but for the Makefile's CORE_INTEGRATION. Stands in until the
# tests/unit + tests/integration split, whose conftest marks everything under tests/integration/.
INTEGRATION_MODULES = frozenset(
    {
        "test_bulk_cancel",
        "test_deferral",
        "test_distributed",
        "test_docs",
        "test_durable_in_airflow",
        "test_error_details",
        "test_example_dags",
        "test_faults_in_airflow",
        "test_max_orders",
        "test_operator_in_airflow",
        "test_provider_info",
        "test_readme",
        "test_release",
        "test_review_before_cancel",
        "test_scheduler",
        "test_secret_sweep",
        "test_signals",
        "test_sustained_faults_in_airflow",
        "test_ui",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.stem in INTEGRATION_MODULES:
            item.add_marker(pytest.mark.integration)
