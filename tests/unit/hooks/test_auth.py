"""hooks/auth.py: KiboOAuth (the token, its refresh, the refusal latch) and BearerToken, as requests auths."""

from __future__ import annotations

import gc
import logging
from typing import Any

import pytest
import requests

from airflow_provider_kibo_cancel.connection import KiboConnectionSettings, token_problem
from airflow_provider_kibo_cancel.emulator import KiboEmulator
from airflow_provider_kibo_cancel.exceptions import (
    KiboAuthenticationError,
    KiboConfigurationError,
    KiboStoppedError,
)
from airflow_provider_kibo_cancel.hooks.auth import BearerToken, KiboOAuth
from airflow_provider_kibo_cancel.hooks.decision import RetryLimits
from airflow_provider_kibo_cancel.hooks.kibo import KiboHook
from airflow_provider_kibo_cancel.hooks.retry import RetryPolicy
from tests.support import APP_KEY, SHARED_SECRET, TENANT

LIMITS = RetryLimits(max_attempts=1, backoff_base=0.0, max_retry_wait=1.0, longest_sleep=1.0)
log = logging.getLogger(__name__)


def settings(url: str, **fields: Any) -> KiboConnectionSettings:
    extra = {"tenant_id": TENANT, "environment": "sandbox", **fields.pop("extra", {})}
    return KiboConnectionSettings.from_connection(
        "kibo_auth_test",
        host=url,
        login=fields.get("login", APP_KEY),
        password=fields.get("password", SHARED_SECRET),
        extra=extra,
    )


def oauth_for(emu: KiboEmulator, **fields: Any) -> KiboOAuth:
    session = requests.Session()
    return KiboOAuth(
        settings(emu.url, **fields),
        policy=RetryPolicy(log),
        limits=LIMITS,
        post=lambda url, body: session.post(url, json=body, timeout=5),
        log=log,
    )


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        ("eyJ.abc-def_ghi", None),
        ("first\nsecond", "the token holds a line break at character 6 of 12"),
        ("first second", "the token holds a space at character 6 of 12"),
        ("tökén", "the token holds a character outside visible ASCII at character 2 of 5"),
    ],
)
def test_token_problem_tells_where_without_showing_the_token(token: str, problem: str | None) -> None:
    assert token_problem(token) == problem


def test_bearer_token_puts_its_token_on_a_request_and_never_in_its_repr() -> None:
    prepared = requests.Request("GET", "https://kibo.example/api").prepare()
    prepared.prepare_auth(BearerToken("tok-123"))
    assert prepared.headers["Authorization"] == "Bearer tok-123"
    assert "tok-123" not in repr(BearerToken("tok-123"))


def test_one_token_is_fetched_and_reused_until_it_is_stale(emulator: KiboEmulator) -> None:
    auth = oauth_for(emulator)
    first = auth.token()
    assert auth.token() == first and len(emulator.requests_to("oauth")) == 1
    assert auth.current is not None and first not in repr(auth)
    second = auth.token(stale=first)  # a 401 to the first: one new token
    assert second != first and len(emulator.requests_to("oauth")) == 2


def test_a_403_refreshes_once_per_token(emulator: KiboEmulator) -> None:
    auth = oauth_for(emulator)
    first = auth.token()
    assert auth.should_refresh(401, first)
    assert auth.should_refresh(403, first)  # the first 403 to a token: a new one may be allowed
    after = auth.token(stale=first, after_403=True)
    assert not auth.should_refresh(403, after)  # a 403 to the token fetched after a 403 is a refusal
    assert not auth.should_refresh(404, after)


def test_refused_credentials_are_final_without_another_oauth_request(emulator: KiboEmulator) -> None:
    auth = oauth_for(emulator, password="wrong-secret")
    with pytest.raises(KiboAuthenticationError):
        auth.token()
    assert auth.credentials_refused
    with pytest.raises(KiboAuthenticationError):
        auth.token()
    assert len(emulator.requests_to("oauth")) == 1


def test_a_pre_issued_token_is_used_as_it_is_and_never_refreshed(emulator: KiboEmulator) -> None:
    auth = oauth_for(emulator, login=None, password=None, extra={"access_token": "pre-issued-42"})
    assert auth.token() == "pre-issued-42" and not auth.refreshable
    assert not auth.should_refresh(401, "pre-issued-42")
    assert emulator.requests_to("oauth") == []


def test_kibo_oauth_refuses_a_pre_issued_token_with_a_line_break_unquoted(emulator: KiboEmulator) -> None:
    # Settings from from_connection() refuse it already (test_connection.py); model_copy(update=...)
    # skips that check, and http.client would quote the token in its error.
    checked = settings(emulator.url, login=None, password=None, extra={"access_token": "pre-issued-42"})
    with pytest.raises(KiboConfigurationError) as caught:
        KiboOAuth(
            checked.model_copy(update={"access_token": "half-one\nhalf-two"}),
            policy=RetryPolicy(log),
            limits=LIMITS,
            post=lambda url, body: requests.post(url, json=body, timeout=5),
            log=log,
        )
    assert "the token holds a line break" in str(caught.value)
    assert "half-one" not in str(caught.value) and "half-two" not in str(caught.value)


def test_a_session_whose_hook_is_gone_fetches_no_token_and_says_so(kibo_conn: KiboEmulator) -> None:
    session = KiboHook().get_conn()  # the hook is dropped here: hook -> session -> auth holds no cycle
    gc.collect()
    with pytest.raises(KiboStoppedError, match="the KiboHook of this session is gone"):
        session.get(f"{kibo_conn.url}/api/v2/order/1001", timeout=5)
    assert kibo_conn.requests == []


def test_the_hooks_session_authenticates_with_its_kibo_oauth(kibo_conn: KiboEmulator) -> None:
    hook = KiboHook()
    session = hook.get_conn()
    assert session.auth is hook.auth
    response = session.get(f"{kibo_conn.url}/api/v2/order/1001", timeout=5)
    assert response.status_code == 200 and response.json()["orderID"] == 1001
    assert len(kibo_conn.requests_to("oauth")) == 1
