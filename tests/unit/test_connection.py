"""Reading a `kibo` connection: hosts derived as the specification gives them, bad set-ups named."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from airflow_provider_kibo_cancel.connection import KiboConnectionSettings
from airflow_provider_kibo_cancel.exceptions import KiboConfigurationError
from airflow_provider_kibo_cancel.hooks.kibo import KiboHook
from airflow_provider_kibo_cancel.routes import DEFAULT_AUTH_URL


def settings(
    host: str | None = None, login: str | None = "key", password: str | None = "secret", **extra: Any
) -> KiboConnectionSettings:
    return KiboConnectionSettings.from_connection(
        "kibo_test", host=host, login=login, password=password, extra=extra
    )


def test_production_host_from_tenant() -> None:
    s = settings(tenant_id="30294", environment="production")
    assert s.base_url == "https://30294-translation.mozu.com"
    assert (
        s.auth_url == DEFAULT_AUTH_URL == "https://home.mozu.com/api/platform/applications/authtickets/oauth"
    )


def test_sandbox_host_from_tenant_and_numeric_extras() -> None:
    s = settings(tenant_id=30294, environment=" Sandbox ", site_id=50525, timeout="12.5")
    assert s.base_url == "https://30294-translation.sandbox.mozu.com"
    assert s.headers() == {"x-vol-tenant": "30294", "x-vol-site": "50525", "Accept": "application/json"}
    assert s.timeout == 12.5


def test_host_override_moves_the_oauth_endpoint_too() -> None:
    s = settings(host="http://127.0.0.1:8080/", tenant_id="1", environment="sandbox")
    assert s.base_url == "http://127.0.0.1:8080"
    assert s.auth_url == "http://127.0.0.1:8080/api/platform/applications/authtickets/oauth"


def test_explicit_auth_url_wins() -> None:
    s = settings(
        host="https://proxy.example:8443",
        tenant_id="1",
        environment="production",
        auth_url="https://auth.example/oauth",
    )
    assert (s.base_url, s.auth_url) == ("https://proxy.example:8443", "https://auth.example/oauth")


def test_access_token_used_when_login_and_password_are_empty() -> None:
    s = settings(login=None, password="", tenant_id="1", environment="sandbox", access_token=" tok ")
    assert (s.client_id, s.access_token) == (None, "tok")


def test_a_pre_issued_token_that_cannot_go_into_a_header_is_named_not_shown() -> None:
    with pytest.raises(KiboConfigurationError) as caught:
        settings(login=None, password=None, tenant_id="1", environment="sandbox", access_token="tok-alpha b")
    message = str(caught.value)
    assert "extra 'access_token' is not a usable bearer token: the token holds a space at character 10" in (
        message
    )
    assert "alpha" not in message


def test_settings_built_directly_refuse_such_a_token_too_and_never_quote_a_value() -> None:
    base = settings(login=None, password=None, tenant_id="1", environment="sandbox", access_token="tok-ok")
    with pytest.raises(KiboConfigurationError, match="line break at character 10") as caught:
        KiboConnectionSettings(**{**base.model_dump(), "access_token": "tok-alpha\r\nX-Evil: 1"})
    assert "alpha" not in str(caught.value) and "Evil" not in str(caught.value)
    # Any other invalid value: pydantic's message names the field, never the value.
    with pytest.raises(ValidationError) as invalid:
        KiboConnectionSettings(**{**base.model_dump(), "client_secret": ["s3cret-value"]})
    assert "client_secret" in str(invalid.value) and "s3cret-value" not in str(invalid.value)


@pytest.mark.parametrize(
    ("host", "login", "password", "extra", "expected"),
    [
        (None, "k", "s", {"environment": "sandbox"}, ["extra 'tenant_id' is required"]),
        (
            None,
            "k",
            "s",
            {"tenant_id": "30294.evil.com/", "environment": "sandbox"},
            ["extra 'tenant_id' must be digits only, got '30294.evil.com/'"],
        ),
        (None, "k", "s", {"tenant_id": True, "environment": "sandbox"}, ["tenant_id' must be digits only"]),
        (None, "k", "s", {"tenant_id": "1"}, ["extra 'environment' is required"]),
        (
            None,
            "k",
            "s",
            {"tenant_id": "1", "environment": "staging"},
            ["extra 'environment' must be 'production' or 'sandbox', got 'staging'"],
        ),
        (
            None,
            "k",
            "s",
            {"tenant_id": "1", "environment": "sandbox", "site_id": "5a"},
            ["extra 'site_id' must be digits only, got '5a'"],
        ),
        (
            "127.0.0.1:8080",
            "k",
            "s",
            {"tenant_id": "1", "environment": "sandbox"},
            ["host (base URL override) must be a plain http(s)://host[:port] origin, got '127.0.0.1:8080'"],
        ),
        ("http://h/api", "k", "s", {"tenant_id": "1", "environment": "sandbox"}, ["got 'http://h/api'"]),
        (
            "https://u:p@h",
            "k",
            "s",
            {"tenant_id": "1", "environment": "sandbox"},
            ["must not contain credentials"],
        ),
        ("ftp://h", "k", "s", {"tenant_id": "1", "environment": "sandbox"}, ["got 'ftp://h'"]),
        ("http://h:99999", "k", "s", {"tenant_id": "1", "environment": "sandbox"}, ["got 'http://h:99999'"]),
        (
            None,
            "k",
            "s",
            {"tenant_id": "1", "environment": "sandbox", "auth_url": "file:///etc/passwd"},
            ["extra 'auth_url' must be an http(s) URL"],
        ),
        (None, "k", None, {"tenant_id": "1", "environment": "sandbox"}, ["set both login"]),
        (None, None, None, {"tenant_id": "1", "environment": "sandbox"}, ["no credentials"]),
        (
            None,
            "k",
            "s",
            {"tenant_id": "1", "environment": "sandbox", "timeout": "soon"},
            ["timeout must be a number from 0.1 to 600, got 'soon'"],
        ),
        (
            None,
            "k",
            "s",
            {"tenant_id": "1", "environment": "sandbox", "timeout": 0},
            ["timeout must be from 0.1 to 600, got 0"],
        ),
        (
            None,
            "k",
            "s",
            {"tenant_id": "1", "environment": "sandbox", "max_attempts": 2.5},
            ["max_attempts must be a number from 1 to 10"],
        ),
        # Every problem at once.
        (
            None,
            None,
            None,
            {"environment": "prod"},
            ["tenant_id' is required", "'environment' must be", "no credentials"],
        ),
    ],
)
def test_bad_connections_are_named(
    host: str | None, login: str | None, password: str | None, extra: dict[str, Any], expected: list[str]
) -> None:
    with pytest.raises(KiboConfigurationError) as caught:
        KiboConnectionSettings.from_connection(
            "kibo_test", host=host, login=login, password=password, extra=extra
        )
    message = str(caught.value)
    assert message.startswith("Kibo connection 'kibo_test' is not usable: ")
    for fragment in expected:
        assert fragment in message


def test_a_secret_never_appears_in_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = {
        "conn_type": "kibo",
        "login": "key",
        "password": "very-secret-value",
        "extra": {"tenant_id": "x1", "environment": "sandbox", "access_token": "tok-123456"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_KIBO_BAD", json.dumps(conn))
    with pytest.raises(KiboConfigurationError) as caught:
        KiboHook("kibo_bad").cancel_order(1, "created_by_mistake")
    assert "very-secret-value" not in str(caught.value)
    assert "tok-123456" not in str(caught.value)


def test_hook_arguments_override_connection_extras(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = {
        "conn_type": "kibo",
        "login": "key",
        "password": "secret",
        "extra": {"tenant_id": "1", "environment": "sandbox", "timeout": 5, "max_attempts": 2},
    }
    monkeypatch.setenv("AIRFLOW_CONN_KIBO_TUNED", json.dumps(conn))
    s = KiboHook("kibo_tuned", timeout=7, max_retry_wait=3).settings
    assert (s.timeout, s.max_attempts, s.max_retry_wait) == (7, 2, 3)
