"""KiboHook: the OAuth token, the retry policy and the calls to Kibo's translated Order API."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any

import requests
from requests.auth import AuthBase
from requests.utils import get_environ_proxies

from airflow_provider_kibo_cancel import metrics
from airflow_provider_kibo_cancel._compat import AirflowNotFoundException, BaseHook, mask_secret
from airflow_provider_kibo_cancel.cancel_request import (
    CancelOrderRequest,
    CancelResult,
    parse_order_id,
)
from airflow_provider_kibo_cancel.connection import KiboConnectionSettings, missing_connection_error
from airflow_provider_kibo_cancel.exceptions import (
    KiboAuthenticationError,
    KiboError,
    KiboStoppedError,
    KiboTransportError,
    KiboValidationError,
)
from airflow_provider_kibo_cancel.hooks.auth import BearerToken, KiboOAuth, Token
from airflow_provider_kibo_cancel.hooks.decision import Answer, CallRecord, RetryLimits
from airflow_provider_kibo_cancel.hooks.diagnosis import connection_hint, probe_verdict
from airflow_provider_kibo_cancel.hooks.form import connection_form_widgets, ui_field_behaviour
from airflow_provider_kibo_cancel.hooks.readback import settle_cancel
from airflow_provider_kibo_cancel.hooks.responses import (
    error_from,
    order_from,
)
from airflow_provider_kibo_cancel.hooks.retry import RetryPolicy
from airflow_provider_kibo_cancel.hooks.tenant_budget import budget_for
from airflow_provider_kibo_cancel.hooks.transport import new_session, prepared_template, stoppable_adapter
from airflow_provider_kibo_cancel.provider_info import (
    CONN_TYPE,
    DEFAULT_CONN_ID,
    HOOK_NAME,
)
from airflow_provider_kibo_cancel.routes import CANCEL_PATH, ORDER_PATH

if TYPE_CHECKING:
    from airflow.sdk import Connection

#: Seconds before a connection Airflow says is not defined is asked for again.
CONNECTION_RECHECK_DELAY = 2.0

# Session creation is rare (once per hook) and quick; one lock for all hooks keeps __init__ untouched.
# functools.cached_property no longer locks from Python 3.12 on, so it cannot guard the session.
_SESSION_LOCK = threading.Lock()


def _post_through(hook: weakref.ref[KiboHook]) -> Callable[[str, dict[str, Any]], requests.Response]:
    """
    The OAuth request's sender for a hook's :class:`KiboOAuth`: the hook's transport, reached through a
    weak reference, so that hook -> session -> auth is no cycle and a dropped hook frees its session (and
    its keep-alive socket) at once.
    """

    def post(url: str, body: dict[str, Any]) -> requests.Response:
        owner = hook()
        if owner is None:
            raise KiboStoppedError("OAuth token request not sent: the KiboHook of this session is gone")
        return owner._http("POST", url, json=body)

    return post


class KiboHook(BaseHook):
    """
    Talk to Kibo's translated Order Management API through a ``kibo`` connection.

    One ``requests.Session`` and one OAuth token per hook, shared safely by threads. Every call follows one
    retry policy: timeouts, connection errors, 429 and 5xx are retried with exponential backoff and jitter,
    honouring ``Retry-After``; 400/403/404/405, redirects and TLS errors never are. A 401 refreshes the
    token once per call, a 403 once per token. Failures are shared by every thread of the hook: refused
    credentials fail every later call without another OAuth request, a 429 pauses them all, a route of
    Kibo that is down opens its circuit breaker (see :mod:`~airflow_provider_kibo_cancel.hooks.retry`),
    and :meth:`stop` ends every call at once, a request still connecting included.

    :param kibo_conn_id: the ``kibo`` connection to use.
    :param timeout: seconds for connecting and for reading one response (overrides extra ``timeout``).
    :param max_attempts: attempts per call, first one included (overrides extra ``max_attempts``).
    :param backoff_base: first backoff in seconds, doubled per attempt (overrides extra ``backoff_base``).
    :param max_retry_wait: longest wait between attempts, Retry-After included (extra ``max_retry_wait``).
    :param pool_size: HTTP connections kept open, at least the number of threads sharing the hook.
    :param requests_per_second: optional cap on this hook's request rate, across all its threads.
    :param max_sleep: the longest Retry-After this hook sleeps through (never more than ``max_retry_wait``);
        a longer one fails the call at once (``KiboRateLimitError`` with ``retry_after``), for a
        deferrable operator to spend in the triggerer.
    """

    conn_name_attr = "kibo_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = CONN_TYPE
    hook_name = HOOK_NAME

    _session: requests.Session | None = None  # built once by the session property, under a lock

    def __init__(
        self,
        kibo_conn_id: str = default_conn_name,
        *,
        timeout: float | None = None,
        max_attempts: int | None = None,
        backoff_base: float | None = None,
        max_retry_wait: float | None = None,
        pool_size: int = 16,
        requests_per_second: float | None = None,
        max_sleep: float | None = None,
    ) -> None:
        super().__init__()
        self._max_sleep = max_sleep
        self.kibo_conn_id = kibo_conn_id
        self._overrides = {
            "timeout": timeout,
            "max_attempts": max_attempts,
            "backoff_base": backoff_base,
            "max_retry_wait": max_retry_wait,
        }
        self._pool_size = pool_size
        # One policy per hook, so every thread shares its 429 pause, circuit breaker and stop.
        # It holds no reference to the hook: a dropped hook frees its session and sockets at once.
        self._retry = RetryPolicy(self.log, requests_per_second=requests_per_second)
        self._auth: KiboOAuth | None = None  # built with the session, under the same lock

    # --- connection -------------------------------------------------------------------------------------

    @cached_property
    def connection(self) -> Connection:
        try:
            return self.get_connection(self.kibo_conn_id)
        except AirflowNotFoundException:
            # Airflow reports a connection it could not read (a secrets backend or the API server that
            # timed out) as not defined: asked once more before the miss is taken as configuration.
            time.sleep(CONNECTION_RECHECK_DELAY)
        try:
            return self.get_connection(self.kibo_conn_id)
        except AirflowNotFoundException:
            # A missing connection is configuration, not a passing fault: fail without task retries.
            raise missing_connection_error(self.kibo_conn_id) from None

    @cached_property
    def settings(self) -> KiboConnectionSettings:
        """The connection, validated; raises KiboConfigurationError before anything is sent."""
        settings = KiboConnectionSettings.read(self.kibo_conn_id, self.connection, self._overrides)
        for secret in (settings.client_secret, settings.access_token):
            if secret:
                mask_secret(secret)
        if settings.insecure_urls:
            self.log.warning(
                "Connection %r sends the Shared Secret and bearer tokens over plain http to %s "
                "(extra 'allow_insecure_http' is set): anyone on the network path can read them",
                self.kibo_conn_id,
                ", ".join(settings.insecure_urls),
            )
        return settings

    @cached_property
    def _retry_limits(self) -> RetryLimits:
        settings = self.settings
        limit = settings.max_retry_wait
        return RetryLimits(
            max_attempts=settings.max_attempts,
            backoff_base=settings.backoff_base,
            max_retry_wait=limit,
            longest_sleep=limit if self._max_sleep is None else min(limit, self._max_sleep),
            budget=budget_for(settings, self.log, self.get_connection),  # the tenant's (issue 24)
        )

    @property
    def session(self) -> requests.Session:
        """The hook's one HTTP session, built by the first thread that asks; every other thread waits."""
        session = self._session
        if session is None:
            settings = self.settings  # outside the lock: reading the connection may be slow
            with _SESSION_LOCK:
                session = self._session
                if session is None:
                    session = self._session = self._new_session(settings)
        return session

    @property
    def auth(self) -> KiboOAuth:
        """The hook's OAuth token (see :class:`~.auth.KiboOAuth`), built with its session."""
        self.session  # noqa: B018 - builds the session, and with it the auth, on first use
        assert self._auth is not None  # set by _new_session, before the session is published
        return self._auth

    @property
    def _token(self) -> Token | None:
        """The token fetched last, for tests and debuggers (never shown in a repr)."""
        return self._auth.current if self._auth is not None else None

    def _new_session(self, settings: KiboConnectionSettings) -> requests.Session:
        auth = KiboOAuth(
            settings,
            policy=self._retry,
            limits=self._retry_limits,
            post=_post_through(weakref.ref(self)),
            log=self.log,
        )
        # Pool as wide as the threads that share this hook, so no worker opens a throwaway connection;
        # a connection made while the hook is being stopped carries nothing.
        session = new_session(settings.headers(), stoppable_adapter(self._retry.gate, self._pool_size), auth)
        self._auth = auth
        return session

    @cached_property
    def _proxies(self) -> dict[str, dict[str, str]]:
        """Proxies from the environment (HTTPS_PROXY, NO_PROXY, ...) for each URL called, read once."""
        settings = self.settings
        return {url: get_environ_proxies(url) for url in (settings.base_url, settings.auth_url)}

    def get_conn(self) -> requests.Session:
        """
        The hook's session, its Kibo headers and OAuth token attached. It belongs to the hook: keep the
        hook while using it (a session whose hook is gone fetches no token and says so).
        """
        return self.session

    # --- public API -------------------------------------------------------------------------------------

    def cancel_order(
        self, order_id: Any, disposition_reason: Any, disposition_other_reason: Any = None
    ) -> dict[str, Any]:
        """
        Cancel a whole order and return it (the Get Order shape, every field kept).

        Input is validated first and nothing is sent when it fails. An order found canceled already
        (a 409, or a retry after an attempt that may have reached Kibo) is read back and returned.
        """
        request = CancelOrderRequest.from_raw(order_id, disposition_reason, disposition_other_reason)
        return self.cancel(request).order

    def cancel(self, request: CancelOrderRequest, *, warn_unpublished_reason: bool = True) -> CancelResult:
        """
        Send a validated cancel; the result tells whether the order was canceled by an earlier call.

        Any 2xx settles the order as canceled by this call: when its body is not the order, the order is
        read back. A 409, or a failure after an attempt that may have been applied, is settled by
        reading the order back too. ``warn_unpublished_reason=False`` leaves the warning about a reason
        Kibo does not publish to the caller (a bulk run warns once, with the count).
        """
        if warn_unpublished_reason and not request.is_published_reason:
            self.log.warning(
                "disposition_reason %r is not one Kibo publishes; sending it as given",
                request.disposition_reason,
            )
        body = request.body(self.settings.order_id_field)
        return settle_cancel(
            lambda: self._call("POST", CANCEL_PATH, route="cancel", order_id=request.order_id, json=body),
            self.get_order,
            request.order_id,
            self.log,
        )

    def authenticate(self) -> None:
        """
        Obtain the OAuth token now (a no-op with a pre-issued token). A bulk run calls this before it
        dispatches anything, so refused credentials cost one OAuth request and no cancel.
        """
        self.auth.token()

    @property
    def credentials_refused(self) -> bool:
        """True once Kibo refused this hook's application key or shared secret (final for the hook)."""
        return self._auth is not None and self._auth.credentials_refused

    def stop(self) -> None:
        """
        Stop every call of this hook, in every thread, at once and for good: waits end, and no further
        request is sent (calls raise :class:`KiboStoppedError`). Requests already on the wire finish.
        For a task's timeout, kill or interrupt.
        """
        self._retry.gate.stop()

    @property
    def stopped(self) -> bool:
        return self._retry.gate.stopped

    @property
    def circuit_open(self) -> bool:
        """True while the circuit breaker holds calls back because Kibo is evidently down."""
        return self._retry.circuit_open("cancel", "oauth")

    @property
    def longest_sleep(self) -> float:
        """The longest Kibo-requested wait this hook sleeps through; longer ones fail at once."""
        return self._retry_limits.longest_sleep

    def rate_limit_wait(self) -> float:
        """Seconds until Kibo accepts calls again after a 429 (0 when no pause is in force)."""
        return self._retry.gate.paused_for()

    def get_order(self, order_id: Any) -> dict[str, Any]:
        """Read an order (``GET /api/v2/order/{orderId}``)."""
        try:
            order_id = parse_order_id(order_id)
        except ValueError as exc:
            raise KiboValidationError([str(exc)]) from None
        answer = self._call("GET", ORDER_PATH.format(order_id=order_id), route="get_order", order_id=order_id)
        return order_from(answer.response, order_id)

    def describe_cancel(self, request: CancelOrderRequest) -> dict[str, Any]:
        """The request :meth:`cancel` would send, without secrets (for dry runs)."""
        return {
            "method": "POST",
            "url": self.settings.base_url + CANCEL_PATH,
            "headers": {**self.settings.headers(), "Content-Type": "application/json"},
            "json": request.body(self.settings.order_id_field),
        }

    def test_connection(self) -> tuple[bool, str]:
        """
        Prove the credentials and the tenant with a token and a read of order 1; no order is changed.
        Succeeds only on an answer that is Kibo's: the order, or a 404 with an error body in Kibo's shape.
        """
        url_path = ORDER_PATH.format(order_id=1)
        try:
            settings = self.settings
            token = self.auth.token(max_attempts=1)
            response = self._retry.run(
                lambda: self._http("GET", settings.base_url + url_path, json=None, auth=BearerToken(token)),
                limits=self._retry_limits,
                what=f"GET {url_path}",
                route="get_order",
                order_id=None,
                max_attempts=1,
            ).response
        except KiboTransportError as exc:
            return False, f"Kibo is unreachable: {exc}"
        except KiboError as exc:
            return False, str(exc)
        return probe_verdict(response, settings, url_path)

    # --- connection form (Airflow 3.0/3.1 only; 3.2+ reads provider_info's conn-fields) ----------------

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        return connection_form_widgets()

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return ui_field_behaviour()

    # --- internals --------------------------------------------------------------------------------------

    def _http(
        self, method: str, url: str, *, json: dict[str, Any] | None, auth: AuthBase | None = None
    ) -> requests.Response:
        """One HTTP exchange over the hook's session, always with a timeout, never following redirects."""
        session = self.session
        prepared = prepared_template(method, url, tuple(session.headers.items())).copy()
        if json is not None:
            prepared.prepare_body(data=None, files=None, json=json)
        if auth is not None:
            prepared.prepare_auth(auth)
        origin = self.settings.auth_url if url == self.settings.auth_url else self.settings.base_url
        timeout = (self.settings.timeout, self.settings.timeout)
        # A redirected POST would carry the shared secret or the cancel to another host: never follow.
        response = session.send(
            prepared, timeout=timeout, proxies=self._proxies[origin], allow_redirects=False
        )
        metrics.request_duration(method, url, response.elapsed)
        return response

    def _call(
        self,
        method: str,
        path: str,
        *,
        route: str,
        order_id: int | None,
        json: dict[str, Any] | None = None,
        max_attempts: int | None = None,
    ) -> Answer:
        """
        One API call under the retry policy; raise the KiboError its final answer means. A 401 gets one
        fresh token for this call; a 403 one per token (Kibo's own clients do both: a token issued before
        a permission change is refused with 403), see :meth:`.KiboOAuth.should_refresh`.
        """
        auth = self.auth
        url = self.settings.base_url + path
        what = f"{method} {path}"
        record = CallRecord()
        stale: str | None = None
        after_403 = False
        for refreshed in (False, True):
            try:
                token = auth.token(stale=stale, max_attempts=max_attempts, after_403=after_403)
            except KiboError as exc:
                # No token, so this call's request was not sent (again): whatever the token request did
                # (a timeout, say), the cancel was not applied by it.
                # A refusal of the credentials says all there is; a failed token request adds what it cost.
                plain = record.sent or isinstance(exc, KiboAuthenticationError)
                raise exc.replace(
                    exc.message if plain else f"{exc.message}; {what} was not sent",
                    order_id=order_id,
                    sent=record.sent,
                    may_have_applied=record.may_have_applied,
                ) from None

            bearer = BearerToken(token)  # every attempt of this round carries the token decided on

            def send(bearer: AuthBase = bearer) -> requests.Response:
                return self._http(method, url, json=json, auth=bearer)

            try:
                answer = self._retry.run(
                    send,
                    limits=self._retry_limits,
                    what=what,
                    route=route,
                    order_id=order_id,
                    max_attempts=max_attempts,
                )
            except KiboError as exc:
                if not record.sent:
                    raise
                raise exc.replace(
                    sent=True, may_have_applied=exc.may_have_applied or record.may_have_applied
                ) from None
            record = record.merged(answer.record)
            status = answer.response.status_code
            if not refreshed and auth.should_refresh(status, token):
                self.log.info("Kibo answered %d to %s; refreshing the token once", status, what)
                stale, after_403 = token, status == 403
                continue
            if status >= 300:
                raise error_from(
                    answer.response,
                    f"Kibo {what} failed",
                    order_id=order_id,
                    may_have_applied=record.may_have_applied,
                    hint=connection_hint(
                        self.settings, status, answer.response, refreshable=auth.refreshable
                    ),
                )
            return Answer(answer.response, record)
        raise AssertionError("unreachable")  # pragma: no cover
