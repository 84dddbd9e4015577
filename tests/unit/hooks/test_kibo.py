"""KiboHook against the emulator over real HTTP: the exact wire format, tokens, errors."""

from __future__ import annotations

import gc
import json
import time
import weakref
from typing import Any

import pytest
import requests

from airflow_provider_kibo_cancel._compat import AirflowNotFoundException
from airflow_provider_kibo_cancel.cancel_request import CancelOrderRequest
from airflow_provider_kibo_cancel.emulator import KiboEmulator
from airflow_provider_kibo_cancel.exceptions import (
    KiboAuthenticationError,
    KiboConfigurationError,
    KiboConflictError,
    KiboForbiddenError,
    KiboNotFoundError,
    KiboResponseError,
)
from airflow_provider_kibo_cancel.hooks import kibo as hook_module
from airflow_provider_kibo_cancel.hooks.kibo import KiboHook
from tests.support import APP_KEY, COMPLETED_ORDER, SHARED_SECRET, TENANT, Connect


def test_cancel_sends_exactly_the_specified_request(kibo_conn: KiboEmulator) -> None:
    order = KiboHook().cancel_order("1001", " Customer_Changed_Mind ")

    oauth, cancel = kibo_conn.requests
    assert (oauth.method, oauth.path) == ("POST", "/api/platform/applications/authtickets/oauth")
    assert oauth.body == {
        "client_id": APP_KEY,
        "client_secret": kibo_conn.redacted(SHARED_SECRET),  # the record never holds the secret
        "grant_type": "client_credentials",
    }
    assert (cancel.method, cancel.path) == ("POST", "/api/v2/order/action/cancel")
    assert cancel.body == {"orderId": 1001, "dispositionReason": "customer_changed_mind"}
    assert cancel.headers["authorization"].startswith("Bearer ")
    assert cancel.headers["x-vol-tenant"] == TENANT
    assert cancel.headers["content-type"] == "application/json"
    assert cancel.headers["accept"] == "application/json"
    assert "x-vol-site" not in cancel.headers
    # The whole order comes back, sections Kibo does not document included.
    assert order == kibo_conn.order(1001)
    assert order["orderStatus"] == "CANCELED"
    assert order["customer"] == {"customerID": 7, "loyaltyTier": "gold"}
    assert json.loads(json.dumps(order)) == order


def test_other_reason_carries_its_explanation_and_site_header(
    emulator: KiboEmulator, connect: Connect
) -> None:
    connect(emulator, site_id="50525")
    KiboHook().cancel_order(1002, "other", "  Duplicate of 1001 ")
    cancel = emulator.requests_to("cancel")[0]
    assert cancel.body == {
        "orderId": 1002,
        "dispositionReason": "other",
        "dispositionOtherReason": "Duplicate of 1001",
    }
    assert cancel.headers["x-vol-site"] == "50525"


def test_one_token_and_one_connection_serve_many_calls(kibo_conn: KiboEmulator) -> None:
    hook = KiboHook()
    for order_id in (1003, 1004, 1005):
        hook.cancel_order(order_id, "created_by_mistake")
    hook.get_order(1003)
    assert len(kibo_conn.requests_to("oauth")) == 1
    api_calls = [r for r in kibo_conn.requests if r.endpoint != "oauth"]
    assert len(api_calls) == 4
    assert len({r.client_port for r in api_calls}) == 1  # keep-alive: one TCP connection
    assert len({r.headers["authorization"] for r in api_calls}) == 1


def test_a_401_refreshes_the_token_once(kibo_conn: KiboEmulator) -> None:
    hook = KiboHook()
    hook.cancel_order(1006, "created_by_mistake")
    kibo_conn.expire_tokens()
    order = hook.cancel_order(1007, "created_by_mistake")
    assert order["orderStatus"] == "CANCELED"
    assert len(kibo_conn.requests_to("oauth")) == 2
    assert [r.body["orderId"] for r in kibo_conn.requests_to("cancel")] == [1006, 1007, 1007]


def test_a_second_401_is_an_authentication_error(kibo_conn: KiboEmulator) -> None:
    kibo_conn.inject("status", status=401, times=2)
    with pytest.raises(KiboAuthenticationError) as caught:
        KiboHook().cancel_order(1008, "created_by_mistake")
    assert caught.value.status == 401 and not caught.value.retryable
    assert len(kibo_conn.requests_to("cancel")) == 2
    assert kibo_conn.order(1008)["orderStatus"] == "OPEN"  # type: ignore[index]


def test_token_is_refreshed_before_it_expires(emulator: KiboEmulator, connect: Connect) -> None:
    emulator.token_ttl = 2  # refreshed 0.2 s ahead of expiry
    connect(emulator)
    hook = KiboHook()
    hook.get_order(1009)
    time.sleep(1.9)
    hook.get_order(1009)
    assert len(emulator.requests_to("oauth")) == 2
    assert len(emulator.requests_to("get_order")) == 2  # no 401 was needed


def test_wrong_secret_is_named_without_the_secret(emulator: KiboEmulator, connect: Connect) -> None:
    connect(emulator, password="wrong-secret-999")
    with pytest.raises(KiboAuthenticationError) as caught:
        KiboHook().cancel_order(1010, "created_by_mistake")
    message = str(caught.value)
    assert "Kibo refused the Application Key / Shared Secret" in message
    assert "HTTP 401" in message and "correlation id" in message
    assert "wrong-secret-999" not in message
    assert emulator.requests_to("cancel") == []


def test_pre_issued_access_token(emulator: KiboEmulator, connect: Connect) -> None:
    token = requests.post(
        emulator.url + "/api/platform/applications/authtickets/oauth",
        json={"client_id": APP_KEY, "client_secret": SHARED_SECRET, "grant_type": "client_credentials"},
        timeout=5,
    ).json()["access_token"]
    connect(emulator, login="", password="", access_token=token)
    KiboHook().cancel_order(1011, "created_by_mistake")
    assert len(emulator.requests_to("oauth")) == 1  # only the test's own
    assert emulator.requests_to("cancel")[0].headers["authorization"] == f"Bearer {emulator.redacted(token)}"


def test_unknown_tenant_is_forbidden(emulator: KiboEmulator, connect: Connect) -> None:
    connect(emulator, tenant_id="99999")
    with pytest.raises(KiboForbiddenError, match="HTTP 403"):
        KiboHook().cancel_order(1012, "created_by_mistake")


def test_errors_carry_status_code_message_order_and_correlation(kibo_conn: KiboEmulator) -> None:
    with pytest.raises(KiboNotFoundError) as caught:
        KiboHook().cancel_order(424242, "created_by_mistake")
    error = caught.value
    assert (error.status, error.error_code, error.order_id) == (404, "GENERIC_NOT_FOUND", 424242)
    assert error.kibo_message == "Order 424242 not found"
    assert error.correlation_id and len(error.correlation_id) == 32
    for part in (
        "order 424242",
        "HTTP 404",
        "errorCode GENERIC_NOT_FOUND",
        "Order 424242 not found",
        f"correlation id {error.correlation_id}",
    ):
        assert part in str(error)
    assert len(kibo_conn.requests_to("cancel")) == 1  # a 404 is never retried


def test_already_canceled_order_is_returned(kibo_conn: KiboEmulator) -> None:
    order = KiboHook().cancel_order(2001, "created_by_mistake")
    assert order["orderID"] == 2001 and order["orderStatus"] == "CANCELED"
    assert [r.endpoint for r in kibo_conn.requests] == ["oauth", "cancel", "get_order"]
    assert kibo_conn.cancels_applied(2001) == 0


def test_a_conflict_on_an_order_that_is_not_canceled_fails(kibo_conn: KiboEmulator) -> None:
    with pytest.raises(KiboConflictError) as caught:
        KiboHook().cancel_order(COMPLETED_ORDER, "created_by_mistake")
    assert caught.value.status == 409 and "INVALID_ORDER_STATE" in str(caught.value)


def test_get_order(kibo_conn: KiboEmulator) -> None:
    hook = KiboHook()
    assert hook.get_order("1013") == kibo_conn.order(1013)
    with pytest.raises(KiboNotFoundError):
        hook.get_order(55)
    assert [r.path for r in kibo_conn.requests_to("get_order")] == ["/api/v2/order/1013", "/api/v2/order/55"]


def test_a_2xx_that_is_not_the_order_and_did_not_cancel_it_is_an_error(kibo_conn: KiboEmulator) -> None:
    kibo_conn.inject("html")  # a 200 HTML page from something in Kibo's place; the order stays OPEN
    with pytest.raises(KiboResponseError) as caught:
        KiboHook().cancel_order(1014, "created_by_mistake")
    assert "<html><body><h1>Maintenance" in str(caught.value)
    # Any 2xx may mean the cancel was applied: the order was read back, and a retry reads it again.
    assert caught.value.may_have_applied
    assert [r.path for r in kibo_conn.requests_to("get_order")] == ["/api/v2/order/1014"]


@pytest.mark.parametrize("fault", ["wrong_order", "truncated"])
def test_a_2xx_whose_body_is_not_the_order_settles_the_order_as_canceled(
    kibo_conn: KiboEmulator, fault: str
) -> None:
    # Kibo applied the cancel and answered 200 with a body that is not this order (another order, a
    # body cut short, bytes that do not decode): reading the order back settles it as this call's cancel.
    kibo_conn.inject(fault)  # type: ignore[arg-type]
    result = KiboHook().cancel(CancelOrderRequest.from_raw(1014, "created_by_mistake"))
    assert result.order["orderStatus"] == "CANCELED" and not result.already_canceled
    assert kibo_conn.cancels_applied(1014) == 1
    assert len(kibo_conn.requests_to("cancel")) == 1
    assert [r.path for r in kibo_conn.requests_to("get_order")] == ["/api/v2/order/1014"]


def test_test_connection_succeeds_without_touching_orders(kibo_conn: KiboEmulator) -> None:
    ok, message = KiboHook().test_connection()
    assert ok, message
    assert message == f"Connected to Kibo tenant {TENANT} (sandbox) at {kibo_conn.url}"
    assert [r.endpoint for r in kibo_conn.requests] == ["oauth", "get_order"]


def test_test_connection_names_a_wrong_secret(emulator: KiboEmulator, connect: Connect) -> None:
    connect(emulator, password="nope-123")
    ok, message = KiboHook().test_connection()
    assert not ok
    # One statement of the problem, not "rejected the credentials: ... refused the ..."
    assert message.startswith(
        "Kibo refused the Application Key / Shared Secret (login / password) of connection "
    )
    assert "rejected" not in message
    assert "nope-123" not in message


def test_test_connection_names_an_unreachable_host(connect: Connect) -> None:
    with KiboEmulator() as emu:
        url = emu.url
    ok, message = connect(url).test_connection()  # the emulator is gone now
    assert not ok
    assert message.startswith("Kibo is unreachable")


def test_test_connection_names_a_bad_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_KIBO_DEFAULT", json.dumps({"conn_type": "kibo", "extra": {}}))
    ok, message = KiboHook().test_connection()
    assert not ok
    assert "tenant_id' is required" in message


def test_a_connection_airflow_could_not_read_once_is_asked_again(
    kibo_conn: KiboEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Airflow's task SDK reports a connection lookup that failed (the API server timed out) as "isn't
    # defined": one miss must not fail the task as configuration, without retries.
    real = KiboHook.get_connection
    lookups: list[str] = []

    def flaky(conn_id: str) -> Any:
        lookups.append(conn_id)
        if len(lookups) == 1:
            raise AirflowNotFoundException(f"The conn_id `{conn_id}` isn't defined")
        return real(conn_id)

    monkeypatch.setattr(hook_module, "CONNECTION_RECHECK_DELAY", 0.01)
    monkeypatch.setattr(KiboHook, "get_connection", staticmethod(flaky))
    assert KiboHook().get_order(1001)["orderID"] == 1001
    assert lookups[:2] == ["kibo_default", "kibo_default"]


def test_a_connection_still_missing_when_asked_again_is_configuration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hook_module, "CONNECTION_RECHECK_DELAY", 0.01)
    lookups: list[str] = []

    def missing(conn_id: str) -> Any:
        lookups.append(conn_id)
        raise AirflowNotFoundException(f"The conn_id `{conn_id}` isn't defined")

    monkeypatch.setattr(KiboHook, "get_connection", staticmethod(missing))
    with pytest.raises(KiboConfigurationError, match="The Kibo connection 'kibo_nowhere' does not exist"):
        KiboHook(kibo_conn_id="kibo_nowhere").settings  # noqa: B018
    assert lookups == ["kibo_nowhere", "kibo_nowhere"]


def test_a_dropped_hook_is_freed_at_once(emulator: KiboEmulator, connect: Connect) -> None:
    """No reference cycle through the hook: code that makes a hook per call frees each hook's session
    and its keep-alive socket when the hook goes, not whenever the cycle collector runs."""
    connect(emulator)
    hook = KiboHook()
    hook.get_order(1001)
    session = weakref.ref(hook.session)
    dropped = weakref.ref(hook)
    gc.disable()
    try:
        del hook
        assert dropped() is None and session() is None
    finally:
        gc.enable()
