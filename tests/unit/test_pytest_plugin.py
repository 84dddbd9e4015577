"""The pytest plugin users get with the provider: registered, lazy, and its fixtures work."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

import pytest

LAZY_TEST = """
import sys


def test_nothing_is_loaded_unless_asked():
    loaded = [m for m in sys.modules if m.startswith(("airflow_provider_kibo_cancel.emulator", "airflow."))]
    assert loaded == []
"""

FIXTURES_TEST = """
import json
import os

import pytest


def test_emulator_and_connection(kibo_emulator, kibo_connection):
    from airflow_provider_kibo_cancel.hooks.kibo import KiboHook  # Airflow only once a test runs

    assert kibo_emulator.url.startswith("http://127.0.0.1:")
    assert json.loads(os.environ["AIRFLOW_CONN_KIBO_DEFAULT"]) == kibo_connection
    order = KiboHook().cancel_order(1500, "created_by_mistake")
    assert order["orderStatus"] == "CANCELED" == kibo_emulator.order(1500)["orderStatus"]
    assert kibo_emulator.order(2050)["orderStatus"] == "CANCELED"  # canceled already, as the CLI seeds


class TestAnotherConnectionId:
    @pytest.fixture
    def kibo_conn_id(self):
        return "kibo_shop"

    def test_the_connection_id_is_a_fixture(self, kibo_connection):
        from airflow_provider_kibo_cancel.hooks.kibo import KiboHook

        assert "AIRFLOW_CONN_KIBO_DEFAULT" not in os.environ
        assert KiboHook("kibo_shop").get_order(1001)["orderStatus"] == "OPEN"


def test_the_environment_is_restored():
    assert "AIRFLOW_CONN_KIBO_DEFAULT" not in os.environ
"""


def test_registered_through_the_pytest11_entry_point() -> None:
    (entry,) = [
        ep for ep in distribution("airflow-provider-kibo-cancel").entry_points if ep.group == "pytest11"
    ]
    assert entry.value == "airflow_provider_kibo_cancel.pytest_plugin"


def test_importing_the_plugin_imports_neither_airflow_nor_the_emulator() -> None:
    code = (
        "import sys, json, airflow_provider_kibo_cancel.pytest_plugin\n"
        "print(json.dumps(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.') "
        "or m.startswith(('airflow_provider_kibo_cancel.emulator', 'requests')))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == []


def test_a_users_pytest_gets_the_fixtures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A project outside this repository, with no conftest: the fixtures come from the entry point."""
    (tmp_path / "test_a_lazy.py").write_text(LAZY_TEST)
    (tmp_path / "test_b_fixtures.py").write_text(FIXTURES_TEST)
    monkeypatch.delenv("AIRFLOW_CONN_KIBO_DEFAULT", raising=False)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow_home"))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    assert "4 passed" in proc.stdout
