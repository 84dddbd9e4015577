"""KiboHook: the OAuth token, the retry policy and the calls to Kibo's translated Order API."""

from __future__ import annotations

import os
import threading
import time
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Any

import requests
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
from airflow_provider_kibo_cancel.hooks.retry import Answer, CallRecord, RetryLimits, RetryPolicy
from airflow_provider_kibo_cancel.hooks.tenant_budget import budget_for
from airflow_provider_kibo_cancel.hooks.transport import stoppable_adapter
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
from airflow_provider_kibo_cancel.safety import token_problem

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
        self._token_lock = threading.Lock()
        self._token: _Token | None = None
        # Refused credentials are final for this hook: every later call fails with the same error.
        self._credentials_refused: KiboAuthenticationError | None = None
        # The token fetched because Kibo answered 403 to the one before: a 403 to it is a refusal.
        self._token_after_403: str | None = None

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

    def _new_session(self, settings: KiboConnectionSettings) -> requests.Session:
        session = requests.Session()
        # Pool as wide as the threads that share this hook, so no worker opens a throwaway connection;
        # a connection made while the hook is being stopped carries nothing.
        adapter = stoppable_adapter(self._retry.gate, self._pool_size)
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
        try:
            answer = self._call("POST", CANCEL_PATH, route="cancel", order_id=request.order_id, json=body)
        except KiboError as exc:
            if not (isinstance(exc, KiboConflictError) or exc.may_have_applied):
                raise
            # After an attempt that may have landed, a CANCELED order was most likely canceled by it.
            order = self._read_back_canceled(request.order_id, exc)
            return CancelResult(order, already_canceled=not exc.may_have_applied)
        try:
            order = order_from(answer.response, request.order_id)
        except KiboResponseError as exc:
            # Kibo answered 2xx, so the cancel was most likely applied: the order itself tells.
            applied = exc.replace(
                exc.message + "; Kibo answered the cancel with a 2xx, so it may have been applied",
                may_have_applied=True,
            )
            return CancelResult(self._read_back_canceled(request.order_id, applied), already_canceled=False)
        return CancelResult(order, already_canceled=False)

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
            token = self._access_token(max_attempts=1)
            response = self._retry.run(
                lambda: self._http("GET", settings.base_url + url_path, json=None, token=token),
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
            raise cause.replace(
                f"{cause.message}; reading the order back to settle it failed too: {read_error.message}",
                # Undecided: a later (task) retry may settle it.
                retryable=cause.retryable or read_error.retryable,
                rate_limited=cause.rate_limited or read_error.rate_limited,
            ) from None
        status = str(order.get("orderStatus") or order.get("status") or "")
        if status.upper() != CANCELED_STATUS:
            raise cause
        self.log.debug("Order %s reads CANCELED after %s", order_id, cause)
        return order

    def _access_token(
        self, *, stale: str | None = None, max_attempts: int | None = None, after_403: bool = False
    ) -> str:
        """
        The current token; a new one when it is near expiry or is ``stale`` (Kibo refused it with a 401,
        or with a 403 when ``after_403``, which marks the new token as fetched after a 403).
        """
        settings = self.settings
        if settings.access_token and not settings.client_id:
            return settings.access_token
        token = self._token
        if token is not None and token.fresh() and token.value != stale:
            return token.value  # the path every bulk worker takes: no lock
        with self._token_lock:
            if self._credentials_refused is not None:
                # One OAuth request per hook, not one per order; a copy, since threads raise it at once.
                raise self._credentials_refused.replace()
            token = self._token  # another thread may have refreshed it while this one waited
            if token is None or not token.fresh() or token.value == stale:
                metrics.token_fetch()
                try:
                    token = self._token = self._fetch_token(max_attempts)
                    if after_403:
                        self._token_after_403 = token.value
                except KiboAuthenticationError as exc:
                    self._credentials_refused = exc
                    raise
            return token.value

    def _fetch_token(self, max_attempts: int | None) -> _Token:
        settings = self.settings
        credentials = {
            "client_id": settings.client_id,
            "client_secret": settings.client_secret,
            "grant_type": "client_credentials",
        }
        response = self._retry.run(
            lambda: self._http("POST", settings.auth_url, json=credentials),
            limits=self._retry_limits,
            what="OAuth token request",
            route="oauth",
            order_id=None,
            max_attempts=max_attempts,
        ).response
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
            kibo_message = message if isinstance(message, str) else None
            if response.status_code in (400, 401, 403):
                raise KiboAuthenticationError(
                    "Kibo refused the Application Key / Shared Secret (login / password) of connection "
                    f"{self.kibo_conn_id!r}",
                    status=error.status,
                    error_code=error.error_code,
                    kibo_message=kibo_message,
                    correlation_id=error.correlation_id,
                    items=error.items,  # Kibo's own reasons; additionalErrorData could echo the request
                )
            raise error.replace(kibo_message=kibo_message, additional_error_data=None)
        value = payload.get("access_token") if isinstance(payload, dict) else None
        problem = token_problem(value) if isinstance(value, str) and value.strip() else None
        if not isinstance(value, str) or not value.strip() or problem:
            # The body is never quoted: an answer we cannot read may still hold a live token.
            raise KiboResponseError(
                "Kibo's OAuth endpoint answered without a usable access_token "
                f"({problem or answer_shape(response, payload)}; the body is not shown as it may hold "
                "credentials)",
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
        route: str,
        order_id: int | None,
        json: dict[str, Any] | None = None,
        max_attempts: int | None = None,
    ) -> Answer:
        """
        One API call under the retry policy; raise the KiboError its final answer means. A 401 gets one
        fresh token for this call; a 403 one per token (Kibo's own clients do both: a token issued before
        a permission change is refused with 403), see :meth:`_should_refresh`.
        """
        url = self.settings.base_url + path
        what = f"{method} {path}"
        record = CallRecord()
        stale: str | None = None
        after_403 = False
        for refreshed in (False, True):
            try:
                token = self._access_token(stale=stale, max_attempts=max_attempts, after_403=after_403)
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

            def send(token: str = token) -> requests.Response:
                return self._http(method, url, json=json, token=token)

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
            if not refreshed and self._should_refresh(status, token):
                self.log.info("Kibo answered %d to %s; refreshing the token once", status, what)
                stale, after_403 = token, status == 403
                continue
            if status >= 300:
                raise error_from(
                    answer.response,
                    f"Kibo {what} failed",
                    order_id=order_id,
                    may_have_applied=record.may_have_applied,
                    hint=self._hint(status, answer.response),
                )
            return Answer(answer.response, record)
        raise AssertionError("unreachable")  # pragma: no cover

    def _should_refresh(self, status: int, token: str) -> bool:
        """
        A 401 gets a new token once per call. A 403 gets one once per token: when the token it came with
        has been replaced meanwhile (another worker refreshed it), the call is repeated with the current
        one; when it is the token fetched after an earlier 403, the 403 is a refusal.
        """
        if self.settings.client_id is None or status not in (401, 403):
            return False
        if status == 401:
            return True
        with self._token_lock:
            current = self._token.value if self._token is not None else None
            return current != token or token != self._token_after_403

    def _hint(self, status: int, response: requests.Response) -> str | None:
        """What to change in the connection for an answer that points at it (401, 403, a misspelt field)."""
        conn = f"connection {self.kibo_conn_id!r}"
        if status == 401 and self.settings.client_id is None:
            return (
                f"Kibo refused the pre-issued access token (extra access_token) of {conn}; it cannot be "
                "refreshed: put a new one there, or set the Application Key and Shared Secret instead"
            )
        if status == 401:
            return (
                f"Kibo refused the token: check the Application Key (login) and Shared Secret (password) "
                f"of {conn}"
            )
        if status == 403:
            site = f" and site {self.settings.site_id}" if self.settings.site_id else ""
            return (
                f"Kibo refused tenant {self.settings.tenant_id}{site} for these credentials: check the "
                f"Tenant ID and Site ID (extras tenant_id, site_id) of {conn}, and the application's "
                "permissions in Kibo"
            )
        if status == 400 and "orderid" in response.text[:2000].lower():
            spelling = self.settings.order_id_field
            other = "orderID" if spelling == "orderId" else "orderId"
            return (
                f"Kibo's answer names the order id field, sent as {spelling!r}; if your tenant expects "
                f"{other!r}, set extra order_id_field to {other!r} in {conn}"
            )
        return None
