"""hooks/redis_client.py without a server: the client's TLS arguments from a connection, and what the log
says when the store fails. Against a real redis-server: integration/test_tenant_budget*.py."""

from __future__ import annotations

import pytest
import redis

from airflow_provider_kibo_cancel.hooks.redis_client import failure, tls_options


def test_without_tls_the_client_gets_no_tls_arguments() -> None:
    assert tls_options("redis", {}) == {}
    assert tls_options("redis", {"ssl": False, "ssl_ca_certs": "/ignored.pem"}) == {}
    # Unset, as the Redis provider reads them (an empty form field, a JSON null).
    assert tls_options("redis", {"ssl": None}) == tls_options("redis", {"ssl": ""}) == {}


def test_rediss_or_extra_ssl_turn_tls_on_with_the_redis_providers_extras() -> None:
    # No passphrase given: "", so an encrypted key fails at once rather than OpenSSL asking on a terminal.
    assert tls_options("rediss", {}) == {"ssl": True, "ssl_password": ""}
    extra = {
        "ssl": "true",
        "ssl_cert_reqs": "Required",
        "ssl_ca_certs": " /etc/ca.pem ",
        "ssl_certfile": "/etc/client.pem",
        "ssl_keyfile": "/etc/client.key",
        "ssl_check_hostname": "false",
        "ssl_password": "key-passphrase",
    }
    assert tls_options("redis", extra) == {
        "ssl": True,
        "ssl_password": "key-passphrase",
        "ssl_cert_reqs": "required",
        "ssl_ca_certs": "/etc/ca.pem",
        "ssl_certfile": "/etc/client.pem",
        "ssl_keyfile": "/etc/client.key",
        "ssl_check_hostname": False,
    }


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"ssl_cert_reqs": "strict"}, "extra 'ssl_cert_reqs' must be one of required, optional, none"),
        ({"ssl_check_hostname": "maybe"}, "extra 'ssl_check_hostname' must be true or false"),
        ({"ssl": "yes please"}, "extra 'ssl' must be true or false"),
    ],
)
def test_a_bad_tls_extra_is_named(extra: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tls_options("rediss" if "ssl" not in extra else "redis", extra)


def test_a_store_failure_is_told_by_kind_and_first_line_with_the_password_masked() -> None:
    exc = redis.ConnectionError("Error 1 connecting to 127.0.0.1:6380. [SSL] s3cret-pw failed.\nmore")
    assert failure(exc, None, "s3cret-pw") == (
        "ConnectionError: Error 1 connecting to 127.0.0.1:6380. [SSL] *** failed."
    )
    assert failure(redis.TimeoutError()) == "TimeoutError"
    assert len(failure(OSError("x" * 1000))) == len("OSError: ") + 200
