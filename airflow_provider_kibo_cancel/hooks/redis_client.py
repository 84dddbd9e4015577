"""The Redis client the tenant budget talks to, from an Airflow Redis connection (``rate_limit_conn_id``).

The connection is read as the Redis provider's ``RedisHook`` reads it: host, port, password, the
database in the schema (or extra ``db``), and TLS for ``rediss://`` or extra ``ssl`` with the ``ssl_*``
extras. One client (and connection pool) per server in a process, with short timeouts and no retries:
a store that is down or hangs must cost a cancel a second at most. Errors are told without secrets.
"""

from __future__ import annotations

import threading
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from airflow_provider_kibo_cancel.safety import shown

#: Seconds one Redis command may take: a store that hangs must not hold a cancel up for long.
STORE_TIMEOUT = 1.0

_CLIENTS: dict[tuple[Any, ...], redis.Redis] = {}
_CLIENTS_LOCK = threading.Lock()


#: The TLS extras of an Airflow Redis connection, as the Redis provider's ``RedisHook`` reads them.
SSL_CERT_REQS = ("required", "optional", "none")
_SSL_PATHS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")


def _true(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).strip().lower() in ("true", "1", "false", "0"):
        return str(value).strip().lower() in ("true", "1")
    raise ValueError(f"extra '{field}' must be true or false, got {shown(value)}")


def tls_options(conn_type: str | None, extra: dict[str, Any]) -> dict[str, Any]:
    """The client's TLS arguments from a connection (``rediss`` or extra ``ssl``, and the ``ssl_*``
    extras: a private CA, a client certificate, the verify mode); empty without TLS."""
    ssl = extra.get("ssl")
    if (conn_type or "").lower() != "rediss" and not (ssl not in (None, "") and _true(ssl, "ssl")):
        return {}
    # A key's passphrase: given, or "" so that an encrypted key fails at once instead of OpenSSL asking
    # for it on the terminal (and holding the task until someone types).
    options: dict[str, Any] = {"ssl": True, "ssl_password": str(extra.get("ssl_password") or "")}
    reqs = extra.get("ssl_cert_reqs")
    if reqs not in (None, ""):
        if str(reqs).strip().lower() not in SSL_CERT_REQS:
            raise ValueError(
                f"extra 'ssl_cert_reqs' must be one of {', '.join(SSL_CERT_REQS)}, got {shown(reqs)}"
            )
        options["ssl_cert_reqs"] = str(reqs).strip().lower()
    for name in _SSL_PATHS:
        if extra.get(name) not in (None, ""):
            options[name] = str(extra[name]).strip()
    if extra.get("ssl_check_hostname") not in (None, ""):
        options["ssl_check_hostname"] = _true(extra["ssl_check_hostname"], "ssl_check_hostname")
    return options


def extra_of(conn: Any) -> dict[str, Any]:
    """A connection's extras as a dict (empty when it has none, or they are not a JSON object)."""
    extra = conn.extra_dejson if hasattr(conn, "extra_dejson") else {}
    return extra if isinstance(extra, dict) else {}


def client_for(conn: Any) -> redis.Redis:
    """One client (and connection pool) per Redis server, database and TLS set-up in this process."""
    extra = extra_of(conn)
    tls = tls_options(conn.conn_type, extra)
    schema = (conn.schema or "").strip().lstrip("/")
    db = int(schema) if schema.isdigit() else int(extra.get("db", 0) or 0)
    key = (
        conn.host or "127.0.0.1",
        int(conn.port or 6379),
        db,
        conn.login or None,
        conn.password,
        tuple(sorted(tls.items())),
    )
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            client = _CLIENTS[key] = redis.Redis(
                host=key[0],
                port=key[1],
                db=db,
                username=key[3],
                password=conn.password or None,
                socket_timeout=STORE_TIMEOUT,
                socket_connect_timeout=STORE_TIMEOUT,
                # One try: a store that is down costs each call one refused connection, not a backoff.
                retry=Retry(NoBackoff(), 0),
                **tls,
            )
        return client


def failure(exc: BaseException, *secrets: str | None) -> str:
    """What went wrong with the store, for the log: the error's kind and its first line, cut short, the
    password and key passphrase (should a message ever quote them) masked."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__
