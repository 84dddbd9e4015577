"""The shared budget over TLS: a redis-server that speaks only TLS, with a private CA, as managed Redis
services run (the Redis provider's extras ``ssl_ca_certs``, ``ssl_cert_reqs``, ...)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from airflow_provider_kibo_cancel._compat import TaskDeferred
from airflow_provider_kibo_cancel.emulator import KiboEmulator
from airflow_provider_kibo_cancel.operators.cancel_order import CancelOrderOperator
from devtools.distributed import redis_server
from tests.integration.test_tenant_budget import ensure_redis_server
from tests.support import kibo_connection, kibo_emulator, tls_server_context

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A TLS-only redis-server on 127.0.0.1 and the CA certificate (self-signed) that verifies it."""
    ensure_redis_server()
    _, cert = tls_server_context(tmp_path)
    with redis_server(tmp_path, tls=(cert, tmp_path / "key.pem")) as url:
        yield url, cert


@pytest.fixture
def tenant() -> Iterator[KiboEmulator]:
    emu = kibo_emulator(range(1, 10))
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


def use_redis(monkeypatch: pytest.MonkeyPatch, emu: KiboEmulator, url: str, **extra: str) -> None:
    parts = urlsplit(url)
    redis_conn = {"conn_type": parts.scheme, "host": parts.hostname, "port": parts.port, "schema": "0"}
    monkeypatch.setenv("AIRFLOW_CONN_KIBO_REDIS", json.dumps({**redis_conn, "extra": extra}))
    monkeypatch.setenv(
        "AIRFLOW_CONN_KIBO_DEFAULT", json.dumps(kibo_connection(emu, rate_limit_conn_id="kibo_redis"))
    )


def cancel(order_id: int) -> CancelOrderOperator:
    return CancelOrderOperator(
        task_id=f"cancel_{order_id}",
        order_id=order_id,
        disposition_reason="created_by_mistake",
        deferrable=True,
    )


def test_a_rediss_connection_with_its_ca_shares_the_pause(
    tls_redis: tuple[str, Path], tenant: KiboEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, ca = tls_redis
    use_redis(monkeypatch, tenant, url, ssl_ca_certs=str(ca), ssl_cert_reqs="required")
    tenant.inject("status", status=429, retry_after="3600", order_id=1)
    with pytest.raises(TaskDeferred):
        cancel(1).execute({})
    sent = len(tenant.requests)
    # Another task, its own hook: it learns the pause from the TLS Redis and sends nothing.
    with pytest.raises(TaskDeferred) as deferred:
        cancel(2).execute({})
    assert len(tenant.requests) == sent
    assert 3500 < deferred.value.trigger.serialize()[1]["resume_at"] - time.time() <= 3600


def test_without_the_ca_the_budget_says_why_and_goes_on_per_task(
    tls_redis: tuple[str, Path],
    tenant: KiboEmulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, _ = tls_redis
    use_redis(monkeypatch, tenant, url)
    tenant.inject("status", status=429, retry_after="3600", order_id=1)
    with pytest.raises(TaskDeferred):
        cancel(1).execute({})
    captured = capsys.readouterr()
    log = captured.out + captured.err
    assert "The shared rate budget's store cannot be reached" in log
    assert "CERTIFICATE_VERIFY_FAILED" in log  # the cause, not only the error's class
    # Nothing was shared: another task's own budget knows of no pause and sends its cancel.
    cancel(2).execute({})
    assert tenant.cancels_applied(2) == 1


def test_a_client_certificate_with_an_encrypted_key_needs_its_passphrase(
    tls_redis: tuple[str, Path],
    tenant: KiboEmulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    url, ca = tls_redis
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-days", "1", "-subj", "/CN=kibo-client"),
            *("-passout", "pass:key-passphrase", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    tls = {"ssl_ca_certs": str(ca), "ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    # Without the passphrase: refused at once (no prompt on a terminal), said once, the run goes on.
    use_redis(monkeypatch, tenant, url, **tls)
    cancel(1).execute({})
    captured = capsys.readouterr()
    assert "The shared rate budget's store cannot be reached" in captured.out + captured.err
    assert tenant.cancels_applied(1) == 1
    # With it: the shared pause works over the client certificate.
    use_redis(monkeypatch, tenant, url, **tls, ssl_password="key-passphrase")
    tenant.inject("status", status=429, retry_after="3600", order_id=2)
    with pytest.raises(TaskDeferred):
        cancel(2).execute({})
    sent = len(tenant.requests)
    with pytest.raises(TaskDeferred):
        cancel(3).execute({})
    assert len(tenant.requests) == sent
    captured = capsys.readouterr()
    assert "cannot be reached" not in captured.out + captured.err
    assert "key-passphrase" not in captured.out + captured.err
