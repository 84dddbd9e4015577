"""Shared fixtures: the Kibo emulator on a free 127.0.0.1 port, and connections pointing at it."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_kibo_cancel.emulator import KiboEmulator
from devtools.airflow_local import AirflowEnv
from tests.support import (
    CANCELED_ORDERS,
    COMPLETED_ORDER,
    OPEN_ORDERS,
    Connect,
    kibo_connection,
    kibo_emulator,
)

if TYPE_CHECKING:
    from airflow_provider_kibo_cancel.hooks.kibo import KiboHook

# Airflow reads its configuration when first imported: keep it away from ~/airflow and quiet. Each
# pytest process (each xdist worker) has an Airflow home of its own, for in-process DAG runs
# (tests/dag_runs.py) from tests/dags; the Airflow processes of tests/integration get homes of theirs.
_HOME = tempfile.mkdtemp(prefix="kibo-tests-airflow-")
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
os.environ["AIRFLOW_HOME"] = _HOME
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(Path(__file__).parent / "dags")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")


INTEGRATION = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/integration needs Airflow processes: marked `integration` by its path.
    The longest files are handed out first (those of tests/integration, then the unit files with
    in-process DAG runs, marked `dag_run`, whose time is mostly Kibo's Retry-After waits), so that with
    files spread over workers (pytest-xdist's loadfile with --no-loadscope-reorder, as `make test-fast`
    runs) the run does not end waiting on one of them."""
    for item in items:
        if INTEGRATION in item.path.parents:
            item.add_marker(pytest.mark.integration)
    items.sort(
        key=lambda item: (INTEGRATION not in item.path.parents, not item.get_closest_marker("dag_run"))
    )


@pytest.fixture
def emulator() -> Iterator[KiboEmulator]:
    """A fresh emulator per test: open orders 1000-1099, canceled 2000-2009, completed 3000."""
    emu = kibo_emulator(OPEN_ORDERS, CANCELED_ORDERS)
    emu.add_orders([COMPLETED_ORDER], status="COMPLETED")
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def connect(monkeypatch: pytest.MonkeyPatch) -> Connect:
    """The one factory of emulator-backed connections: ``connect(emu, conn_id="kibo_default", **extra)``
    sets AIRFLOW_CONN_<CONN_ID> for this test (the JSON form of ``tests.support.kibo_connection``: fast
    retries unless ``extra`` overrides them) and returns a new KiboHook on it."""

    def connect_to(emu: KiboEmulator | str, conn_id: str = "kibo_default", **extra: Any) -> KiboHook:
        # Imported here: Airflow (which the hook imports) must not load before AIRFLOW_HOME is set above.
        from airflow_provider_kibo_cancel.hooks.kibo import KiboHook  # noqa: PLC0415

        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(kibo_connection(emu, **extra)))
        return KiboHook(conn_id)

    return connect_to


@pytest.fixture
def kibo_conn(emulator: KiboEmulator, connect: Connect) -> KiboEmulator:
    """The emulator, with `kibo_default` pointing at it (through ``connect``)."""
    connect(emulator)
    return emulator


@pytest.fixture(scope="session")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> AirflowEnv:
    """A real Airflow 3 home with a migrated SQLite database; DAG files from tests/dags."""
    env = AirflowEnv(tmp_path_factory.mktemp("airflow_home"), Path(__file__).parent / "dags")
    env.migrate()
    return env
