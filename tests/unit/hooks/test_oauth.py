"""Secrets stay secret: no clear-text credentials, none in messages, reprs or the emulator's record."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import requests

from airflow_provider_kibo_cancel.cancel_request import CancelOrderRequest
from airflow_provider_kibo_cancel.connection import KiboConnectionSettings
from airflow_provider_kibo_cancel.emulator import KiboEmulator
from airflow_provider_kibo_cancel.emulator import record as record_module
from airflow_provider_kibo_cancel.emulator import server as server_module
from airflow_provider_kibo_cancel.exceptions import (
    KiboAuthenticationError,
    KiboConfigurationError,
    KiboResponseError,
)
from airflow_provider_kibo_cancel.hooks.kibo import KiboHook
from airflow_provider_kibo_cancel.hooks.oauth import FALLBACK_TOKEN_LIFETIME
from tests.support import APP_KEY, SHARED_SECRET, Connect

URL_PASSWORD = "url-pa/ss:w#rd-8812"  # holds the characters a URL parser splits on


def masked(text: str) -> str:
    try:  # the masker Airflow's task logs go through
        from airflow.sdk._shared.secrets_masker import redact  # noqa: PLC0415 (the module depends on the Airflow version)
    except ImportError:  # Airflow < 3.2
        from airflow.sdk.execution_time.secrets_masker import redact  # type: ignore[no-redef,unused-ignore]  # noqa: PLC0415
    return str(redact(text))


def use(monkeypatch: pytest.MonkeyPatch, conn: dict[str, Any], conn_id: str = "kibo_sec") -> KiboHook:
    """A hook on a connection that is not the emulator's (for those: the `connect` fixture)."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    return KiboHook(conn_id)


def settings(host: str | None = None, **extra: Any) -> KiboConnectionSettings:
    return KiboConnectionSettings.from_connection(
        "kibo_test",
        host=host,
        login=APP_KEY,
        password=SHARED_SECRET,
        extra={"tenant_id": "1", "environment": "sandbox", **extra},
    )


# --- plain http --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "extra", "field"),
    [
        ("http://10.1.2.3:8080", {}, "host (base URL override) 'http://10.1.2.3:8080'"),
        ("http://kibo-proxy.internal", {}, "host (base URL override) 'http://kibo-proxy.internal'"),
        ("http://0.0.0.0:8080", {}, "host (base URL override)"),
        ("http://localhost.evil.example", {}, "host (base URL override)"),
        (None, {"auth_url": "http://auth.example/oauth"}, "extra 'auth_url' 'http://auth.example/oauth'"),
        (
            "https://proxy.example",
            {"auth_url": "http://auth.example/oauth", "allow_insecure_http": "false"},
            "extra 'auth_url'",
        ),
    ],
)
def test_plain_http_beyond_this_machine_is_refused(
    host: str | None, extra: dict[str, Any], field: str
) -> None:
    with pytest.raises(KiboConfigurationError) as caught:
        settings(host, **extra)
    message = str(caught.value)
    assert f"{field}" in message
    assert "uses plain http to a host that is not this machine" in message
    assert "Shared Secret and every bearer token would cross the network unencrypted" in message
    assert "Use https, or set extra 'allow_insecure_http': true" in message and "(unsafe)" in message


@pytest.mark.parametrize(
    "host",
    [
        "http://127.0.0.1:8080",
        "http://127.9.8.7",
        "http://localhost:1",
        "http://LOCALHOST",
        "http://[::1]:80",
    ],
)
def test_plain_http_to_loopback_is_fine(host: str) -> None:
    s = settings(host)
    assert s.base_url.startswith("http://") and s.insecure_urls == []


def test_the_unsafe_opt_in_allows_plain_http_and_the_hook_warns(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    s = settings("http://10.1.2.3:8080", allow_insecure_http=True)
    assert s.allow_insecure_http and s.insecure_urls == [
        "http://10.1.2.3:8080",
        "http://10.1.2.3:8080/api/platform/applications/authtickets/oauth",
    ]
    assert settings("http://10.1.2.3", allow_insecure_http="TRUE").allow_insecure_http
    conn = {
        "conn_type": "kibo",
        "login": APP_KEY,
        "password": SHARED_SECRET,
        "host": "http://10.1.2.3:8080",
        "extra": {"tenant_id": "1", "environment": "sandbox", "allow_insecure_http": True},
    }
    use(monkeypatch, conn).settings  # noqa: B018 - reading the settings is what warns
    log = capsys.readouterr().out  # Airflow's task logger writes there
    assert "sends the Shared Secret and bearer tokens over plain http to http://10.1.2.3:8080" in log
    assert SHARED_SECRET not in log


def test_the_opt_in_must_be_a_boolean() -> None:
    with pytest.raises(
        KiboConfigurationError, match="extra 'allow_insecure_http' must be true or false, got 'yes'"
    ):
        settings("https://h", allow_insecure_http="yes")


# --- credentials in URLs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "extra"),
    [
        (f"https://app:{URL_PASSWORD}@proxy.example", {}),
        (f"http://app:{URL_PASSWORD}@127.0.0.1:8080", {}),
        (f"app:{URL_PASSWORD}@proxy.example", {}),
        (None, {"auth_url": f"https://app:{URL_PASSWORD}@auth.example/oauth"}),
        (None, {"auth_url": f"https://{URL_PASSWORD}@auth.example/oauth"}),
    ],
)
def test_credentials_in_a_url_are_refused_and_never_echoed(
    kibo_conn: KiboEmulator, connect: Connect, host: str | None, extra: dict[str, Any]
) -> None:
    hook = connect(kibo_conn if host is None else host, "kibo_sec", **extra)
    with pytest.raises(KiboConfigurationError) as caught:
        hook.cancel_order(1001, "created_by_mistake")
    message = str(caught.value)
    assert "must not contain credentials (user:password@)" in message
    assert "***@" in message
    for fragment in (URL_PASSWORD, "pa/ss", "w#rd", "app:"):
        assert fragment not in message
    assert kibo_conn.requests == []


# --- repr and str ---------------------------------------------------------------------------------


def test_no_secret_in_any_repr_or_str(kibo_conn: KiboEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    with_secret = settings("http://127.0.0.1:1")
    with_token = KiboConnectionSettings.from_connection(
        "kibo_test",
        host=None,
        login=None,
        password=None,
        extra={"tenant_id": "1", "environment": "sandbox", "access_token": "pre-issued-token-5150"},
    )
    assert with_secret.client_secret == SHARED_SECRET and with_token.access_token == "pre-issued-token-5150"
    hook = KiboHook()
    hook.cancel_order(1001, "created_by_mistake")
    token = hook._token
    assert token is not None
    objects: list[Any] = [
        with_secret,
        with_token,
        hook,
        hook.settings,
        token,
        CancelOrderRequest.from_raw(1, "other", "why"),
        KiboAuthenticationError("Kibo refused the Application Key / Shared Secret", status=401),
    ]
    texts = [f(obj) for obj in objects for f in (repr, str)]
    assert "client_secret='***'" in repr(with_secret) and "access_token='***'" in str(with_token)
    for text in texts:
        for secret in (SHARED_SECRET, "pre-issued-token-5150", *kibo_conn.issued_tokens()):
            assert secret not in text


# --- OAuth answers ----------------------------------------------------------------------------------


def test_an_unparsable_oauth_answer_never_reaches_the_message(
    kibo_conn: KiboEmulator,
) -> None:
    # The real answer, token issued, cut in the middle: not JSON, yet the live token is in it.
    kibo_conn.inject("truncated", endpoint="oauth", size=40)
    with pytest.raises(KiboResponseError) as caught:
        KiboHook(max_attempts=1).cancel_order(1001, "created_by_mistake")
    message = str(caught.value)
    access_token, _ = kibo_conn.issued_tokens()
    assert "Kibo's OAuth endpoint answered without a usable access_token" in message
    assert "not JSON: application/json, 40 bytes" in message
    assert "the body is not shown as it may hold credentials" in message
    assert access_token[:8] not in message and '{"' not in message
    assert kibo_conn.requests_to("cancel") == []


def test_oauth_tokens_are_masked_as_soon_as_parsed_even_when_the_answer_is_refused(
    kibo_conn: KiboEmulator,
) -> None:
    # A JSON answer with a live refresh token but no access token: refused, and still masked.
    kibo_conn.inject("token_fields", endpoint="oauth", fields={"access_token": None})
    with pytest.raises(KiboResponseError) as caught:
        KiboHook(max_attempts=1).cancel_order(1001, "created_by_mistake")
    _, refresh_token = kibo_conn.issued_tokens()
    assert refresh_token not in str(caught.value)
    assert "a JSON object without a string access_token" in str(caught.value)
    assert refresh_token not in masked(f"leaked {refresh_token}")


def test_an_oauth_error_body_is_never_quoted(kibo_conn: KiboEmulator) -> None:
    kibo_conn.inject("html", endpoint="oauth", status=401)  # a proxy's HTML page instead of Kibo's JSON
    with pytest.raises(KiboAuthenticationError) as caught:
        KiboHook(max_attempts=1).cancel_order(1001, "created_by_mistake")
    message = str(caught.value)
    assert message.startswith(
        "Kibo refused the Application Key / Shared Secret (login / password) of connection"
    )
    assert "HTTP 401;" in message
    assert "Maintenance" not in message and "<html>" not in message


def test_kibos_own_error_message_is_kept(emulator: KiboEmulator, connect: Connect) -> None:
    hook = connect(emulator, "kibo_sec", password="wrong-secret-999")
    with pytest.raises(KiboAuthenticationError) as caught:
        hook.cancel_order(1001, "created_by_mistake")
    assert "errorCode UNAUTHORIZED; Kibo says: Invalid application key or shared secret" in str(caught.value)
    assert "wrong-secret-999" not in str(caught.value)


@pytest.mark.parametrize(
    ("expires_in", "shown"),
    [
        (None, "missing"),
        ("soon", "a string of 4 characters"),
        (0, "0"),
        (-60, "-60"),
        ("NaN", "a string of 3 characters"),
        (True, "a JSON bool"),
    ],
)
def test_an_unusable_expires_in_falls_back_to_a_safe_lifetime(
    kibo_conn: KiboEmulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    expires_in: Any,
    shown: str,
) -> None:
    fields = {"expires_in": expires_in} if expires_in is not None else {"expires_in": None}
    kibo_conn.inject("token_fields", endpoint="oauth", fields=fields, times=None)
    hook = KiboHook()
    hook.cancel_order(1001, "created_by_mistake")
    hook.cancel_order(1002, "created_by_mistake")
    assert len(kibo_conn.requests_to("oauth")) == 1  # one token for its whole (assumed) lifetime
    log = capsys.readouterr().out
    assert f"Kibo's OAuth answer has no usable expires_in ({shown}); using the token for 300 s" in log
    for token in kibo_conn.issued_tokens():
        assert token not in log
    # Refreshed once that lifetime (less the 10 % margin) has passed, not before.
    now = time.monotonic()
    monkeypatch.setattr(time, "monotonic", lambda: now + FALLBACK_TOKEN_LIFETIME * 0.85)
    hook.get_order(1001)
    assert len(kibo_conn.requests_to("oauth")) == 1
    monkeypatch.setattr(time, "monotonic", lambda: now + FALLBACK_TOKEN_LIFETIME * 0.95)
    hook.get_order(1001)
    assert len(kibo_conn.requests_to("oauth")) == 2


def test_an_absurd_expires_in_is_capped_at_a_day(kibo_conn: KiboEmulator) -> None:
    kibo_conn.inject("token_fields", endpoint="oauth", fields={"expires_in": 1e300})
    hook = KiboHook()
    hook.get_order(1001)
    assert hook._token is not None
    assert hook._token.refresh_at - time.monotonic() <= 86400


# --- the emulator's record --------------------------------------------------------------------------


def test_the_emulator_records_and_returns_no_secret(kibo_conn: KiboEmulator) -> None:
    KiboHook().cancel_order(1001, "created_by_mistake")
    requests.post(
        kibo_conn.url + "/api/platform/applications/authtickets/oauth", data=f"secret={SHARED_SECRET}"
    )
    access_token, refresh_token = kibo_conn.issued_tokens()
    oauth, cancel, raw_oauth = kibo_conn.requests
    assert oauth.body["client_secret"] == kibo_conn.redacted(SHARED_SECRET)
    assert cancel.headers["authorization"] == f"Bearer {kibo_conn.redacted(access_token)}"
    assert raw_oauth.body.startswith("<redacted: ")
    state = requests.get(kibo_conn.url + "/_emulator/state", timeout=5).text
    record = repr(kibo_conn.requests)
    for text in (state, record):
        assert "client_secret" in text or "authorization" in text or "oauth" in text
        for secret in (SHARED_SECRET, access_token, refresh_token):
            assert secret not in text
    # The fingerprint is keyed per emulator: not a plain hash anyone could compute from a guess.
    assert KiboEmulator().redacted(SHARED_SECRET) != kibo_conn.redacted(SHARED_SECRET)


def test_the_record_keeps_the_most_recent_requests_only() -> None:
    with KiboEmulator(max_recorded=5) as emu:
        emu.add_orders(range(1000, 1020))
        session = requests.Session()
        for order_id in range(1000, 1012):
            session.get(f"{emu.url}/api/v2/order/{order_id}", timeout=5)
        assert [r.path for r in emu.requests] == [f"/api/v2/order/{i}" for i in range(1007, 1012)]
        state = requests.get(f"{emu.url}/_emulator/state", timeout=5).json()
        assert len(state["requests"]) == 5
    assert record_module.RECORD_LIMIT == KiboEmulator().max_recorded == 10_000


def test_expired_tokens_are_forgotten(kibo_conn: KiboEmulator) -> None:
    kibo_conn.token_ttl = 0.05
    for _ in range(3):
        KiboHook().get_order(1001)
        time.sleep(0.1)
    assert len(kibo_conn._state.tokens) == 1  # only the newest, unexpired one is kept


@pytest.mark.parametrize(
    ("host", "warns"), [("127.0.0.1", False), ("::1", False), ("0.0.0.0", True), ("", True)]
)
def test_binding_beyond_loopback_warns_on_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], host: str, warns: bool
) -> None:
    bound: list[tuple[str, int]] = []

    class NoBind:  # tests bind 127.0.0.1 only: the address is recorded, not bound
        daemon_threads = False

        def __init__(self, address: tuple[str, int], handler: Any) -> None:
            bound.append(address)

    monkeypatch.setattr(server_module, "ThreadingHTTPServer", NoBind)
    KiboEmulator()._bind(host, 0)
    assert bound == [(host, 0)]
    err = capsys.readouterr().err
    assert ("WARNING: the Kibo emulator is bound to" in err) is warns
    if warns:
        assert "reachable from other machines" in err and "Bind 127.0.0.1" in err
