"""Constants and helpers shared by the tests."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import ssl
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pytest

from airflow_provider_kibo_cancel.emulator import KiboEmulator
from devtools.airflow_local import AirflowEnv

if TYPE_CHECKING:
    from airflow_provider_kibo_cancel.hooks.kibo import KiboHook

APP_KEY = "demo-app-key"
SHARED_SECRET = "s3cr3t-shared-value-4711"
TENANT = "30294"
OPEN_ORDERS = range(1000, 1100)
CANCELED_ORDERS = range(2000, 2010)
COMPLETED_ORDER = 3000


def kibo_emulator(
    open_orders: Iterable[int] = (), canceled_orders: Iterable[int] = (), **options: Any
) -> KiboEmulator:
    """An emulator (not started) that knows the tests' tenant and client, with these orders."""
    emu = KiboEmulator(tenants=(TENANT,), clients={APP_KEY: SHARED_SECRET}, **options)
    emu.add_orders(list(open_orders))
    emu.add_orders(list(canceled_orders), status="CANCELED")
    return emu


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


class Connect(Protocol):
    """The `connect` fixture (tests/conftest.py): ``connect(emu, conn_id="kibo_default", **extra)``."""

    def __call__(self, emu: KiboEmulator | str, conn_id: str = ..., **extra: Any) -> KiboHook: ...


def unscheduled_copies(dag_files: list[Path], folder: Path) -> Path:
    """Copies of DAG files in ``folder`` with ``schedule="@daily"`` as None: unpaused, a ``@daily`` DAG
    starts a run of its own within 2.4 h after midnight UTC (Airflow's CronTriggerTimetable runs the last
    fire time when unpaused within a tenth of a day of it), beside the one a test triggers."""
    folder.mkdir(parents=True, exist_ok=True)
    for dag_file in dag_files:
        (folder / dag_file.name).write_text(
            dag_file.read_text().replace('schedule="@daily"', "schedule=None")
        )
    return folder


def migrated_home(home: Path, dags_folder: Path) -> AirflowEnv:
    """A new Airflow home at ``home`` (created here) with a migrated database, for Airflow processes."""
    env = AirflowEnv(home, dags_folder)
    env.home.mkdir()
    env.migrate()
    return env


CHROMIUM = "/usr/bin/chromium"


def debian_chromium() -> str:
    """Debian's Chromium, installed here when missing (no browser download by Playwright)."""
    if not Path(CHROMIUM).exists():
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            pytest.fail(f"{CHROMIUM} is missing and cannot be installed here (needs root and apt-get)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env)
    return CHROMIUM


def tls_server_context(folder: Path) -> tuple[ssl.SSLContext, Path]:
    """A server TLS context with a self-signed certificate for 127.0.0.1, and the certificate's path."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context, cert


def permanent_failure_line(message: str) -> str:
    """How a task log shows a permanent Kibo error that ended the task: raised as the Kibo error itself
    where the Kibo retry policy fails it (Airflow 3.3+), as AirflowFailException before."""
    kibo_error = r"airflow_provider_kibo_cancel\.exceptions\.Kibo\w*Error"
    return rf"(AirflowFailException|{kibo_error}): {re.escape(message)}"


def permanent_errors() -> tuple[type[BaseException], ...]:
    """What ``operator.execute()`` raises for an error no retry can mend (see ``permanent_failure_line``)."""
    # Imported here: conftest imports this module before it sets Airflow's environment, and Airflow
    # reads its configuration when first imported.
    from airflow_provider_kibo_cancel._compat import AirflowFailException  # noqa: PLC0415
    from airflow_provider_kibo_cancel.exceptions import KiboError  # noqa: PLC0415

    return (AirflowFailException, KiboError)


def assert_no_retry(operator: Any, exc: BaseException) -> None:
    """The task would fail without Airflow retries: AirflowFailException, or the Kibo policy says FAIL."""
    from airflow_provider_kibo_cancel._compat import AirflowFailException  # noqa: PLC0415 - as above

    if isinstance(exc, AirflowFailException):
        return
    decision = operator.retry_policy.evaluate(exc, 1, 3)
    assert decision.action.value == "fail", (exc, decision)


@contextlib.contextmanager
def one_heavy_stack_at_a_time(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Hold the machine's one slot for a test that runs a scheduler with many task processes and asserts
    a pace: two of them at once on two cores starve the API server both talk to (execution API calls
    time out, tasks fail). A lock file every pytest-xdist worker of the run shares; other tests go on."""
    lock = tmp_path_factory.getbasetemp().parent / "kibo-heavy-stack.lock"
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
