"""KiboHook: the OAuth token, the retry policy and the calls to Kibo's translated Order API."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Any

import requests
from requests.adapters import HTTPAdapter
from requests.utils import get_environ_proxies

from airflow_provider_kibo_cancel._compat import BaseHook, mask_secret
from airflow_provider_kibo_cancel.exceptions import (
    KiboApiError,
    KiboAuthenticationError,
    KiboBadRequestError,
    KiboConflictError,
    KiboError,
    KiboForbiddenError,
    KiboNotFoundError,
    KiboRateLimitError,
    KiboResponseError,
    KiboServerError,
    KiboTransportError,
    KiboValidationError,
)
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
    CONN_FIELDS,
    CONN_TYPE,
    DEFAULT_CONN_ID,
    HOOK_NAME,
    UI_FIELD_BEHAVIOUR,
)

if TYPE_CHECKING:
    from airflow.sdk import Connection

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
_ERROR_CLASSES: dict[int, type[KiboApiError]] = {
    400: KiboBadRequestError,
    401: KiboAuthenticationError,
    403: KiboForbiddenError,
    404: KiboNotFoundError,
    405: KiboBadRequestError,
    409: KiboConflictError,
    429: KiboRateLimitError,
}
_EXCERPT = 200


def _retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


def _correlation_id(response: requests.Response, body: Any) -> str | None:
    header = response.headers.get("x-vol-correlation")
    if header:
        return header
    return body.get("correlationId") if isinstance(body, dict) else None


@lru_cache(maxsize=256)
def _prepared_template(
    method: str, url: str, headers: tuple[tuple[str, str], ...]
) -> requests.PreparedRequest:
    """
    A prepared request to copy for each call. ``Session.request`` would parse the URL, merge cookie jars
    and settings every time: about 0.15 ms, a tenth of a request's CPU in a bulk run.
    """
    return requests.Request(method, url, headers=dict(headers)).prepare()


def _excerpt(response: requests.Response) -> str:
    text = " ".join(response.text[:_EXCERPT].split())
    return text + ("..." if len(response.text) > _EXCERPT else "")


class _Gate:
    """
    Shared by every thread using one hook: a 429 pauses them all until Retry-After has passed, and an
    optional requests-per-second cap spaces their requests out.
    """

    def __init__(self, requests_per_second: float | None = None) -> None:
        self._lock = threading.Lock()
        self._paused_until = 0.0
        self._interval = 1.0 / requests_per_second if requests_per_second else 0.0
        self._next_slot = 0.0

    def pause(self, seconds: float) -> None:
        with self._lock:
            self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    def wait(self) -> None:
        while (delay := self._paused_until - time.monotonic()) > 0:
            time.sleep(delay)
        if self._interval:
            with self._lock:
                now = time.monotonic()
                slot = max(now, self._next_slot)
                self._next_slot = slot + self._interval
            if slot > now:
                time.sleep(slot - now)


class _Token:
    """An OAuth access token and when to stop using it."""

    def __init__(self, value: str, refresh_at: float) -> None:
        self.value = value
        self.refresh_at = refresh_at

    def fresh(self) -> bool:
        return time.monotonic() < self.refresh_at


class KiboHook(BaseHook):
    """
    Talk to Kibo's translated Order Management API through a ``kibo`` connection.

    One ``requests.Session`` and one OAuth token per hook, shared safely by threads. Every call follows one
    retry policy: timeouts, connection errors, 429 and 5xx are retried with exponential backoff and jitter,
    honouring ``Retry-After``; 400/403/404/405 never are. A 401 refreshes the token once.

    :param kibo_conn_id: the ``kibo`` connection to use.
    :param timeout: seconds for connecting and for reading one response (overrides extra ``timeout``).
    :param max_attempts: attempts per call, first one included (overrides extra ``max_attempts``).
    :param backoff_base: first backoff in seconds, doubled per attempt (overrides extra ``backoff_base``).
    :param max_retry_wait: longest wait between attempts, Retry-After included (extra ``max_retry_wait``).
    :param pool_size: HTTP connections kept open, at least the number of threads sharing the hook.
    :param requests_per_second: optional cap on this hook's request rate, across all its threads.
    """

    conn_name_attr = "kibo_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = CONN_TYPE
    hook_name = HOOK_NAME

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
    ) -> None:
        super().__init__()
        self.kibo_conn_id = kibo_conn_id
        self._overrides = {
            "timeout": timeout,
            "max_attempts": max_attempts,
            "backoff_base": backoff_base,
            "max_retry_wait": max_retry_wait,
        }
        self._pool_size = pool_size
        self._gate = _Gate(requests_per_second)
        self._token_lock = threading.Lock()
        self._token: _Token | None = None

    # --- connection -------------------------------------------------------------------------------------

    @cached_property
    def connection(self) -> Connection:
        return self.get_connection(self.kibo_conn_id)

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
        return settings

    @cached_property
    def session(self) -> requests.Session:
        settings = self.settings
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

    def cancel(self, request: CancelOrderRequest) -> CancelResult:
        """Send a validated cancel; the result tells whether the order was canceled by an earlier call."""
        if not request.is_published_reason:
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
        return CancelResult(self._order_from(response, request.order_id), already_canceled=False)

    def get_order(self, order_id: Any) -> dict[str, Any]:
        """Read an order (``GET /api/v2/order/{orderId}``)."""
        try:
            order_id = parse_order_id(order_id)
        except ValueError as exc:
            raise KiboValidationError([str(exc)]) from None
        response = self._call("GET", ORDER_PATH.format(order_id=order_id), order_id=order_id)
        return self._order_from(response, order_id)

    def describe_cancel(self, request: CancelOrderRequest) -> dict[str, Any]:
        """The request :meth:`cancel` would send, without secrets (for dry runs)."""
        return {
            "method": "POST",
            "url": self.settings.base_url + CANCEL_PATH,
            "headers": {**self.settings.headers(), "Content-Type": "application/json"},
            "json": request.body(),
        }

    def test_connection(self) -> tuple[bool, str]:
        """Prove the credentials and the tenant with a token and a read; no order is changed."""
        try:
            settings = self.settings
            self._call("GET", ORDER_PATH.format(order_id=1), order_id=1, max_attempts=1)
        except KiboNotFoundError:
            pass  # authenticated and authorised for the tenant: order 1 simply does not exist
        except KiboAuthenticationError as exc:
            return False, f"Kibo rejected the credentials: {exc}"
        except KiboForbiddenError as exc:
            return False, f"The credentials are not allowed for this tenant or site: {exc}"
        except KiboTransportError as exc:
            return False, f"Kibo is unreachable: {exc}"
        except KiboError as exc:
            return False, str(exc)
        return True, (
            f"Connected to Kibo tenant {settings.tenant_id} ({settings.environment}) at {settings.base_url}"
        )

    # --- connection form (Airflow 3.0/3.1 only; 3.2+ reads provider_info's conn-fields) ----------------

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        from wtforms import PasswordField, StringField
        from wtforms.validators import Optional, Regexp

        widgets: dict[str, Any] = {}
        for name, field in CONN_FIELDS.items():
            schema = field["schema"]
            validators: list[Any] = [Optional()]
            if "pattern" in schema:
                validators.append(Regexp(schema["pattern"], message=field["description"]))
            field_class = PasswordField if schema.get("format") == "password" else StringField
            widgets[name] = field_class(
                field["label"],
                description=field["description"],
                validators=validators,
                default=schema.get("default"),
            )
        return widgets

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": UI_FIELD_BEHAVIOUR["hidden-fields"],
            "relabeling": UI_FIELD_BEHAVIOUR["relabeling"],
            "placeholders": UI_FIELD_BEHAVIOUR["placeholders"],
        }

    # --- internals --------------------------------------------------------------------------------------

    def _read_back_canceled(self, order_id: int, cause: KiboError) -> dict[str, Any]:
        """Resolve a cancel that may have been applied before: succeed if the order reads CANCELED."""
        try:
            order = self.get_order(order_id)
        except KiboError as read_error:
            if read_error.retryable:
                raise read_error from cause  # undecided: a later (task) retry may settle it
            raise cause from read_error
        status = str(order.get("orderStatus") or order.get("status") or "")
        if status.upper() != CANCELED_STATUS:
            raise cause
        self.log.info("Order %s is canceled already (%s); treating the cancel as done", order_id, cause)
        return order

    def _order_from(self, response: requests.Response, order_id: int) -> dict[str, Any]:
        try:
            order = response.json()
        except ValueError:
            order = None
        correlation = _correlation_id(response, order)
        if not isinstance(order, dict):
            raise KiboResponseError(
                f"Kibo answered with something that is not an order: {_excerpt(response)!r}",
                status=response.status_code,
                order_id=order_id,
                correlation_id=correlation,
            )
        returned = order.get("orderID", order.get("orderId", order.get("id")))
        if str(returned) != str(order_id):
            raise KiboResponseError(
                f"Kibo returned order {returned!r} instead of the order requested",
                status=response.status_code,
                order_id=order_id,
                correlation_id=correlation,
            )
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
            token = self._token  # another thread may have refreshed it while this one waited
            if token is None or not token.fresh() or token.value == stale:
                token = self._token = self._fetch_token(max_attempts)
            return token.value

    def _fetch_token(self, max_attempts: int | None) -> _Token:
        settings = self.settings
        credentials = {
            "client_id": settings.client_id,
            "client_secret": settings.client_secret,
            "grant_type": "client_credentials",
        }
        response, _ = self._send(
            lambda: self._http("POST", settings.auth_url, json=credentials),
            what="OAuth token request",
            order_id=None,
            max_attempts=max_attempts,
        )
        if response.status_code >= 400:
            error = self._error_from(response, "Kibo OAuth token request failed", order_id=None)
            if response.status_code in (400, 401, 403):
                raise KiboAuthenticationError(
                    "Kibo refused the Application Key / Shared Secret",
                    status=error.status,
                    error_code=error.error_code,
                    kibo_message=error.kibo_message,
                    correlation_id=error.correlation_id,
                )
            raise error
        try:
            payload = response.json()
            value = payload["access_token"]
            lifetime = float(payload.get("expires_in") or 3600)
        except (ValueError, KeyError, TypeError):
            raise KiboResponseError(
                f"Kibo's OAuth endpoint answered without an access_token: {_excerpt(response)!r}",
                status=response.status_code,
            ) from None
        mask_secret(value)
        if payload.get("refresh_token"):
            mask_secret(payload["refresh_token"])
        # Refresh ahead of expiry so a long bulk run never sends a token that dies in flight.
        return _Token(value, time.monotonic() + lifetime - min(300.0, lifetime / 10))

    def _http(
        self, method: str, url: str, *, json: dict[str, Any] | None, token: str | None = None
    ) -> requests.Response:
        """One HTTP exchange over the hook's session, always with a timeout."""
        session = self.session
        prepared = _prepared_template(method, url, tuple(session.headers.items())).copy()
        if json is not None:
            prepared.prepare_body(data=None, files=None, json=json)
        if token is not None:
            prepared.headers["Authorization"] = f"Bearer {token}"
        origin = self.settings.auth_url if url == self.settings.auth_url else self.settings.base_url
        timeout = (self.settings.timeout, self.settings.timeout)
        return session.send(prepared, timeout=timeout, proxies=self._proxies[origin])

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
        token: str | None = None
        for refreshed in (False, True):
            token = self._access_token(stale=token, max_attempts=max_attempts)

            def send(token: str = token) -> requests.Response:
                return self._http(method, url, json=json, token=token)

            try:
                response, applied = self._send(
                    send, what=f"{method} {path}", order_id=order_id, max_attempts=max_attempts
                )
            except KiboError as exc:
                exc.may_have_applied = exc.may_have_applied or may_have_applied
                raise
            may_have_applied = may_have_applied or applied
            can_refresh = not refreshed and self.settings.client_id is not None
            if response.status_code == 401 and can_refresh:
                self.log.info("Kibo answered 401 to %s %s; refreshing the token once", method, path)
                continue
            if response.status_code >= 400:
                error = self._error_from(response, f"Kibo {method} {path} failed", order_id=order_id)
                error.may_have_applied = may_have_applied
                raise error
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(
        self,
        send: Callable[[], requests.Response],
        *,
        what: str,
        order_id: int | None,
        max_attempts: int | None = None,
    ) -> tuple[requests.Response, bool]:
        """
        Apply the retry policy to one request.

        Returns the last response (any status that is not retried, or the last retried one) and whether
        an earlier attempt may have reached Kibo (it timed out, lost its connection or got a 5xx).
        """
        settings = self.settings
        attempts = max_attempts or settings.max_attempts
        may_have_applied = False
        for attempt in range(1, attempts + 1):
            self._gate.wait()
            retry_after: float | None = None
            try:
                response = send()
            except (requests.ConnectionError, requests.Timeout) as exc:
                # A connect timeout never reached Kibo; a read timeout or dropped connection may have.
                may_have_applied = may_have_applied or not isinstance(exc, requests.ConnectTimeout)
                if attempt == attempts:
                    error = KiboTransportError(
                        f"{what} failed after {attempts} attempt(s): {type(exc).__name__}: {exc}",
                        order_id=order_id,
                    )
                    error.may_have_applied = may_have_applied
                    raise error from None
                problem = f"{type(exc).__name__}"
            else:
                if response.status_code not in RETRYABLE_STATUSES or attempt == attempts:
                    return response, may_have_applied
                if response.status_code >= 500:
                    may_have_applied = True
                problem = f"HTTP {response.status_code}"
                if response.status_code == 429:
                    retry_after = _retry_after_seconds(response.headers.get("Retry-After"))
                    if retry_after is not None and retry_after > settings.max_retry_wait:
                        return response, may_have_applied  # longer than we may wait: fail now
            delay = self._backoff(attempt, retry_after)
            self.log.warning(
                "%s%s: %s on attempt %d of %d; retrying in %.1f s",
                what,
                f" for order {order_id}" if order_id else "",
                problem,
                attempt,
                attempts,
                delay,
            )
            if retry_after is not None:
                self._gate.pause(delay)  # every thread of this hook waits, not just this one
            else:
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        settings = self.settings
        if retry_after is not None:
            return min(retry_after, settings.max_retry_wait)
        ceiling = min(settings.backoff_base * 2.0 ** (attempt - 1), settings.max_retry_wait)
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # jitter, not cryptography

    def _error_from(self, response: requests.Response, message: str, *, order_id: int | None) -> KiboError:
        try:
            body = response.json()
        except ValueError:
            body = None
        fields = body if isinstance(body, dict) else {}
        status = response.status_code
        cls = _ERROR_CLASSES.get(status) or (KiboServerError if status >= 500 else KiboApiError)
        kibo_message = fields.get("message")
        if kibo_message is None and response.text and not isinstance(body, dict):
            kibo_message = _excerpt(response)
        if status == 429:
            retry_after = response.headers.get("Retry-After")
            message += f", rate limited (Retry-After {retry_after or 'not given'})"
        items = fields.get("items")
        return cls(
            message,
            status=status,
            error_code=fields.get("errorCode"),
            kibo_message=kibo_message,
            order_id=order_id,
            correlation_id=_correlation_id(response, body),
            # Kibo's own explanation of a 400 is often only here (one item per problem).
            items=items if isinstance(items, list) else [items] if items else None,
            additional_error_data=fields.get("additionalErrorData"),
        )
