"""KiboHook: the OAuth token, the retry policy and the calls to Kibo's translated Order API."""

from __future__ import annotations

import copy
import os
import threading
import time
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Any

import requests
from requests.adapters import HTTPAdapter
from requests.utils import get_environ_proxies

from airflow_provider_kibo_cancel import metrics
from airflow_provider_kibo_cancel._compat import AirflowNotFoundException, BaseHook, mask_secret
from airflow_provider_kibo_cancel.exceptions import (
    KiboAuthenticationError,
    KiboConfigurationError,
    KiboConflictError,
    KiboError,
    KiboResponseError,
    KiboTransportError,
    KiboValidationError,
)
from airflow_provider_kibo_cancel.hooks.oauth import (
    FALLBACK_TOKEN_LIFETIME,
    answer_shape,
    describe_expires_in,
    mask_oauth_secrets,
    token_lifetime,
)
from airflow_provider_kibo_cancel.hooks.responses import (
    KIBO_ERROR_KEYS,
    correlation_id,
    error_from,
    excerpt,
    order_from,
)
from airflow_provider_kibo_cancel.hooks.retry import RetryLimits, RetryPolicy
from airflow_provider_kibo_cancel.models import (
    CANCEL_PATH,
    CANCELED_STATUS,
    ORDER_PATH,
    CancelOrderRequest,
    CancelResult,
    KiboConnectionSettings,
    parse_order_id,
)
from airflow_provider_kibo_cancel.provider_info import (
    CONN_TYPE,
    DEFAULT_CONN_ID,
    HOOK_NAME,
)

if TYPE_CHECKING:
    from airflow.sdk import Connection

# Session creation is rare (once per hook) and quick; one lock for all hooks keeps __init__ untouched.
# functools.cached_property no longer locks from Python 3.12 on, so it cannot guard the session.
_SESSION_LOCK = threading.Lock()


@lru_cache(maxsize=256)
def _prepared_template(
    method: str, url: str, headers: tuple[tuple[str, str], ...]
) -> requests.PreparedRequest:
    """
    A prepared request to copy for each call. ``Session.request`` would parse the URL, merge cookie jars
    and settings every time: about 0.15 ms, a tenth of a request's CPU in a bulk run.
    """
    return requests.Request(method, url, headers=dict(headers)).prepare()


class _Token:
    """An OAuth access token and when to stop using it."""

    def __init__(self, value: str, refresh_at: float) -> None:
        self.value = value
        self.refresh_at = refresh_at

    def fresh(self) -> bool:
        return time.monotonic() < self.refresh_at

    def __repr__(self) -> str:
        return f"_Token(value='***', refresh_at={self.refresh_at!r})"


class KiboHook(BaseHook):
    """
    Talk to Kibo's translated Order Management API through a ``kibo`` connection.

    One ``requests.Session`` and one OAuth token per hook, shared safely by threads. Every call follows one
    retry policy: timeouts, connection errors, 429 and 5xx are retried with exponential backoff and jitter,
    honouring ``Retry-After``; 400/403/404/405, redirects and TLS errors never are. A 401 refreshes the
    token once. Failures are shared by every thread of the hook: refused credentials fail every later call
    without another OAuth request, a 429 pauses them all, a Kibo that is down opens a circuit breaker
    (see :mod:`~airflow_provider_kibo_cancel.hooks.retry`), and :meth:`stop` ends every call at once.

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
        self._token_lock = threading.Lock()
        self._token: _Token | None = None
        # Refused credentials are final for this hook: every later call fails with the same error.
        self._credentials_refused: KiboAuthenticationError | None = None

    # --- connection -------------------------------------------------------------------------------------

    @cached_property
    def connection(self) -> Connection:
        try:
            return self.get_connection(self.kibo_conn_id)
        except AirflowNotFoundException:
            # A missing connection is configuration, not a passing fault: fail without task retries.
            raise KiboConfigurationError(
                f"The Kibo connection {self.kibo_conn_id!r} does not exist; create it (Admin -> "
                f"Connections, `airflow connections add`, or AIRFLOW_CONN_{self.kibo_conn_id.upper()}) "
                "or set kibo_conn_id to an existing one"
            ) from None

    @cached_property
    def settings(self) -> KiboConnectionSettings:
        """The connection, validated; raises KiboConfigurationError before anything is sent."""
        conn = self.connection
        settings = KiboConnectionSettings.from_connection(
            self.kibo_conn_id,
            host=conn.host,
            login=conn.login,
            password=conn.password,
            extra=conn.extra_dejson,
            overrides=self._overrides,
        )
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

    def _new_session(self, settings: KiboConnectionSettings) -> requests.Session:
        session = requests.Session()
        # Pool as wide as the threads that share this hook, so no worker opens a throwaway connection.
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=self._pool_size, max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.headers.update(settings.headers())
        # requests reads proxy and CA-bundle variables from the environment on every request (~1 ms of
        # CPU each, most of a request's cost); read them once per hook instead. No netrc either: the
        # Authorization header is ours alone.
        session.trust_env = False
        session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        return session

    @cached_property
    def _proxies(self) -> dict[str, dict[str, str]]:
        """Proxies from the environment (HTTPS_PROXY, NO_PROXY, ...) for each URL called, read once."""
        settings = self.settings
        return {url: get_environ_proxies(url) for url in (settings.base_url, settings.auth_url)}

    def get_conn(self) -> requests.Session:
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

        ``warn_unpublished_reason=False`` leaves the warning about a reason Kibo does not publish to the
        caller (a bulk run warns once, with the count, instead of once per order).
        """
        if warn_unpublished_reason and not request.is_published_reason:
            self.log.warning(
                "disposition_reason %r is not one Kibo publishes; sending it as given",
                request.disposition_reason,
            )
        try:
            response = self._call("POST", CANCEL_PATH, order_id=request.order_id, json=request.body())
        except KiboError as exc:
            if isinstance(exc, KiboConflictError) or exc.may_have_applied:
                order = self._read_back_canceled(request.order_id, exc)
                # After an attempt that may have landed, the cancel was most likely ours.
                return CancelResult(order, already_canceled=not exc.may_have_applied)
            raise
        return CancelResult(order_from(response, request.order_id), already_canceled=False)

    def authenticate(self) -> None:
        """
        Obtain the OAuth token now (a no-op with a pre-issued token). A bulk run calls this before it
        dispatches anything, so refused credentials cost one OAuth request and no cancel.
        """
        self._access_token()

    @property
    def credentials_refused(self) -> bool:
        """True once Kibo refused this hook's application key or shared secret (final for the hook)."""
        return self._credentials_refused is not None

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
        return self._retry.breaker.is_open

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
        response = self._call("GET", ORDER_PATH.format(order_id=order_id), order_id=order_id)
        return order_from(response, order_id)

    def describe_cancel(self, request: CancelOrderRequest) -> dict[str, Any]:
        """The request :meth:`cancel` would send, without secrets (for dry runs)."""
        return {
            "method": "POST",
            "url": self.settings.base_url + CANCEL_PATH,
            "headers": {**self.settings.headers(), "Content-Type": "application/json"},
            "json": request.body(),
        }

    def test_connection(self) -> tuple[bool, str]:
        """
        Prove the credentials and the tenant with a token and a read of order 1; no order is changed.
        Succeeds only on an answer that is Kibo's: the order, or a 404 with an error body in Kibo's shape.
        """
        url_path = ORDER_PATH.format(order_id=1)
        try:
            settings = self.settings
            token = self._access_token(max_attempts=1)
            response, _ = self._retry.run(
                lambda: self._http("GET", settings.base_url + url_path, json=None, token=token),
                limits=self._retry_limits,
                what=f"GET {url_path}",
                order_id=None,
                max_attempts=1,
            )
        except KiboTransportError as exc:
            return False, f"Kibo is unreachable: {exc}"
        except KiboError as exc:
            return False, str(exc)
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        if status == 200 and isinstance(body, dict) and ("orderID" in body or "orderId" in body):
            pass
        elif status == 404 and isinstance(body, dict) and KIBO_ERROR_KEYS & body.keys():
            pass  # authenticated and authorised for the tenant: order 1 simply does not exist
        elif status >= 300 and status != 404:
            error = error_from(response, f"Kibo GET {url_path} failed", order_id=None)
            if status == 401:
                return False, f"Kibo refused the token for tenant {settings.tenant_id}: {error}"
            if status == 403:
                return False, f"The credentials are not allowed for this tenant or site: {error}"
            return False, str(error)
        else:
            content_type = response.headers.get("Content-Type", "no content type")
            return False, (
                f"{settings.base_url} does not answer like Kibo: GET {url_path} gave HTTP {status} "
                f"({content_type}): {excerpt(response)!r}. Check the connection's host and tenant."
            )
        return True, (
            f"Connected to Kibo tenant {settings.tenant_id} ({settings.environment}) at {settings.base_url}"
        )

    # --- connection form (Airflow 3.0/3.1 only; 3.2+ reads provider_info's conn-fields) ----------------

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        from airflow_provider_kibo_cancel.hooks.form import connection_form_widgets

        return connection_form_widgets()

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        from airflow_provider_kibo_cancel.hooks.form import ui_field_behaviour

        return ui_field_behaviour()

    # --- internals --------------------------------------------------------------------------------------

    def _read_back_canceled(self, order_id: int, cause: KiboError) -> dict[str, Any]:
        """Resolve a cancel that may have been applied before: succeed if the order reads CANCELED."""
        try:
            order = self.get_order(order_id)
        except KiboError as read_error:
            # The cancel's own error stays the one reported; the read-back adds why it could not settle it.
            cause.message += f"; reading the order back to settle it failed too: {read_error.message}"
            cause.args = (cause._render(),)
            if read_error.retryable:
                cause.retryable = True  # undecided: a later (task) retry may settle it
            cause.rate_limited = cause.rate_limited or read_error.rate_limited
            raise cause from None
        status = str(order.get("orderStatus") or order.get("status") or "")
        if status.upper() != CANCELED_STATUS:
            raise cause
        self.log.debug("Order %s reads CANCELED after %s", order_id, cause)
        return order

    def _access_token(self, *, stale: str | None = None, max_attempts: int | None = None) -> str:
        """The current token; a new one when it is near expiry or is ``stale`` (Kibo answered 401)."""
        settings = self.settings
        if settings.access_token and not settings.client_id:
            return settings.access_token
        token = self._token
        if token is not None and token.fresh() and token.value != stale:
            return token.value  # the path every bulk worker takes: no lock
        with self._token_lock:
            if self._credentials_refused is not None:
                # One OAuth request per hook, not one per order; a copy, since threads raise it at once.
                raise copy.copy(self._credentials_refused)
            token = self._token  # another thread may have refreshed it while this one waited
            if token is None or not token.fresh() or token.value == stale:
                metrics.token_fetch()
                try:
                    token = self._token = self._fetch_token(max_attempts)
                except KiboAuthenticationError as exc:
                    self._credentials_refused = copy.copy(exc)
                    raise
            return token.value

    def _fetch_token(self, max_attempts: int | None) -> _Token:
        settings = self.settings
        credentials = {
            "client_id": settings.client_id,
            "client_secret": settings.client_secret,
            "grant_type": "client_credentials",
        }
        response, _ = self._retry.run(
            lambda: self._http("POST", settings.auth_url, json=credentials),
            limits=self._retry_limits,
            what="OAuth token request",
            order_id=None,
            max_attempts=max_attempts,
        )
        try:
            payload = response.json()
        except (ValueError, RecursionError):
            payload = None
        mask_oauth_secrets(payload)  # first thing after parsing, whatever the status
        if response.status_code >= 300:
            error = error_from(response, "Kibo OAuth token request failed", order_id=None)
            # Kibo's own error fields are kept; a raw excerpt of an OAuth body never is, nor
            # additionalErrorData, which could echo the request (and so the shared secret).
            message = payload.get("message") if isinstance(payload, dict) else None
            error.additional_error_data = None
            error.replace_kibo_message(message if isinstance(message, str) else None)
            if response.status_code in (400, 401, 403):
                raise KiboAuthenticationError(
                    "Kibo refused the Application Key / Shared Secret",
                    status=error.status,
                    error_code=error.error_code,
                    kibo_message=error.kibo_message,
                    correlation_id=error.correlation_id,
                    items=error.items,  # Kibo's own reasons; additionalErrorData could echo the request
                )
            raise error
        value = payload.get("access_token") if isinstance(payload, dict) else None
        if not isinstance(value, str) or not value.strip():
            # The body is never quoted: an answer we cannot read may still hold a live token.
            raise KiboResponseError(
                "Kibo's OAuth endpoint answered without a usable access_token "
                f"({answer_shape(response, payload)}; the body is not shown as it may hold credentials)",
                status=response.status_code,
                correlation_id=correlation_id(response, payload),
            )
        lifetime = token_lifetime(payload.get("expires_in"))
        if lifetime is None:
            self.log.warning(
                "Kibo's OAuth answer has no usable expires_in (%s); using the token for %.0f s",
                describe_expires_in(payload.get("expires_in")),
                FALLBACK_TOKEN_LIFETIME,
            )
            lifetime = FALLBACK_TOKEN_LIFETIME
        # Refresh ahead of expiry so a long bulk run never sends a token that dies in flight.
        return _Token(value, time.monotonic() + lifetime - min(300.0, lifetime / 10))

    def _http(
        self, method: str, url: str, *, json: dict[str, Any] | None, token: str | None = None
    ) -> requests.Response:
        """One HTTP exchange over the hook's session, always with a timeout, never following redirects."""
        session = self.session
        prepared = _prepared_template(method, url, tuple(session.headers.items())).copy()
        if json is not None:
            prepared.prepare_body(data=None, files=None, json=json)
        if token is not None:
            prepared.headers["Authorization"] = f"Bearer {token}"
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
        order_id: int | None,
        json: dict[str, Any] | None = None,
        max_attempts: int | None = None,
    ) -> requests.Response:
        """One API call under the retry policy, refreshing the token once on a 401; raise on errors."""
        url = self.settings.base_url + path
        may_have_applied = False
        sent = False
        token: str | None = None
        for refreshed in (False, True):
            try:
                token = self._access_token(stale=token, max_attempts=max_attempts)
            except KiboError as exc:
                # No token, so this call's request was not sent (again): the order is not attempted.
                exc.sent, exc.may_have_applied = sent, exc.may_have_applied or may_have_applied
                if exc.order_id is None:
                    exc.order_id = order_id
                    exc.args = (exc._render(),)
                raise
            try:

                def send(token: str = token) -> requests.Response:
                    return self._http(method, url, json=json, token=token)

                response, applied = self._retry.run(
                    send,
                    limits=self._retry_limits,
                    what=f"{method} {path}",
                    order_id=order_id,
                    max_attempts=max_attempts,
                )
            except KiboError as exc:
                exc.may_have_applied = exc.may_have_applied or may_have_applied
                exc.sent = exc.sent or sent
                if exc.order_id is None:
                    exc.order_id = order_id
                    exc.args = (exc._render(),)
                raise
            sent = True
            may_have_applied = may_have_applied or applied
            can_refresh = not refreshed and self.settings.client_id is not None
            if response.status_code == 401 and can_refresh:
                self.log.info("Kibo answered 401 to %s %s; refreshing the token once", method, path)
                continue
            if response.status_code >= 300:
                error = error_from(response, f"Kibo {method} {path} failed", order_id=order_id)
                error.may_have_applied = may_have_applied
                raise error
            return response
        raise AssertionError("unreachable")  # pragma: no cover
